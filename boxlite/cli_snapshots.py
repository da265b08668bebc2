"""`boxlite snapshot ...`: take, list and remove snapshots of running boxes, and see the start templates.

    boxlite snapshot create BOX NAME     save a running box (memory, devices, disk); it keeps running
    boxlite snapshot ls [--templates]    the snapshots (or the runtime's start templates)
    boxlite snapshot rm NAME...          remove snapshots (boxes made from them keep working)
    boxlite run --snapshot NAME ...      start a box from a snapshot instead of booting one
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boxlite._errors import BoxliteError
from boxlite._runtime import Boxlite
from boxlite._snapshots import SnapshotInfo, stale_reason

RuntimeFactory = Callable[[argparse.Namespace], Boxlite]


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _row(info: SnapshotInfo) -> list[str]:
    age = time.time() - info.created_at
    when = f"{int(age // 60)} min ago" if age < 3600 else f"{age / 3600:.1f} h ago"
    status = stale_reason(info) or "ok"
    return [info.name if info.kind == "snapshot" else info.name[:12], info.image, f"{info.cpus}",
            f"{info.memory_mib}", _mib(info.size_bytes), info.tag or "-", when, status]


def cmd_ls(args: argparse.Namespace, runtime: Boxlite) -> int:
    found = runtime.snapshots.templates() if args.templates else runtime.snapshots.list()
    if args.json:
        print(json.dumps([{**i.model_dump(mode="json", exclude={"image_record"}), "stale": stale_reason(i)}
                          for i in found], indent=2))
        return 0
    rows = [_row(i) for i in found]
    headers = ["NAME" if not args.templates else "KEY", "IMAGE", "CPUS", "MEM", "SIZE", "TAG", "CREATED", "STATUS"]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    for line in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_create(args: argparse.Namespace, runtime: Boxlite) -> int:
    async def take() -> SnapshotInfo:
        box = await runtime.get_or_raise(args.box)
        try:
            return await box.snapshot(args.name)
        finally:
            await box._client.close()

    info = asyncio.run(take())
    print(info.name)
    return 0


def cmd_rm(args: argparse.Namespace, runtime: Boxlite) -> int:
    failed = False
    for name in args.names:
        try:
            runtime.snapshots.remove(name)
            print(name)
        except BoxliteError as exc:
            print(f"boxlite: {exc}", flush=True)
            failed = True
    return 125 if failed else 0


def add_snapshot_parser(sub: Any, runtime_factory: RuntimeFactory) -> None:
    """Register `boxlite snapshot ...` on the main parser's subcommands."""
    snap = sub.add_parser("snapshot", aliases=["snapshots"], help="take, list and remove snapshots of boxes",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = snap.add_subparsers(dest="snapshot_cmd", metavar="COMMAND", required=True)

    def bind(handler: Callable[[argparse.Namespace, Boxlite], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: handler(args, runtime_factory(args))

    p = ssub.add_parser("create", help="snapshot a running box (it keeps running)")
    p.add_argument("box", metavar="BOX")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=bind(cmd_create))

    p = ssub.add_parser("ls", aliases=["list"], help="list snapshots")
    p.add_argument("--templates", action="store_true", help="the runtime's start templates instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=bind(cmd_ls))

    p = ssub.add_parser("rm", help="remove snapshots")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=bind(cmd_rm))


def templates_check(home: Path) -> tuple[str, str]:
    """(status, detail) for `boxlite doctor`: how boxes start here, and the templates' state."""
    import os

    templates = home / "templates"
    transport = os.environ.get("BOXLITE_TRANSPORT", "serial")
    if transport != "serial":
        return "warn", f"BOXLITE_TRANSPORT={transport}: boxes cannot be snapshotted, every start is a cold boot"
    infos = []
    if templates.is_dir():
        for entry in templates.iterdir():
            meta = entry / "meta.json"
            if meta.exists():
                try:
                    infos.append(SnapshotInfo.model_validate_json(meta.read_text()))
                except ValueError:
                    continue
    stale = sum(1 for i in infos if stale_reason(i) is not None)
    detail = (f"{len(infos)} start template(s), {stale} stale (rebuilt on next use); boxes are restored from a "
              "template when one matches, else booted cold (`boxlite info BOX` shows which)")
    return "ok", detail
