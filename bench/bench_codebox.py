"""CodeBox timings against their floors, measured in one run.

    python3 bench/bench_codebox.py [--runs N] [--execs N] [--json FILE]

Measures (medians, with min and max):
  ready        CodeBox() entered -> first run("1+1") returned (box boot + kernel start + first cell)
  kernel_start CodeBox.restart() in a running box (a new kernel until it answers kernel_info)
  warm_run     run("1+1") round trip on a warm kernel, from the host through the portal bridge
  inbox_floor  the same execute_request sent to the same kernel from inside the box by the lightest client
               (the agent's ZMTP code, hand-signed messages, ipc; no portal): the kernel's own floor
  host_local   the same request to a local ipykernel on the host through jupyter_client (no VM at all)
Goal: warm_run - inbox_floor (what the bridge adds) under 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import boxlite
from guest import zmtp

# The lightest client there is, run inside the box: the agent's own ZMTP code (copied in) and hand-signed
# messages over the kernel's ipc sockets, waiting for the reply and the idle status as CodeBox.run does.
INBOX_CLIENT = r"""
import hashlib, hmac, json, select, sys, time, uuid
sys.path.insert(0, "/tmp")
from boxlite_zmtp import Peer
conn = json.load(open(sys.argv[1]))
key = conn["key"].encode()
ident = uuid.uuid4().hex.encode()
shell = Peer(f"{conn['ip']}-{conn['shell_port']}", "DEALER", ident)
iopub = Peer(f"{conn['ip']}-{conn['iopub_port']}", "SUB")
session = uuid.uuid4().hex

def request(code):
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session, "username": "bench",
              "date": "2026-01-01T00:00:00Z", "version": "5.3"}
    parts = [json.dumps(p).encode() for p in (header, {}, {}, {"code": code, "silent": False,
             "store_history": True, "user_expressions": {}, "allow_stdin": False})]
    sig = hmac.new(key, b"".join(parts), hashlib.sha256).hexdigest().encode()
    shell.send([b"<IDS|MSG>", sig, *parts])
    return header["msg_id"]

def run(code):
    msg_id = request(code)
    idle = reply = False
    while not (idle and reply):
        ready, _, _ = select.select([shell.sock, iopub.sock], [], [], 30)
        for sock in ready:
            peer = shell if sock is shell.sock else iopub
            for frames in peer.read_available() or []:
                i = frames.index(b"<IDS|MSG>")
                parent, content = json.loads(frames[i + 3]), json.loads(frames[i + 5])
                if parent.get("msg_id") != msg_id:
                    continue
                if peer is shell:
                    reply = True
                elif content.get("execution_state") == "idle":
                    idle = True

for _ in range(20):  # until iopub's subscription has landed
    t = time.perf_counter(); run("1+1")
times = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    run("1+1")
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def stats(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {"median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2),
            "n": len(ms)}


async def measure_box(runs: int, execs: int) -> dict[str, Any]:
    ready, kernel_start, warm, floor = [], [], [], []
    for i in range(runs):
        start = time.monotonic()
        async with boxlite.CodeBox() as cb:
            await cb.run("1+1")
            ready.append(time.monotonic() - start)
            if i == 0:
                for _ in range(3):
                    await cb.run("1+1")
                for _ in range(execs):
                    t = time.perf_counter()
                    await cb.run("1+1")
                    warm.append(time.perf_counter() - t)
                assert cb.kernel.info is not None
                await cb.files.write("/tmp/boxlite_zmtp.py", Path(zmtp.__file__).read_text())
                result = await cb.exec("python3", "-c", INBOX_CLIENT, cb.kernel.info.connection_file, str(execs),
                                       timeout=600)
                if result.exit_code != 0:
                    raise RuntimeError(f"in-box client failed: {result.stderr}")
                floor = json.loads(result.stdout)
                for _ in range(2):
                    t = time.monotonic()
                    await cb.restart()
                    kernel_start.append(time.monotonic() - t)
    return {"ready": stats(ready), "kernel_start": stats(kernel_start), "warm_run": stats(warm),
            "inbox_floor": stats(floor)}


def measure_host_local(execs: int) -> dict[str, float] | None:
    try:
        from jupyter_client.manager import start_new_kernel
    except ImportError:
        return None
    try:
        km, kc = start_new_kernel(kernel_name="python3")
    except Exception:  # no local ipykernel
        return None
    try:
        times = []
        for _ in range(execs + 3):
            t = time.perf_counter()
            kc.execute_interactive("1+1", timeout=30, output_hook=lambda msg: None)
            times.append(time.perf_counter() - t)
        return stats(times[3:])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="CodeBoxes to start for the ready time")
    parser.add_argument("--execs", type=int, default=50, help="round trips per warm measurement")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = asyncio.run(measure_box(args.runs, args.execs))
    local = measure_host_local(args.execs)
    if local is not None:
        results["host_local"] = local
    results["bridge_overhead_ms"] = round(results["warm_run"]["median_ms"] - results["inbox_floor"]["median_ms"], 2)
    width = max(len(k) for k in results)
    for name, value in results.items():
        if isinstance(value, dict):
            print(f"{name:<{width}}  median {value['median_ms']:>9.2f} ms   min {value['min_ms']:>9.2f}   "
                  f"max {value['max_ms']:>9.2f}   n={value['n']}")
        else:
            print(f"{name:<{width}}  {value} ms (goal: under 5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
