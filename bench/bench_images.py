"""Image pull timings against the local registry, compared with the standard tools doing the same work.

    scripts/registry.sh start
    python3 bench/bench_images.py [--rounds N] [--json FILE]

The built-in default image's OCI layout (HOME/images/layouts/default) is pushed once to 127.0.0.1:5000. Then,
in alternating rounds on that one image:
  ours     ImageStore.pull(): manifest + blobs over HTTP, verified, unpacked, ext4 disk built with mke2fs -d
  tools    `skopeo copy docker://... oci:DIR` + `umoci unpack` + `mke2fs -d` of the same size (as root)
  cached   a second ImageStore.pull() of the cached image (asks the registry, downloads nothing) and get()
Goals: ours no slower than the tools; a second pull of a cached image under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from boxlite._state import default_home
from boxlite.images import ImageStore
from boxlite.images.disk import disk_size_for, measure_tree

REGISTRY = "127.0.0.1:5000"
REF = f"{REGISTRY}/bench/default:latest"


def registry_up() -> bool:
    try:
        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def push_default(layout: Path) -> None:
    tag = json.loads((layout / "index.json").read_text())["manifests"][0]["annotations"][
        "org.opencontainers.image.ref.name"]
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}", f"docker://{REF}"],
                   check=True)


def ours(work: Path) -> tuple[float, dict[str, float]]:
    store = ImageStore(work / "home")
    marks: dict[str, float] = {}
    started = time.perf_counter()

    def progress(line: str) -> None:
        now = time.perf_counter() - started
        if line.startswith("unpacking layer 1/"):
            marks["download"] = now
        elif line.startswith("building disk"):
            marks["unpack"] = now

    store.pull(REF, progress)
    total = time.perf_counter() - started
    return total, {"download": marks["download"], "unpack": marks["unpack"] - marks["download"],
                   "disk": total - marks["unpack"]}


def tools(work: Path) -> tuple[float, dict[str, float]]:
    oci, bundle, disk = work / "oci", work / "bundle", work / "disk.ext4"
    started = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{REF}", f"oci:{oci}:latest"],
                   check=True)
    t_copy = time.perf_counter()
    subprocess.run(["umoci", "unpack", "--image", f"{oci}:latest", str(bundle)], check=True,
                   stdout=subprocess.DEVNULL)
    t_unpack = time.perf_counter()
    size = disk_size_for(measure_tree(bundle / "rootfs").content_bytes)  # the same size boxlite picks
    mke2fs = shutil.which("mke2fs") or "/usr/sbin/mke2fs"
    subprocess.run([mke2fs, "-q", "-t", "ext4", "-T", "default", "-O", "^has_journal", "-E", "root_owner=0:0",
                    "-d", str(bundle / "rootfs"), str(disk), f"{size // 1024}k"], check=True, stdout=subprocess.DEVNULL)
    with open(disk, "rb") as f:
        os.fsync(f.fileno())
    done = time.perf_counter()
    return done - started, {"download": t_copy - started, "unpack": t_unpack - t_copy, "disk": done - t_unpack}


def cached(rounds: int = 20) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-images-") as tmp:
        store = ImageStore(Path(tmp) / "home")
        store.pull(REF)
        pulls, gets, fresh = [], [], []
        for _ in range(rounds):
            t = time.perf_counter()
            store.pull(REF)
            pulls.append(time.perf_counter() - t)
            t = time.perf_counter()
            store.get(REF)
            gets.append(time.perf_counter() - t)
            t = time.perf_counter()
            ImageStore(Path(tmp) / "home").pull(REF)  # a new store: a new HTTP client too
            fresh.append(time.perf_counter() - t)
    return {"second_pull_ms": statistics.median(pulls) * 1000, "get_ms": statistics.median(gets) * 1000,
            "pull_new_store_ms": statistics.median(fresh) * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    layout = default_home() / "images" / "layouts" / "default"
    if not (layout / "index.json").is_file():
        print(f"bench_images: no default image layout at {layout}: run `boxlite setup`", file=sys.stderr)
        return 1
    if not registry_up():
        print(f"bench_images: no registry on {REGISTRY}: run `scripts/registry.sh start`", file=sys.stderr)
        return 1
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            print(f"bench_images: {tool} is missing: run `scripts/registry.sh start` (installs it)", file=sys.stderr)
            return 1
    push_default(layout)

    results: dict[str, list[tuple[float, dict[str, float]]]] = {"ours": [], "tools": []}
    for _ in range(args.rounds):
        for name, fn in (("tools", tools), ("ours", ours)):
            with tempfile.TemporaryDirectory(prefix=f"bench-images-{name}-", dir=str(default_home())) as tmp:
                results[name].append(fn(Path(tmp)))
            total, phases = results[name][-1]
            detail = ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
            print(f"{name:5}  {total:6.2f} s  ({detail})", flush=True)
    summary: dict[str, object] = {
        name: {"median_s": statistics.median(t for t, _ in runs), "runs_s": [round(t, 3) for t, _ in runs]}
        for name, runs in results.items()
    }
    summary.update(cached())
    ours_s = statistics.median(t for t, _ in results["ours"])
    tools_s = statistics.median(t for t, _ in results["tools"])
    print(f"pull+unpack+disk: ours {ours_s:.2f} s, skopeo+umoci+mke2fs {tools_s:.2f} s "
          f"({'no slower' if ours_s <= tools_s else f'{ours_s / tools_s:.2f}x slower'})")
    print(f"cached image: second pull {summary['second_pull_ms']:.1f} ms (goal < 50 ms), "
          f"get {summary['get_ms']:.2f} ms, pull from a new store {summary['pull_new_store_ms']:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
