"""The benchmark suite: what a user of boxlite pays on this host, each number next to its floor from the same run.

    python3 bench/run.py [--runs N] [--execs N] [--json FILE] [--quick]

Prints a table and writes the raw results to bench/results/<time>-run.json (bench/report.py makes
bench/RESULTS.md's tables from them). Every row is a median with its min and max over --runs repetitions (the
1000-exec throughput row runs once per three repetitions). Boxes live in BOXLITE_HOMEs of the bench's own
(bench/homes.py), never in the real one.

How a box starts (boxlite/_runtime.py create()): restored from the start template for its image and resources
when the home has one; otherwise booted cold, and then (unless templates are off) snapshotted as that template
before create() returns. Each row says which of these it measures, and checks that it happened:

  first_simplebox   create() on a home with no template -> first exec result: cold boot + making the template
                    (what the very first box of its kind costs)                    floor: bare QEMU boot to init
  cold_start        create() with templates off -> first exec result (`true`)      floor: bare QEMU boot to init
  template_start    create() restored from the start template -> first exec result floor: bare QEMU restore
  first_codebox     CodeBox on a home with no template -> first run("1+1") result: cold boot, kernel start,
                    making the CodeBox template
  codebox_cold      CodeBox with templates off -> first run("1+1") result
  codebox_template  CodeBox restored from its template (kernel already running) -> first run("1+1") result
  warm_exec_true    exec `true` in a running box                                   floor: portal Ping round trip
  warm_run_1plus1   CodeBox.run("1+1") in a running CodeBox     floor: the in-box kernel's own time for the request
                    (stamped by the kernel in the box) + what a native client adds around a local ipykernel on
                    the host (round trip minus that kernel's own time); the bridge's cost is what a run takes
                    above the floor, paired request by request (bench/measure.py bridge_overhead_ms)
  warm_python       exec `python3 -c 1+1` in a running box                         floor: portal Ping round trip
  idle_box_rss      host RSS of one idle box started from the template (shim + QEMU + passt), 256 MiB guest,
                    after create and one command, 2 s idle                         floor: bare restored QEMU
  concurrent_8      8 boxes created at once (from the template) -> all answered    floor: one template start
  exec_1000         1000 sequential execs of `true` (execs per second)             floor: 1000 Pings per second

Goals on a TCG host: template_start < 250 ms and >= 10x faster than cold_start; codebox_template < 500 ms;
bridge overhead < 5 ms; idle_box_rss < 150 MiB; concurrent_8 < 3 s. The machine may be shared: numbers are
noisy, ratios are fairer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import floor_boot_s
from homes import bench_home, runtime_in, template_count
from kernel_floor import codebox_runs, host_ipykernel
from measure import bridge_floor_ms, bridge_overhead_ms, row, summary
from record import Run
from report import text_table

import boxlite
from boxlite._metrics import box_process_ids, process_rss_bytes
from boxlite.engine.qmp import Qmp

MEMORY_MIB = 256
OPTS = boxlite.BoxOptions(memory_mib=MEMORY_MIB)
# The order of the rows in the results: starts, then warm work, then resources.
ROWS = ("first_simplebox", "cold_start", "template_start", "first_codebox", "codebox_cold", "codebox_template",
        "warm_exec_true", "warm_run_1plus1", "warm_python", "idle_box_rss", "concurrent_8", "exec_1000")
Starter = Callable[[boxlite.Boxlite], Awaitable[tuple[float, str]]]


async def exec_true(box: boxlite.Box, *argv: str) -> None:
    argv = argv or ("true",)
    _, err, status = await (await box.exec(argv[0], list(argv[1:]))).collect()
    if status.exit_code != 0:
        raise RuntimeError(f"{argv} failed in the benchmark: {err!r}")


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return (time.perf_counter() - start) * 1000


async def box_to_first_exec(runtime: boxlite.Boxlite) -> tuple[float, str]:
    """create() -> the first `true` answered, in ms, and how the box started ("cold" or "restored")."""
    start = time.perf_counter()
    box = await runtime.create(OPTS)
    await exec_true(box)
    ms = (time.perf_counter() - start) * 1000
    boot = str(box.info().boot)
    await runtime.remove(box.id, force=True)
    return ms, boot


async def codebox_to_first_run(runtime: boxlite.Boxlite) -> tuple[float, str]:
    """CodeBox entered -> the first run("1+1") returned, in ms, and how its box started."""
    start = time.perf_counter()
    async with boxlite.CodeBox(runtime=runtime) as cb:
        await cb.run("1+1")
        ms = (time.perf_counter() - start) * 1000
        boot = str(cb.box.info().boot)
    return ms, boot


def expect_boot(row_name: str, got: str, want: str) -> None:
    """A row measures what its name says, or the run stops: a restore must never be reported as cold."""
    if got != want:
        raise RuntimeError(f"row {row_name} measures a {want} start, but the box started {got!r}")


async def first_of_its_kind(starter: Starter, row_name: str) -> float:
    """The first box of its kind: on a fresh home with no template, boot cold and leave the template."""
    with bench_home() as home:
        async with runtime_in(home) as rt:
            ms, boot = await starter(rt)
        expect_boot(row_name, boot, "cold")
        if template_count(home) != 1:
            raise RuntimeError(f"row {row_name}: the first box left {template_count(home)} templates, not 1")
    return ms


def bare_restore_ms(template: Any, home: Path) -> tuple[float, int]:
    """QEMU alone restoring the template (same argv a box uses): launch -> VM running. Returns (ms, RSS bytes)."""
    from boxlite.engine import VmSpec, detect_accel
    from boxlite.engine.descriptors import OpenedDescriptors
    from boxlite.engine.qemu import qcow2_backing_file, qemu_launch
    from boxlite.provision import find_assets

    assets = find_assets(home)
    with tempfile.TemporaryDirectory(prefix="boxlite-floor-") as tmp:
        box_dir = Path(tmp)
        disk = box_dir / "disk.qcow2"
        disk.write_bytes((template.dir / "disk.qcow2").read_bytes())
        fd = os.open(template.dir / "state", os.O_RDONLY)
        spec = VmSpec(qemu=assets.qemu, kernel=Path(template.kernel), guest_root=Path(template.guest_root),
                      box_disk=disk, box_disk_backing=qcow2_backing_file(disk), box_dir=box_dir,
                      accel=detect_accel(None), cpus=template.cpus,
                      memory_mib=template.memory_mib, hostname="floor", ready_port=2696, vhost_user_socket=None,
                      transport="serial", cmdline=template.cmdline, incoming_fd=fd,
                      tsc_khz=template.tsc_khz, tb_size_mib=64,
                      # The template's machine has the default network's device; its backend is not part of
                      # the machine state, so a restricted user-mode one stands in for passt here.
                      devices=["-netdev", "user,id=net0,restrict=on", "-device", "virtio-net-device,netdev=net0"])
        launch = qemu_launch(spec)
        descriptors = OpenedDescriptors()
        descriptors.open(launch.descriptors)
        argv, fds = descriptors.spawn_args(launch.argv)
        start = time.perf_counter()
        proc = subprocess.Popen(argv, pass_fds=(*fds, fd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(fd)
        descriptors.close_passed()
        conn = descriptors.take_peer("portal")
        try:
            with Qmp(spec.qmp_socket) as qmp:
                while qmp.command("query-status").get("status") != "running":
                    time.sleep(0.001)
            ms = (time.perf_counter() - start) * 1000
            time.sleep(0.5)
            rss = process_rss_bytes(proc.pid) or 0
            return ms, rss
        finally:
            conn.close()
            proc.kill()
            proc.wait()
            descriptors.close()


async def suite(run: Run, runs: int, execs: int) -> None:
    with bench_home() as home:
        async with runtime_in(home) as rt, runtime_in(home, templates=False) as cold_rt:
            run.host["accel"] = rt._accel().name
            await box_rows(run, rt, cold_rt, runs, execs)
            await codebox_rows(run, rt, cold_rt, runs, execs)


async def box_rows(run: Run, rt: boxlite.Boxlite, cold_rt: boxlite.Boxlite, runs: int, execs: int) -> None:
    image = rt.images.get(boxlite.DEFAULT_IMAGE)
    # The bench home's first box makes its template (timed below, on homes of their own, as first_simplebox).
    _, boot = await box_to_first_exec(rt)
    expect_boot("(template making)", boot, "cold")
    key = rt.snapshots.key_for(OPTS, image, "")
    template = rt.snapshots.find_template(key) if key else None
    if template is None:
        raise RuntimeError("no start template was made; is BOXLITE_TRANSPORT set to vsock?")

    first, cold, restored, boot_floor, restore_floor, restore_rss = [], [], [], [], [], []
    for _ in range(runs):
        boot_floor.append(floor_boot_s(rt, image.disk_path, MEMORY_MIB) * 1000)
        first.append(await first_of_its_kind(box_to_first_exec, "first_simplebox"))
        ms, boot = await box_to_first_exec(cold_rt)
        expect_boot("cold_start", boot, "cold")
        cold.append(ms)
        ms, rss = await asyncio.to_thread(bare_restore_ms, template, rt.home)
        restore_floor.append(ms)
        restore_rss.append(rss / 2**20)
        ms, boot = await box_to_first_exec(rt)
        expect_boot("template_start", boot, "restored")
        restored.append(ms)

    boot_s, restore_s = summary(boot_floor), summary(restore_floor)
    run.add("first_simplebox", row("first box of its kind: create() on a home with no template -> first exec "
                                   "(cold boot + making the template)", "ms", first,
                                   floor=boot_s, floor_name="bare QEMU boot"))
    cold_row = run.add("cold_start", row("cold start: create() with templates off -> first exec", "ms", cold,
                                         floor=boot_s, floor_name="bare QEMU boot"))
    speedup = round(cold_row["median"] / statistics.median(restored), 1)
    run.add("template_start", row(
        "start from template: create() restored from the start template -> first exec", "ms", restored,
        floor=restore_s, floor_name="bare QEMU restore", speedup_vs_cold=speedup,
        goal="< 250 ms and >= 10x faster than cold",
        met=statistics.median(restored) < 250 and speedup >= 10,
        note=f"{speedup}x faster than cold"))
    await warm_rows(run, rt, runs, execs, restore_rss)
    await concurrent_row(run, rt, runs, summary(restored))


async def warm_rows(run: Run, rt: boxlite.Boxlite, runs: int, execs: int, restore_rss: list[float]) -> None:
    box = await rt.create(OPTS)
    try:
        expect_boot("idle_box_rss", str(box.info().boot), "restored")
        await exec_true(box)
        await asyncio.sleep(2)  # idle: created, answered one command, nothing running
        pids = box_process_ids(box._refresh().shim_pid)
        rss = sum(process_rss_bytes(p) or 0 for p in pids) / 2**20
        for _ in range(3):  # first uses translate the guest's code paths under TCG: not "warm"
            await exec_true(box, "python3", "-c", "1+1")
        pings, trues, pythons, ping_rates, rates = [], [], [], [], []
        for _ in range(max(runs * 6, 30)):
            pings.append(await timed(lambda: box._client.ping()))
            trues.append(await timed(lambda: exec_true(box)))
        for _ in range(max(runs * 2, 10)):
            pythons.append(await timed(lambda: exec_true(box, "python3", "-c", "1+1")))
        for _ in range(max(1, runs // 3)):
            start = time.perf_counter()
            for _ in range(execs):
                await box._client.ping()
            ping_rates.append(execs / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(execs):
                await exec_true(box)
            rates.append(execs / (time.perf_counter() - start))
    finally:
        await rt.remove(box.id, force=True)
    ping = summary(pings)
    run.add("warm_exec_true", row("warm exec `true` in a running box", "ms", trues, floor=ping,
                                  floor_name="portal Ping round trip"))
    run.add("warm_python", row("warm exec `python3 -c 1+1` in a running box", "ms", pythons, floor=ping,
                               floor_name="portal Ping round trip"))
    run.add("idle_box_rss", row(f"host RSS of one idle box from the template (shim + QEMU + passt), {MEMORY_MIB} "
                                "MiB guest", "MiB", [rss], floor=summary(restore_rss),
                                floor_name="bare restored QEMU", guest_mib=MEMORY_MIB, goal="< 150 MiB",
                                met=rss < 150))
    run.add("exec_1000", row(f"{execs} sequential execs of `true`", "execs/s", rates, floor=summary(ping_rates),
                             floor_name="sequential portal Pings", floor_unit="Pings/s", execs=execs))


async def concurrent_row(run: Run, rt: boxlite.Boxlite, runs: int, one_start: dict[str, Any]) -> None:
    samples = []
    for _ in range(max(1, runs // 2)):
        async def one() -> str:
            b = await rt.create(OPTS)
            await exec_true(b)
            return str(b.info().boot)

        start = time.perf_counter()
        boots = await asyncio.gather(*(one() for _ in range(8)))
        samples.append((time.perf_counter() - start) * 1000)
        for boot in boots:
            expect_boot("concurrent_8", boot, "restored")
        for info in await rt.list_info():
            await rt.remove(info.id, force=True)
    run.add("concurrent_8", row("8 boxes created at once (from the template) -> all answered an exec", "ms",
                                samples, floor=one_start, floor_name="one template start", goal="< 3000 ms",
                                met=statistics.median(samples) < 3000))


async def codebox_rows(run: Run, rt: boxlite.Boxlite, cold_rt: boxlite.Boxlite, runs: int, execs: int) -> None:
    """CodeBox starts (first of its kind, cold, from its template) and the warm run("1+1") round trip next to
    its floor (bench/kernel_floor.py)."""
    _, boot = await codebox_to_first_run(rt)  # makes the bench home's CodeBox template
    expect_boot("(CodeBox template making)", boot, "cold")
    first, cold, restored = [], [], []
    for _ in range(runs):
        first.append(await first_of_its_kind(codebox_to_first_run, "first_codebox"))
        ms, boot = await codebox_to_first_run(cold_rt)
        expect_boot("codebox_cold", boot, "cold")
        cold.append(ms)
        ms, boot = await codebox_to_first_run(rt)
        expect_boot("codebox_template", boot, "restored")
        restored.append(ms)
    run.add("first_codebox", row("first CodeBox of its kind: on a home with no template -> first run('1+1') "
                                 "(cold boot, kernel start, making the template)", "ms", first))
    run.add("codebox_cold", row("CodeBox with templates off -> first run('1+1') (cold boot, kernel start)", "ms",
                                cold))
    median = statistics.median(restored)
    run.add("codebox_template", row("CodeBox from its template (kernel already running) -> first run('1+1')",
                                    "ms", restored, goal="< 500 ms", met=median < 500))

    n = min(execs, 50)
    async with boxlite.CodeBox(runtime=rt) as cb:
        trips, inbox_own = await codebox_runs(cb, "1+1", n)
    host_trips, host_own = await asyncio.to_thread(host_ipykernel, "1+1", n)
    run.add("warm_run_1plus1", bridge_row(trips, inbox_own, host_trips, host_own))


def bridge_row(trips: list[float], inbox_own: list[float], host_trips: list[float],
               host_own: list[float]) -> dict[str, Any]:
    """The warm CodeBox.run row: its floor from the in-box kernel's own time and a host ipykernel's round trip."""
    floor = bridge_floor_ms(statistics.median(inbox_own), statistics.median(host_trips),
                            statistics.median(host_own))
    overhead = round(bridge_overhead_ms(trips, inbox_own, host_trips, host_own), 1)
    return row("warm CodeBox.run('1+1') round trip", "ms", trips, floor={"median": round(floor, 2)},
               floor_name="in-box kernel's own time + a host client's cost around a local ipykernel",
               floor_parts={name: {**summary(samples), "samples": [round(v, 3) for v in samples]}
                            for name, samples in (("inbox_kernel_own", inbox_own),
                                                  ("host_ipykernel_round_trip", host_trips),
                                                  ("host_kernel_own", host_own))},
               bridge_overhead_ms=overhead, goal="bridge overhead < 5 ms", met=overhead < 5,
               note=f"bridge overhead {overhead} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--execs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="--runs 2 --execs 200")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.execs = 2, 200
    run = Run("run", {"runs": args.runs, "execs": args.execs, "memory_mib": MEMORY_MIB})
    asyncio.run(suite(run, args.runs, args.execs))
    run.rows = {name: run.rows[name] for name in ROWS if name in run.rows}
    run.write(also=args.json)
    print(text_table(run.document()))


if __name__ == "__main__":
    main()
