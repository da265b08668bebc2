"""`boxlite images ...`: the image cache from the command line.

    boxlite images ls [-q] [--json]       the local images, one row per name
    boxlite images ls --builtin [--json]  the built-in images (made from Debian packages) and whether built here
    boxlite images build [NAME...]        build built-in images now (all of them without NAME); cached after
    boxlite images pull REF...            pull from a registry (a progress bar per layer on a terminal)
    boxlite images load PATH...           an OCI layout directory, a `docker save` tarball or an OCI archive
    boxlite images rm REF...              drop names / delete images (refused while a box uses the image;
                                          the start templates made from it are discarded with it)
    boxlite images prune [-a]             delete unnamed (-a: all unused) images and unneeded blobs

Registry settings (mirrors, plain-http hosts, credentials) come from $BOXLITE_REGISTRY_MIRRORS,
$BOXLITE_INSECURE_REGISTRIES, $BOXLITE_REGISTRY_AUTH, $BOXLITE_IMAGE_REGISTRIES and HOME/registries.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TextIO

from boxlite._errors import BoxliteError, ConfigError
from boxlite._runtime import Boxlite
from boxlite.images import Image, LayerProgress
from boxlite.images._files import human_size, short_digest
from boxlite.images.reference import familiar_name

log = logging.getLogger("boxlite")

EXIT_BOXLITE = 125
RuntimeFactory = Callable[[argparse.Namespace], Boxlite]


def _info(message: str) -> None:
    log.info(message)


def _error(message: str) -> None:
    print(f"boxlite: {message}", file=sys.stderr, flush=True)


def _human_ago(ts: float) -> str:
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def _created(image: Image) -> float:
    try:
        return image.disk_path.stat().st_mtime
    except OSError:
        return 0.0


def _on_disk(image: Image) -> int:
    try:
        return image.disk_path.stat().st_blocks * 512
    except OSError:
        return 0


class LayerBars:
    """Progress bars, one line per layer, redrawn in place on a terminal (called from download threads)."""

    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.rows: dict[int, LayerProgress] = {}
        self.drawn = 0
        self.last_draw = 0.0
        self.lock = threading.Lock()

    def __call__(self, p: LayerProgress) -> None:
        with self.lock:
            self.rows[p.index] = p
            now = time.monotonic()
            if p.status == "downloading" and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            self._draw()

    def _draw(self) -> None:
        out = []
        if self.drawn:
            out.append(f"\x1b[{self.drawn}F")  # back to the first bar
        for index in sorted(self.rows):
            out.append("\x1b[2K" + self.row(self.rows[index]) + "\n")
        self.drawn = len(self.rows)
        self.stream.write("".join(out))
        self.stream.flush()

    @classmethod
    def row(cls, p: LayerProgress) -> str:
        fraction = p.done_bytes / p.total_bytes if p.total_bytes else 1.0
        if p.status in ("done", "cached"):
            fraction = 1.0
        filled = int(fraction * cls.WIDTH)
        bar = "=" * filled + (">" if filled < cls.WIDTH else "") + " " * max(0, cls.WIDTH - filled - 1)
        label = {
            "waiting": "waiting",
            "downloading": f"{human_size(p.done_bytes)}/{human_size(p.total_bytes)}",
            "done": f"downloaded {human_size(p.total_bytes)}",
            "cached": "already present",
            "failed": "failed",
        }.get(p.status, p.status)
        return f"{short_digest(p.digest)} [{bar}] {label}"


def cmd_ls(args: argparse.Namespace, runtime: Boxlite) -> int:
    if args.builtin:
        return _ls_builtin(args, runtime)
    rows = runtime.images.references()
    if args.json:
        print(json.dumps([
            {"reference": name, "digest": image.digest, "disk_bytes": image.disk_bytes,
             "size_on_disk": _on_disk(image), "created": datetime.fromtimestamp(_created(image)).isoformat()}
            for name, image in rows
        ], indent=2))
        return 0
    if args.quiet_ids:
        for digest in dict.fromkeys(image.digest for _, image in rows):
            print(digest)
        return 0
    table = [["REFERENCE", "DIGEST", "SIZE", "CREATED"]]
    for name, image in rows:
        shown = familiar_name(name) if not name.startswith("sha256:") else "<none>"
        table.append([shown, image.digest[:19], human_size(_on_disk(image)), _human_ago(_created(image))])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _ls_builtin(args: argparse.Namespace, runtime: Boxlite) -> int:
    catalog = runtime.images.builtin_images()
    if args.json:
        print(json.dumps([
            {"reference": spec.name, "description": spec.description, "packages": list(spec.packages),
             "digest": image.digest if image else None, "disk_bytes": image.disk_bytes if image else None}
            for spec, image in catalog
        ], indent=2))
        return 0
    if args.quiet_ids:
        for spec, _ in catalog:
            print(spec.name)
        return 0
    table = [["REFERENCE", "DIGEST", "SIZE", "DESCRIPTION"]]
    for spec, image in catalog:
        if image is None:
            table.append([spec.name, "(not built)", "", spec.description])
        else:
            table.append([spec.name, image.digest[:19], human_size(_on_disk(image)), spec.description])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_build(args: argparse.Namespace, runtime: Boxlite) -> int:
    names = args.names or runtime.images.builtin_names()
    failed = False
    for name in names:
        if name not in runtime.images.builtin_names():
            _error(f"{name} is not a built-in image (`boxlite images ls --builtin` lists them)")
            failed = True
            continue
        started = time.monotonic()
        try:
            image = runtime.images.get(name, _info)
        except BoxliteError as exc:
            _error(str(exc))
            failed = True
            continue
        _info(f"{name} ready in {time.monotonic() - started:.1f} s ({human_size(_on_disk(image))} on disk)")
        print(f"{image.reference} {image.digest}", flush=True)
    return EXIT_BOXLITE if failed else 0


def cmd_pull(args: argparse.Namespace, runtime: Boxlite) -> int:
    failed = False
    interactive = sys.stderr.isatty() and log.isEnabledFor(logging.INFO)
    for reference in args.references:
        bars = LayerBars(sys.stderr) if interactive else None
        started = time.monotonic()
        try:
            image = runtime.images.pull(reference, _info, on_layer=bars)
        except BoxliteError as exc:
            _error(str(exc))
            failed = True
            continue
        _info(f"pulled {familiar_name(image.reference)} in {time.monotonic() - started:.1f} s")
        print(f"{image.reference} {image.digest}", flush=True)
    return EXIT_BOXLITE if failed else 0


def cmd_load(args: argparse.Namespace, runtime: Boxlite) -> int:
    failed = False
    for path in args.paths:
        try:
            images = runtime.images.load(Path(path), _info)  # expanded and resolved by the store
        except BoxliteError as exc:
            _error(str(exc))
            failed = True
            continue
        for image in images:
            print(f"Loaded image: {familiar_name(image.reference)} {image.digest}", flush=True)
    return EXIT_BOXLITE if failed else 0


def cmd_rm(args: argparse.Namespace, runtime: Boxlite) -> int:
    failed = False
    for reference in args.references:
        try:
            removed = runtime.images.remove(reference)
        except BoxliteError as exc:
            _error(str(exc))
            failed = True
            continue
        for name in removed.untagged:
            print(f"Untagged: {familiar_name(name)}")
        for key in removed.templates_discarded:
            print(f"Discarded start template: {key}")
        if removed.deleted:
            print(f"Deleted: {removed.deleted} ({human_size(removed.bytes_freed)} freed)", flush=True)
    return EXIT_BOXLITE if failed else 0


def cmd_prune(args: argparse.Namespace, runtime: Boxlite) -> int:
    freed = runtime.images.prune(all=args.all)
    print(f"Total reclaimed space: {human_size(freed)}", flush=True)
    return 0


def add_images_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], runtime_factory: RuntimeFactory
) -> None:
    """Register `boxlite images ...` on the main parser's subcommands."""
    images = sub.add_parser("images", aliases=["image"],
                            help="manage the local images (ls, build, pull, load, rm, prune)", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    isub = images.add_subparsers(dest="images_cmd", metavar="COMMAND", required=True)

    def bind(handler: Callable[[argparse.Namespace, Boxlite], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: handler(args, runtime_factory(args))

    p = isub.add_parser("ls", aliases=["list"], help="list local images")
    p.add_argument("-q", "--quiet", dest="quiet_ids", action="store_true", help="only digests")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--builtin", action="store_true",
                   help="list the built-in images (made from Debian packages on first use) instead")
    p.set_defaults(func=bind(cmd_ls))

    p = isub.add_parser("build", help="build built-in images from Debian packages now (they are cached)")
    p.add_argument("names", nargs="*", metavar="NAME", help="built-in image names (default: all of them)")
    p.set_defaults(func=bind(cmd_build))

    p = isub.add_parser("pull", help="pull images from their registries")
    p.add_argument("references", nargs="+", metavar="REF", help="e.g. python:3.12-slim, 127.0.0.1:5000/app:1")
    p.set_defaults(func=bind(cmd_pull))

    p = isub.add_parser("load", help="load OCI layout directories, `docker save` tarballs or OCI archives")
    p.add_argument("-i", "--input", dest="input_path", metavar="PATH", help="an archive to load (like docker load)")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.set_defaults(func=bind(lambda args, rt: cmd_load(_with_input(args), rt)))

    p = isub.add_parser("rm", aliases=["rmi", "remove"], help="remove images (not those boxes use)")
    p.add_argument("references", nargs="+", metavar="REF", help="a name, or a digest (prefix) for every name")
    p.set_defaults(func=bind(cmd_rm))

    p = isub.add_parser("prune", help="delete unnamed images, unneeded blobs and leftovers")
    p.add_argument("-a", "--all", action="store_true", help="delete every image no box uses")
    p.set_defaults(func=bind(cmd_prune))


def _with_input(args: argparse.Namespace) -> argparse.Namespace:
    paths = list(args.paths) + ([args.input_path] if args.input_path else [])
    if not paths:
        raise ConfigError("name what to load: boxlite images load PATH", fix="pass a directory or archive path")
    args.paths = paths
    return args
