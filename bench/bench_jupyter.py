"""The BoxLite Python Jupyter kernel against a local ipykernel, through the same jupyter_client, in one run.

    python3 bench/bench_jupyter.py [--runs N] [--cells N] [--json FILE]

Writes the raw results to bench/results/<time>-jupyter.json (bench/report.py makes RESULTS.md's table).
Measures (medians, with min and max), for both kernels (rows `boxlite_*` and `ipykernel_*`):
  start        KernelManager.start_kernel -> the first cell's ("1+1") result (for BoxLite: the box restored
               from its start template: checked)
  first_start  BoxLite only: the same, the first start on a home with no template (cold boot, kernel start,
               making the template; one sample)
  cell_1plus1  execute "1+1" -> its execute_reply and idle status (execute_interactive)
  stream_1mb   a cell printing 1 MB -> reply and idle, all output received
The kernelspec is installed into a temporary prefix; boxes go to a BOXLITE_HOME of the bench's own that starts
with no template (bench/homes.py), and are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from homes import bench_home, template_count
from jupyter_client.manager import start_new_kernel
from measure import row
from record import Run
from report import text_table

import boxlite
from codebox_kernel.install import DEFAULT_NAME, install

ONE_MB = "print(('x' * 1023 + '\\n') * 1024, end='')"


def _ms(seconds: float) -> float:
    return seconds * 1000


def box_boots(home: Path) -> list[str]:
    """How the boxes now in `home` started ("cold" or "restored")."""
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home))
    return [str(info.boot) for info in asyncio.run(rt.list_info())]


def measure(kernel_name: str, runs: int, cells: int,
            check_start: Callable[[int], None] = lambda i: None) -> dict[str, list[float]]:
    """check_start(i) runs after the i-th kernel start (it may raise to say the start was not what it claims)."""
    starts: list[float] = []
    round_trips: list[float] = []
    streams: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=300)
        try:
            # Until the first cell's result: the BoxLite kernel answers kernel_info itself when its first box
            # takes longer than KERNEL_INFO_WAIT_S, so kernel_info alone does not say the box is ready.
            kc.execute_interactive("1+1", timeout=300, output_hook=lambda m: None)
            starts.append(_ms(time.perf_counter() - t0))
            check_start(len(starts) - 1)
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
    return {"start": starts, "cell_1plus1": round_trips, "stream_1mb": streams}


def boxlite_rows(run: Run, runs: int, cells: int) -> None:
    saved = os.environ.get("BOXLITE_HOME")
    with bench_home() as home:
        os.environ["BOXLITE_HOME"] = str(home)  # the kernel's runtime (and its box) live there
        run.host["accel"] = boxlite.Boxlite(boxlite.Options(home_dir=home))._accel().name

        def check(i: int) -> None:
            want = "cold" if i == 0 else "restored"
            boots = box_boots(home)
            if boots != [want] or template_count(home) != 1:
                raise RuntimeError(f"kernel start {i}: boxes {boots}, {template_count(home)} templates; expected "
                                   f"one {want} box and one template")

        try:
            got = measure(DEFAULT_NAME, runs + 1, cells, check)
        finally:
            if saved is None:
                os.environ.pop("BOXLITE_HOME", None)
            else:
                os.environ["BOXLITE_HOME"] = saved
    run.add("boxlite_first_start", row("BoxLite kernel, first start on a home with no template (cold boot, "
                                       "kernel, making the template) -> first cell result", "ms", got["start"][:1]))
    run.add("boxlite_start", row("BoxLite kernel start, box from its template -> first cell result", "ms",
                                 got["start"][1:]))
    run.add("boxlite_cell_1plus1", row("BoxLite kernel: execute '1+1' -> reply and idle", "ms", got["cell_1plus1"]))
    run.add("boxlite_stream_1mb", row("BoxLite kernel: a cell printing 1 MB -> reply, idle, all output", "ms",
                                      got["stream_1mb"]))


def ipykernel_rows(run: Run, runs: int, cells: int) -> None:
    got = measure("python3", runs, cells)
    run.add("ipykernel_start", row("local ipykernel start -> first cell result", "ms", got["start"]))
    run.add("ipykernel_cell_1plus1", row("local ipykernel: execute '1+1' -> reply and idle", "ms",
                                         got["cell_1plus1"]))
    run.add("ipykernel_stream_1mb", row("local ipykernel: a cell printing 1 MB -> reply, idle, all output", "ms",
                                        got["stream_1mb"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="kernel starts per kernel")
    parser.add_argument("--cells", type=int, default=20, help="1+1 cells per start")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    run = Run("jupyter", {"runs": args.runs, "cells": args.cells})
    with tempfile.TemporaryDirectory() as prefix:
        install(DEFAULT_NAME, prefix=prefix)
        os.environ["JUPYTER_PATH"] = str(Path(prefix) / "share" / "jupyter")
        boxlite_rows(run, args.runs, args.cells)
        ipykernel_rows(run, args.runs, args.cells)
    run.write(also=args.json)
    print(text_table(run.document()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
