"""Core timings of boxlite on this host, as medians of several runs, against the floor of a bare QEMU boot.
(The whole suite, snapshots included, is bench/run.py; this module also provides its boot floor.)

    python3 bench/bench_core.py [--runs N] [--json FILE]

Measures:
  floor       bare QEMU (same kernel, guest root, machine) from launch to python3 printing "ready" on the console
  cold        runtime.create() -> first exec result of `python3 -c 'print(1)'`
  warm_true   exec of `true` in a running box
  warm_python exec of `python3 -c pass` in a running box
  idle_rss    host RSS of one idle box: the shim, QEMU and the vsock device together
Goals on a TCG host: cold within 1.5x of the floor; warm `true` under 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

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


async def main(runs: int) -> dict[str, float]:
    runtime = boxlite.Boxlite()
    image = runtime.images.get(boxlite.DEFAULT_IMAGE)
    floors, colds = [], []
    for _ in range(runs):
        floors.append(floor_boot_s(runtime, image.disk_path))
        start = time.monotonic()
        box = await runtime.create(boxlite.BoxOptions())
        await exec_ms(box, "python3", "-c", "print(1)")
        colds.append(time.monotonic() - start)
        await runtime.remove(box.id, force=True)
    box = await runtime.create(boxlite.BoxOptions())
    try:
        trues = [await exec_ms(box, "true") for _ in range(max(30, runs))]
        pythons = [await exec_ms(box, "python3", "-c", "pass") for _ in range(max(10, runs))]
        rec = box._refresh()
        rss = sum(process_rss_bytes(p) or 0 for p in box_process_ids(rec.shim_pid))
    finally:
        await runtime.remove(box.id, force=True)
    floor, cold = statistics.median(floors), statistics.median(colds)
    return {
        "accel": detect_accel(runtime.options.accel).name,
        "floor_boot_s": round(floor, 3),
        "cold_create_to_first_exec_s": round(cold, 3),
        "cold_over_floor": round(cold / floor, 2),
        "warm_true_ms": round(statistics.median(trues), 1),
        "warm_python_ms": round(statistics.median(pythons), 1),
        "idle_box_rss_mib": round(rss / 2**20, 1),
        "runs": runs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(main(args.runs))
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"goals: cold_over_floor <= 1.5 ({'met' if result['cold_over_floor'] <= 1.5 else 'NOT met'}); "
          f"warm_true_ms < 30 ({'met' if result['warm_true_ms'] < 30 else 'NOT met'})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
