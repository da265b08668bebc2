"""The BoxLite Python Jupyter kernel against a local ipykernel, through the same jupyter_client, in one run.

    python3 bench/bench_jupyter.py [--runs N] [--cells N] [--json FILE]

Measures (medians, with min and max), for both kernels:
  start       KernelManager.start_kernel -> kernel_info_reply (for BoxLite: with the box ready to run a cell;
              the box is restored from its start template after the first one ever)
  cell_1plus1 execute "1+1" -> its execute_reply and idle status (execute_interactive)
  stream_1mb  a cell printing 1 MB -> reply and idle, all output received
The kernelspec is installed into a temporary prefix; boxes go to the usual BOXLITE_HOME and are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import start_new_kernel

from codebox_kernel.install import DEFAULT_NAME, install

ONE_MB = "print(('x' * 1023 + '\\n') * 1024, end='')"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": min(values), "max": max(values)}


def measure(kernel_name: str, runs: int, cells: int) -> dict[str, Any]:
    starts: list[float] = []
    round_trips: list[float] = []
    streams: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=300)
        starts.append(_ms(time.perf_counter() - t0))
        try:
            kc.execute_interactive("1+1", timeout=60, output_hook=lambda m: None)  # warm-up
            for _ in range(cells):
                t0 = time.perf_counter()
                kc.execute_interactive("1+1", timeout=60, output_hook=lambda m: None)
                round_trips.append(_ms(time.perf_counter() - t0))
            for _ in range(max(1, cells // 10)):
                received = 0

                def count(msg: dict[str, Any]) -> None:
                    nonlocal received
                    if msg["msg_type"] == "stream":
                        received += len(msg["content"]["text"])

                t0 = time.perf_counter()
                kc.execute_interactive(ONE_MB, timeout=120, output_hook=count)
                streams.append(_ms(time.perf_counter() - t0))
                assert received == 1 << 20, received
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=False)
    return {"start_ms": summary(starts), "cell_1plus1_ms": summary(round_trips), "stream_1mb_ms": summary(streams)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="kernel starts per kernel")
    parser.add_argument("--cells", type=int, default=20, help="1+1 cells per start")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as prefix:
        install(DEFAULT_NAME, prefix=prefix)
        os.environ["JUPYTER_PATH"] = str(Path(prefix) / "share" / "jupyter")
        results = {"boxlite-python": measure(DEFAULT_NAME, args.runs, args.cells),
                   "python3 (local ipykernel)": measure("python3", args.runs, args.cells)}
    for kernel, rows in results.items():
        print(kernel)
        for name, s in rows.items():
            print(f"  {name:<16} median {s['median']:>9.1f}  [{s['min']:.1f}, {s['max']:.1f}]")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
