"""CodeBox timings against their floors, measured in one run.

    python3 bench/bench_codebox.py [--runs N] [--execs N] [--json FILE]

Writes the raw results to bench/results/<time>-codebox.json (bench/report.py makes RESULTS.md's table). Boxes
live in a BOXLITE_HOME of the bench's own that starts with no template (bench/homes.py). Measures (medians, with
min and max):
  first           the first CodeBox on that home -> first run("1+1") returned: cold boot, kernel start and
                  making the CodeBox template (one sample per run of this script)
  from_template   CodeBox restored from that template (its kernel already running) -> first run("1+1") returned
  kernel_start    CodeBox.restart() in a running box (a new kernel until it answers kernel_info)
  warm_run        run("1+1") round trip on a warm kernel, from the host through the portal bridge
  host_ipykernel  the same request to a local ipykernel on the host (jupyter_client, CodeBox's own kernel
                  launcher), no VM at all
  inbox_kernel    the in-box kernel's own time for each warm request (busy -> idle, stamped by the kernel)
The warm_run floor is inbox_kernel + what a native client adds around host_ipykernel (bench/measure.py
bridge_floor_ms); what the bridge adds is measured request by request (bridge_overhead_ms). Goal: under 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from homes import bench_home, runtime_in, template_count
from kernel_floor import codebox_runs, host_ipykernel
from measure import row
from record import Run
from report import text_table
from run import bridge_row, codebox_to_first_run, expect_boot

import boxlite


async def measure(run: Run, runs: int, execs: int) -> None:
    with bench_home() as home:
        async with runtime_in(home) as rt:
            run.host["accel"] = rt._accel().name
            first_ms, boot = await codebox_to_first_run(rt)
            expect_boot("first", boot, "cold")
            if template_count(home) != 1:
                raise RuntimeError("the first CodeBox left no template")
            restored = []
            for _ in range(runs):
                ms, boot = await codebox_to_first_run(rt)
                expect_boot("from_template", boot, "restored")
                restored.append(ms)
            kernel_start = []
            async with boxlite.CodeBox(runtime=rt) as cb:
                trips, inbox_own = await codebox_runs(cb, "1+1", execs)
                for _ in range(2):
                    start = time.perf_counter()
                    await cb.restart()
                    kernel_start.append((time.perf_counter() - start) * 1000)
    host_trips, host_own = await asyncio.to_thread(host_ipykernel, "1+1", execs)
    run.add("first", row("the first CodeBox on a home with no template -> first run('1+1') (cold boot, kernel "
                         "start, making the template)", "ms", [first_ms]))
    run.add("from_template", row("CodeBox from its template (kernel already running) -> first run('1+1')", "ms",
                                 restored))
    run.add("kernel_start", row("CodeBox.restart(): a new kernel in a running box, until kernel_info", "ms",
                                kernel_start))
    run.add("warm_run", bridge_row(trips, inbox_own, host_trips, host_own))
    run.add("host_ipykernel", row("the same run('1+1') request to a local ipykernel on the host", "ms",
                                  host_trips))
    run.add("inbox_kernel", row("the in-box kernel's own time per warm request (busy -> idle, its stamps)", "ms",
                                inbox_own))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="CodeBoxes started from the template")
    parser.add_argument("--execs", type=int, default=50, help="round trips per warm measurement")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    run = Run("codebox", {"runs": args.runs, "execs": args.execs})
    asyncio.run(measure(run, args.runs, args.execs))
    run.write(also=args.json)
    print(text_table(run.document()))


if __name__ == "__main__":
    main()
