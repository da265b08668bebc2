"""The benchmark suite: every headline number of boxlite on this host, each next to its floor from the same run.

    python3 bench/run.py [--runs N] [--execs N] [--json FILE] [--quick]

Prints a table, then the same results as JSON (also written to --json FILE). Every row is a median with its
min and max over --runs repetitions (the 1000-exec throughput row runs once per repetition of its own).

Rows (and their floors, measured in the same run):
  cold_start        create() with templates off -> first exec result (`true`)   floor: bare QEMU boot to init
  snapshot_start    create() restored from the template -> first exec result   floor: bare QEMU restore
  codebox_ready     CodeBox start -> first run() result                         (when boxlite.CodeBox exists)
  warm_exec_true    exec `true` in a running box                                floor: portal Ping round trip
  warm_run_1plus1   CodeBox.run("1+1") in a running CodeBox                     (when boxlite.CodeBox exists)
  warm_python       exec `python3 -c 1+1` in a running box                      floor: portal Ping round trip
  idle_box_rss      host RSS of one idle restored box (shim + QEMU), 256 MiB    floor: bare restored QEMU
                    guest, after create and one command, 2 s idle
  concurrent_8      8 boxes created at once -> all answered an exec             floor: one snapshot start
  exec_1000         1000 sequential execs of `true` (execs per second)          floor: 1000 Pings per second

Goals on a TCG host: snapshot_start < 250 ms and >= 10x faster than cold_start; codebox_ready < 500 ms;
idle_box_rss < 150 MiB; concurrent_8 < 3 s. The machine may be shared: numbers are noisy, ratios are fairer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

import boxlite
from boxlite._metrics import box_process_ids, process_rss_bytes
from boxlite.engine.qmp import Qmp

MEMORY_MIB = 256
OPTS = boxlite.BoxOptions(memory_mib=MEMORY_MIB)


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(samples), 1), "min": round(min(samples), 1),
            "max": round(max(samples), 1), "n": len(samples)}


async def exec_true(box: boxlite.Box, *argv: str) -> None:
    argv = argv or ("true",)
    _, err, status = await (await box.exec(argv[0], list(argv[1:]))).collect()
    if status.exit_code != 0:
        raise RuntimeError(f"{argv} failed in the benchmark: {err!r}")


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return (time.perf_counter() - start) * 1000


async def start_to_first_exec(runtime: boxlite.Boxlite) -> tuple[float, str]:
    start = time.perf_counter()
    box = await runtime.create(OPTS)
    await exec_true(box)
    ms = (time.perf_counter() - start) * 1000
    boot = box.info().boot or "?"
    await runtime.remove(box.id, force=True)
    return ms, boot


def bare_restore_ms(template: Any) -> tuple[float, int]:
    """QEMU alone restoring the template (same argv a box uses): launch -> VM running. Returns (ms, RSS bytes)."""
    from boxlite.engine import VmSpec, detect_accel
    from boxlite.engine.descriptors import OpenedDescriptors
    from boxlite.engine.qemu import qcow2_backing_file, qemu_launch
    from boxlite.provision import find_assets

    assets = find_assets(boxlite.Boxlite().home)
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


async def suite(runs: int, execs: int) -> dict[str, Any]:
    cold_rt = boxlite.Boxlite(boxlite.Options(templates=False))
    rt = boxlite.Boxlite()
    image = rt.images.get(boxlite.DEFAULT_IMAGE)
    # Make sure the template exists (the first box of its kind boots cold and leaves it behind).
    box = await rt.create(OPTS)
    await rt.remove(box.id, force=True)
    key = rt.snapshots.key_for(OPTS, image, "")
    template = rt.snapshots.find_template(key) if key else None
    if template is None:
        raise RuntimeError("no start template was made; is BOXLITE_TRANSPORT set to vsock?")

    rows: dict[str, dict[str, Any]] = {}
    floors: dict[str, list[float]] = {"boot": [], "restore": [], "ping": [], "ping_rate": []}
    samples: dict[str, list[float]] = {k: [] for k in ("cold_start", "snapshot_start", "warm_exec_true",
                                                        "warm_python", "idle_box_rss", "concurrent_8",
                                                        "exec_1000")}
    restore_rss: list[float] = []
    boots: set[str] = set()
    for _ in range(runs):
        floors["boot"].append(floor_boot_s(rt, image.disk_path, MEMORY_MIB) * 1000)
        ms, _ = await start_to_first_exec(cold_rt)
        samples["cold_start"].append(ms)
        restore_ms, rss = await asyncio.to_thread(bare_restore_ms, template)
        floors["restore"].append(restore_ms)
        restore_rss.append(rss / 2**20)
        ms, boot = await start_to_first_exec(rt)
        boots.add(boot)
        samples["snapshot_start"].append(ms)

    box = await rt.create(OPTS)
    try:
        await exec_true(box)
        await asyncio.sleep(2)  # idle: created, answered one command, nothing running
        pids = box_process_ids(box._refresh().shim_pid)
        samples["idle_box_rss"] = [sum(process_rss_bytes(p) or 0 for p in pids) / 2**20]
        for _ in range(3):  # first uses translate the guest's code paths under TCG: not "warm"
            await exec_true(box, "python3", "-c", "1+1")
        n = max(runs * 6, 30)
        for _ in range(n):
            floors["ping"].append(await timed(lambda: box._client.ping()))
            samples["warm_exec_true"].append(await timed(lambda: exec_true(box)))
        for _ in range(max(runs * 2, 10)):
            samples["warm_python"].append(await timed(lambda: exec_true(box, "python3", "-c", "1+1")))
        for _ in range(max(1, runs // 3)):
            start = time.perf_counter()
            for _ in range(execs):
                await box._client.ping()
            floors["ping_rate"].append(execs / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(execs):
                await exec_true(box)
            samples["exec_1000"].append(execs / (time.perf_counter() - start))
    finally:
        await rt.remove(box.id, force=True)

    for _ in range(max(1, runs // 2)):
        async def one() -> None:
            b = await rt.create(OPTS)
            await exec_true(b)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(8)))
        samples["concurrent_8"].append((time.perf_counter() - start) * 1000)
        for info in await rt.list_info():
            await rt.remove(info.id, force=True)

    codebox = await codebox_rows(rt, runs, execs)
    cold, snap = summary(samples["cold_start"]), summary(samples["snapshot_start"])
    rows["cold_start"] = {"unit": "ms", **cold, "floor": summary(floors["boot"]), "floor_name": "bare QEMU boot"}
    rows["snapshot_start"] = {"unit": "ms", **snap, "floor": summary(floors["restore"]),
                              "floor_name": "bare QEMU restore", "boot": sorted(boots),
                              "speedup_vs_cold": round(cold["median"] / snap["median"], 1),
                              "goal": "< 250 ms and >= 10x faster than cold",
                              "met": snap["median"] < 250 and cold["median"] / snap["median"] >= 10}
    rows["codebox_ready"] = codebox["codebox_ready"]
    ping = summary(floors["ping"])
    rows["warm_exec_true"] = {"unit": "ms", **summary(samples["warm_exec_true"]), "floor": ping,
                              "floor_name": "portal Ping round trip"}
    rows["warm_run_1plus1"] = codebox["warm_run_1plus1"]
    rows["warm_python"] = {"unit": "ms", **summary(samples["warm_python"]), "floor": ping,
                           "floor_name": "portal Ping round trip"}
    rss = summary(samples["idle_box_rss"])
    rows["idle_box_rss"] = {"unit": "MiB", **rss, "floor": summary(restore_rss), "floor_name": "bare restored QEMU",
                            "guest_mib": MEMORY_MIB, "goal": "< 150 MiB", "met": rss["median"] < 150}
    conc = summary(samples["concurrent_8"])
    rows["concurrent_8"] = {"unit": "ms", **conc, "floor": snap, "floor_name": "one snapshot start",
                            "goal": "< 3000 ms", "met": conc["median"] < 3000}
    rows["exec_1000"] = {"unit": "execs/s", **summary(samples["exec_1000"]), "execs": execs,
                         "floor": summary(floors["ping_rate"]), "floor_name": "Pings/s"}
    return {"accel": boxlite.Boxlite()._accel().name, "runs": runs, "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(), "rows": rows}


async def codebox_rows(rt: boxlite.Boxlite, runs: int, execs: int) -> dict[str, dict[str, Any]]:
    """CodeBox ready (restored from its template, made first and not counted) and the warm run("1+1") round trip
    next to its floor: the same request sent to the same kernel from inside the box by the lightest client."""
    from bench_codebox import INBOX_CLIENT

    from guest import zmtp

    async with boxlite.CodeBox(runtime=rt):
        pass  # the first CodeBox of its kind boots cold and leaves the template
    ready, boots = [], set()
    for _ in range(runs):
        start = time.perf_counter()
        async with boxlite.CodeBox(runtime=rt) as cb:
            await cb.run("1+1")
            ready.append((time.perf_counter() - start) * 1000)
            boots.add(str(cb.box.info().boot))
    async with boxlite.CodeBox(runtime=rt) as cb:
        for _ in range(3):
            await cb.run("1+1")
        warm = [await timed(lambda: cb.run("1+1")) for _ in range(min(execs, 50))]
        assert cb.kernel.info is not None
        await cb.files.write("/tmp/boxlite_zmtp.py", Path(zmtp.__file__).read_text())
        result = await cb.exec("python3", "-c", INBOX_CLIENT, cb.kernel.info.connection_file, str(len(warm)),
                               timeout=600)
        floor = [t * 1000 for t in json.loads(result.stdout)] if result.exit_code == 0 else []
    ready_s = summary(ready)
    warm_s = summary(warm)
    row: dict[str, Any] = {"unit": "ms", **warm_s, "floor_name": "same request from inside the box"}
    if floor:
        row["floor"] = summary(floor)
        row["bridge_overhead_ms"] = round(warm_s["median"] - row["floor"]["median"], 1)
        row["goal"] = "bridge overhead < 5 ms"
        row["met"] = row["bridge_overhead_ms"] < 5
    return {
        "codebox_ready": {"unit": "ms", **ready_s, "boot": sorted(boots), "goal": "< 500 ms",
                          "met": ready_s["median"] < 500},
        "warm_run_1plus1": row,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"boxlite bench ({result['accel']}, {result['cpus']} host cpus, runs={result['runs']}, "
             f"load avg at end {result['load_avg_at_end'][0]:.2f}; a shared machine makes numbers noisy)",
             f"{'row':<16} {'median':>9} {'min':>9} {'max':>9} {'unit':<8} {'floor (median)':>15}  floor / notes"]
    for name, row in result["rows"].items():
        if row.get("available") is False:
            lines.append(f"{name:<16} {'-':>9} {'-':>9} {'-':>9} {row['unit']:<8} {'':>15}  {row['note']}")
            continue
        floor = row.get("floor", {})
        notes = row.get("floor_name", "")
        if "speedup_vs_cold" in row:
            notes += f"; {row['speedup_vs_cold']}x faster than cold; restored: {row['boot']}"
        if "goal" in row:
            notes += f"; goal {row['goal']}: {'met' if row.get('met') else 'NOT met'}"
        lines.append(f"{name:<16} {row['median']:>9} {row['min']:>9} {row['max']:>9} {row['unit']:<8} "
                     f"{floor.get('median', ''):>15}  {notes}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--execs", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="--runs 2 --execs 200")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.execs = 2, 200
    result = asyncio.run(suite(args.runs, args.execs))
    print(table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
