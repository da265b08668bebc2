"""Image pull timings against the local registry, compared with the standard tools doing the same work.

    scripts/registry.sh start
    python3 bench/bench_images.py [--rounds N] [--json FILE]

The built-in default image's OCI layout (HOME/images/layouts/default) is pushed once to 127.0.0.1:5000. Then,
in alternating rounds on that one image:
  ours     ImageStore.pull(): manifest + blobs over HTTP, verified, unpacked, ext4 disk built with mke2fs -d
  tools    `skopeo copy docker://... oci:DIR` + `umoci unpack` + `mke2fs -d` of the same size (as root)
  cached   a second ImageStore.pull() of the cached image (asks the registry, downloads nothing) and get()
Goals: ours no slower than the tools; a second pull of a cached image under 50 ms.
Writes the raw results to bench/results/<time>-images.json (bench/report.py makes RESULTS.md's table).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import row, summary
from record import Run
from report import text_table

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


def cached(rounds: int = 20) -> dict[str, list[float]]:
    """Milliseconds of: a second pull of a cached image, get(), and a pull from a new store (a new client)."""
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
    return {"second_pull": [s * 1000 for s in pulls], "get": [s * 1000 for s in gets],
            "pull_new_store": [s * 1000 for s in fresh]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    run = Run("images", {"rounds": args.rounds})
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
    ours_s = [t for t, _ in results["ours"]]
    tools_s = [t for t, _ in results["tools"]]
    slower = statistics.median(ours_s) / statistics.median(tools_s)
    times = cached()
    second = statistics.median(times["second_pull"])
    run.add("pull", row("ImageStore.pull() of the default image from the local registry: download, verify, unpack, "
                        "build the ext4 disk", "s", ours_s, floor=summary(tools_s),
                        floor_name="skopeo + umoci + mke2fs", goal="no slower than the tools", met=slower <= 1,
                        note=f"{slower:.2f}x the tools"))
    run.add("pull_tools", row("skopeo copy + umoci unpack + mke2fs -d of the same image", "s", tools_s))
    run.add("second_pull", row("a second pull() of the cached image (asks the registry, downloads nothing)", "ms",
                               times["second_pull"], goal="< 50 ms", met=second < 50))
    run.add("get", row("get() of the cached image", "ms", times["get"]))
    run.add("pull_new_store", row("pull() of the cached image from a new store (a new HTTP client too)", "ms",
                                  times["pull_new_store"]))
    run.write(also=args.json)
    print(text_table(run.document()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
