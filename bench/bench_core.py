"""Core timings of boxlite on this host, as medians of several runs, against the floor of a bare QEMU boot.
(The whole suite, template starts included, is bench/run.py; this module also provides its boot floor.)

    python3 bench/bench_core.py [--runs N] [--json FILE]

Writes the raw results to bench/results/<time>-core.json (bench/report.py makes RESULTS.md's table). Boxes live
in a BOXLITE_HOME of the bench's own (bench/homes.py). Measures:
  floor       bare QEMU (same kernel, guest root, machine) from launch to python3 printing "ready" on the console
  cold        runtime.create() with templates off (a real cold boot, checked) -> first exec result of
              `python3 -c 'print(1)'`
  warm_true   exec of `true` in a running box
  warm_python exec of `python3 -c pass` in a running box
  idle_rss    host RSS of one idle cold-booted box: the shim, QEMU and passt together
Goals on a TCG host: cold within 1.5x of the floor; warm `true` under 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from homes import bench_home, runtime_in
from measure import row, summary
from record import Run
from report import text_table

import boxlite
from boxlite._metrics import box_process_ids, process_rss_bytes
from boxlite.engine import VmSpec, detect_accel
from boxlite.engine.descriptors import OpenedDescriptors
from boxlite.engine.qemu import qemu_launch
from boxlite.provision import find_assets


def floor_boot_s(runtime: boxlite.Boxlite, image_disk: Path, memory_mib: int = 512) -> float:
    """Launch QEMU exactly as a box does, but with python3 (/sbin/boxlite-floor) as init printing "ready".

    Returns the seconds from launch to that line on the console.
    """
    assets = find_assets(runtime.home)
    with tempfile.TemporaryDirectory(prefix="boxlite-floor-") as tmp:
        box_dir = Path(tmp)
        disk = box_dir / "disk.qcow2"
        subprocess.run([str(assets.qemu_img), "create", "-q", "-f", "qcow2", "-b", str(image_disk), "-F", "raw",
                        str(disk)], check=True)
        spec = VmSpec(qemu=assets.qemu, kernel=assets.kernel, guest_root=assets.guest_root, box_disk=disk,
                      box_disk_backing=image_disk, box_dir=box_dir, accel=detect_accel(runtime.options.accel),
                      cpus=1, memory_mib=memory_mib, hostname="floor", ready_port=2696, vhost_user_socket=None,
                      tsc_khz=runtime._tsc_khz(), transport="serial")
        launch = qemu_launch(spec)
        argv = launch.argv
        # python3 replaces the agent as init and prints on the console (its portal port stays unused).
        append = argv.index("-append") + 1
        argv[append] = argv[append].replace("init=/sbin/boxlite-init", "init=/sbin/boxlite-floor")
        console = argv.index("chardev:console")
        argv[console - 3:console + 1] = ["-serial", "stdio"]
        descriptors = OpenedDescriptors()
        descriptors.open(launch.descriptors)
        argv, fds = descriptors.spawn_args(argv)
        start = time.monotonic()
        proc = subprocess.Popen(argv, pass_fds=fds, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        descriptors.close_passed()
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.strip() == b"ready":
                    return time.monotonic() - start
            raise RuntimeError("the floor VM never printed ready")
        finally:
            proc.kill()
            proc.wait()
            descriptors.close()


async def exec_ms(box: boxlite.Box, *argv: str) -> float:
    start = time.perf_counter()
    execution = await box.exec(argv[0], list(argv[1:]))
    _, _, status = await execution.collect()
    assert status.exit_code == 0, status
    return (time.perf_counter() - start) * 1000


async def measure(run: Run, runtime: boxlite.Boxlite, runs: int) -> None:
    """runtime: templates off, so every create() boots cold."""
    image = runtime.images.get(boxlite.DEFAULT_IMAGE)
    run.host["accel"] = detect_accel(runtime.options.accel).name
    floors, colds = [], []
    for _ in range(runs):
        floors.append(floor_boot_s(runtime, image.disk_path) * 1000)
        start = time.perf_counter()
        box = await runtime.create(boxlite.BoxOptions())
        await exec_ms(box, "python3", "-c", "print(1)")
        colds.append((time.perf_counter() - start) * 1000)
        if box.info().boot != "cold":
            raise RuntimeError(f"the cold row's box started {box.info().boot!r}, not cold")
        await runtime.remove(box.id, force=True)
    box = await runtime.create(boxlite.BoxOptions())
    try:
        trues = [await exec_ms(box, "true") for _ in range(max(30, runs))]
        pythons = [await exec_ms(box, "python3", "-c", "pass") for _ in range(max(10, runs))]
        rec = box._refresh()
        rss = sum(process_rss_bytes(p) or 0 for p in box_process_ids(rec.shim_pid)) / 2**20
    finally:
        await runtime.remove(box.id, force=True)
    ratio = round(statistics.median(colds) / statistics.median(floors), 2)
    run.add("cold", row("cold start: create() with templates off -> first `python3 -c print(1)` result", "ms",
                        colds, floor=summary(floors), floor_name="bare QEMU boot to python3", cold_over_floor=ratio,
                        goal="within 1.5x of the floor", met=ratio <= 1.5, note=f"{ratio}x the floor"))
    warm = statistics.median(trues)
    run.add("warm_true", row("warm exec `true` in a running box", "ms", trues, goal="< 30 ms", met=warm < 30))
    run.add("warm_python", row("warm exec `python3 -c pass` in a running box", "ms", pythons))
    run.add("idle_rss", row("host RSS of one idle cold-booted box (shim + QEMU + passt), 512 MiB guest", "MiB",
                            [rss]))


async def main(run: Run, runs: int) -> None:
    with bench_home() as home:
        async with runtime_in(home, templates=False) as runtime:
            await measure(run, runtime, runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    run = Run("core", {"runs": args.runs})
    asyncio.run(main(run, args.runs))
    run.write(also=args.json)
    print(text_table(run.document()))
