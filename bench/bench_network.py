"""Throughput of moving 100 MB into and out of a box, against the same transfer on the host, in one run; and box
starts by network shape, cold and from a template.

    python3 bench/bench_network.py [--mb 100] [--runs 2] [--boot-runs 3] [--json FILE]

Writes the raw results to bench/results/<time>-network.json (bench/report.py makes RESULTS.md's table). Boxes
live in a BOXLITE_HOME of the bench's own (bench/homes.py). Measures (MB/s, wall clock seen by the host, over
--runs):
  volume_read     in the box, `cp` a file from an rw volume (virtio-9p) to the box's disk
  volume_write    in the box, `cp` a file from the box's disk to the volume
  copy_in         Box.copy_in of a host file (tar over the portal)
  copy_out        Box.copy_out of a box file
  http_port       host HTTP GET of a file served in the box (python3 -m http.server) through a published port
  host_cp         the same file copied on the host (cp): the floor of the first four
  host_http       the same GET from an http.server on the host's 127.0.0.1: the floor of http_port
and create() -> first exec for each network shape (NAT, disabled, a port and a volume):
  cold_<shape>      with templates off: a real cold boot (checked)
  template_<shape>  restored from the start template, for the shapes a template may serve (checked)
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from homes import bench_home, runtime_in
from measure import row, summary
from record import Run
from report import text_table

import boxlite


def _download(url: str) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                total = 0
                while chunk := resp.read(1 << 20):
                    total += len(chunk)
                return total
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


async def _times(runs: int, action: Callable[[], Awaitable[Any]]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return times


SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "nat": ("NAT network (the default)", {}),
    "disabled": ("network disabled", {"network": "disabled"}),
    "port_volume": ("network disabled, a published port and an rw volume", {"network": "disabled"}),
}


async def _start_ms(runtime: boxlite.Boxlite, opts: dict[str, Any]) -> tuple[float, str]:
    started = time.perf_counter()
    async with boxlite.SimpleBox(runtime=runtime, **opts) as box:
        await box.exec("python3", "-c", "print(1)")
        ms = (time.perf_counter() - started) * 1000
        return ms, str(box.info().boot)


async def start_rows(run: Run, rt: boxlite.Boxlite, cold_rt: boxlite.Boxlite, runs: int, volume: Path) -> None:
    """create() -> first exec for each network shape: cold (templates off), and from the template where the
    runtime would use one (SnapshotStore.key_for decides, as create() does)."""
    image = rt.images.get(boxlite.DEFAULT_IMAGE)
    for shape, (words, opts) in SHAPES.items():
        if shape == "port_volume":
            opts = {**opts, "ports": [(0, 80)], "volumes": [(str(volume), "/v", "rw")]}
        for kind, runtime in (("cold", cold_rt), ("template", rt)):
            if kind == "template" and rt.snapshots.key_for(boxlite.BoxOptions(**opts), image, "") is None:
                continue  # this shape always boots cold: its cold row says it all
            if kind == "template":
                await _start_ms(runtime, opts)  # the first box of its kind makes the template
            times = []
            for _ in range(runs):
                ms, boot = await _start_ms(runtime, opts)
                want = "cold" if kind == "cold" else "restored"
                if boot != want:
                    raise RuntimeError(f"row {kind}_{shape} measures a {want} start; the box started {boot!r}")
                times.append(ms)
            how = "cold boot (templates off)" if kind == "cold" else "start from template"
            run.add(f"{kind}_{shape}", row(f"{how}, {words}: create() -> first exec", "ms", times))


async def measure(run: Run, args: argparse.Namespace) -> None:
    size = args.mb * 1024 * 1024

    def rates(seconds: list[float]) -> list[float]:
        return [size / 1e6 / s for s in seconds]

    with tempfile.TemporaryDirectory(prefix="boxlite-bench-net-", dir="/var/tmp") as tmp, bench_home() as home:
        base = Path(tmp)
        share = base / "share"
        share.mkdir()
        src = share / "blob.bin"
        with open(src, "wb") as f:
            f.write(os.urandom(size))
        # Host floors.
        host_cp = rates(await _times(args.runs, lambda: asyncio.to_thread(
            subprocess.run, ["cp", str(src), str(base / "copy.bin")], check=True)))
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(share))
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None  # type: ignore[method-assign]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host_url = f"http://127.0.0.1:{server.server_address[1]}/blob.bin"
        host_http = rates(await _times(args.runs, lambda: asyncio.to_thread(_download, host_url)))
        server.shutdown()
        cp_floor, http_floor = summary(host_cp), summary(host_http)

        async with runtime_in(home) as rt, runtime_in(home, templates=False) as cold_rt:
            run.host["accel"] = rt._accel().name
            async with boxlite.SimpleBox(runtime=rt, memory_mib=1024, network="disabled",
                                         ports=[(0, 8000)], volumes=[(str(share), "/mnt/share", "rw")]) as box:
                async def in_box(*cmd: str) -> None:
                    r = await box.exec(*cmd)
                    assert r.exit_code == 0, r.stderr

                def add(name: str, label: str, samples: list[float], http: bool = False) -> None:
                    floor, floor_name = (http_floor, "host HTTP GET") if http else (cp_floor, "host cp")
                    run.add(name, row(f"{label} ({args.mb} MB)", "MB/s", samples, floor=floor,
                                      floor_name=floor_name))

                add("volume_read", "in the box, cp from an rw volume (virtio-9p) to the box's disk", rates(
                    await _times(args.runs, lambda: in_box("cp", "/mnt/share/blob.bin", "/root/blob.bin"))))
                add("volume_write", "in the box, cp from the box's disk to the volume", rates(
                    await _times(args.runs, lambda: in_box("cp", "/root/blob.bin", "/mnt/share/back.bin"))))
                add("copy_in", "Box.copy_in of a host file", rates(
                    await _times(args.runs, lambda: box.copy_in(str(src), "/root/in.bin"))))
                out = base / "out.bin"
                add("copy_out", "Box.copy_out of a box file", rates(
                    await _times(args.runs, lambda: box.copy_out("/root/in.bin", str(out)))))
                assert out.stat().st_size == size
                info = await box.info()
                port = info.ports[0]["host_port"]
                server_exec = await box._box.exec("python3", ["-m", "http.server", "8000", "--bind", "127.0.0.1",
                                                              "--directory", "/root"])
                url = f"http://127.0.0.1:{port}/blob.bin"
                got = await asyncio.to_thread(_download, url)  # warm: the server is up
                assert got == size
                add("http_port", "host HTTP GET of a box file through a published port", rates(
                    await _times(args.runs, lambda: asyncio.to_thread(_download, url))), http=True)
                await server_exec.kill()
            await start_rows(run, rt, cold_rt, args.boot_runs, share)
    run.add("host_cp", row(f"the same file copied on the host with cp ({args.mb} MB)", "MB/s", host_cp))
    run.add("host_http", row(f"the same GET from an http.server on the host ({args.mb} MB)", "MB/s", host_http))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--boot-runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    run = Run("network", {"mb": args.mb, "runs": args.runs, "boot_runs": args.boot_runs})
    asyncio.run(measure(run, args))
    run.write(also=args.json)
    print(text_table(run.document()))


if __name__ == "__main__":
    main()
