"""Throughput of moving 100 MB into and out of a box, against the same transfer on the host, in one run.

    python3 bench/bench_network.py [--mb 100] [--boot-runs 3] [--json FILE]

Measures (MB/s, wall clock seen by the host, each the best of --runs):
  volume_read     in the box, `cp` a file from an rw volume (virtio-9p) to the box's disk
  volume_write    in the box, `cp` a file from the box's disk to the volume
  copy_in         Box.copy_in of a host file (tar over gRPC over vsock)
  copy_out        Box.copy_out of a box file
  http_port       host HTTP GET of a file served in the box (python3 -m http.server) through a published port
  host_cp         the same file copied on the host (cp), the baseline of the first four
  host_http       the same GET from an http.server on the host's 127.0.0.1, the baseline of http_port
  boot            runtime.create() -> first exec, with network enabled (NAT), disabled, and with a port+volume
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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


async def _best(runs: int, action: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        await action()
        times.append(time.monotonic() - started)
    return min(times)


async def boot_times(runtime: boxlite.Boxlite, runs: int, volume: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    variants: dict[str, dict[str, Any]] = {
        "boot_nat": {}, "boot_disabled": {"network": "disabled"},
        "boot_port_volume": {"network": "disabled", "ports": [(0, 80)], "volumes": [(str(volume), "/v", "rw")]},
    }
    for name, opts in variants.items():
        times = []
        for _ in range(runs):
            started = time.monotonic()
            async with boxlite.SimpleBox(runtime=runtime, **opts) as box:
                await box.exec("python3", "-c", "print(1)")
                times.append(time.monotonic() - started)
        out[name] = round(statistics.median(times), 2)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--boot-runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    mbs: dict[str, float] = {}

    def rate(seconds: float) -> float:
        return round(size / 1e6 / seconds, 1)

    with tempfile.TemporaryDirectory(prefix="boxlite-bench-net-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        share = base / "share"
        share.mkdir()
        src = share / "blob.bin"
        with open(src, "wb") as f:
            f.write(os.urandom(size))
        # Host baselines.
        mbs["host_cp"] = rate(await _best(args.runs, lambda: asyncio.to_thread(
            subprocess.run, ["cp", str(src), str(base / "copy.bin")], check=True)))
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(share))
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None  # type: ignore[method-assign]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host_url = f"http://127.0.0.1:{server.server_address[1]}/blob.bin"
        mbs["host_http"] = rate(await _best(args.runs, lambda: asyncio.to_thread(_download, host_url)))
        server.shutdown()

        runtime = boxlite.Boxlite()
        try:
            async with boxlite.SimpleBox(runtime=runtime, memory_mib=1024, network="disabled",
                                         ports=[(0, 8000)], volumes=[(str(share), "/mnt/share", "rw")]) as box:
                async def in_box(*cmd: str) -> None:
                    r = await box.exec(*cmd)
                    assert r.exit_code == 0, r.stderr

                mbs["volume_read"] = rate(await _best(args.runs, lambda: in_box(
                    "cp", "/mnt/share/blob.bin", "/root/blob.bin")))
                mbs["volume_write"] = rate(await _best(args.runs, lambda: in_box(
                    "cp", "/root/blob.bin", "/mnt/share/back.bin")))
                mbs["copy_in"] = rate(await _best(args.runs, lambda: box.copy_in(str(src), "/root/in.bin")))
                out = base / "out.bin"
                mbs["copy_out"] = rate(await _best(args.runs, lambda: box.copy_out("/root/in.bin", str(out))))
                assert out.stat().st_size == size
                info = await box.info()
                port = info.ports[0]["host_port"]
                server_exec = await box._box.exec("python3", ["-m", "http.server", "8000", "--bind", "127.0.0.1",
                                                              "--directory", "/root"])
                url = f"http://127.0.0.1:{port}/blob.bin"
                got = await asyncio.to_thread(_download, url)  # warm: the server is up
                assert got == size
                mbs["http_port"] = rate(await _best(args.runs, lambda: asyncio.to_thread(_download, url)))
                await server_exec.kill()
            boots = await boot_times(runtime, args.boot_runs, share)
        finally:
            await runtime.close()
        shutil.rmtree(base, ignore_errors=True)
    result = {"mb": args.mb, "MB_per_s": mbs, "boot_s": boots}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
