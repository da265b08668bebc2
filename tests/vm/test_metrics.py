"""BoxMetrics and RuntimeMetrics are real numbers: measured, counted, and shared by processes of one home."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import boxlite

pytestmark = pytest.mark.vm


@pytest.mark.anyio
async def test_box_metrics_are_measured(runtime: boxlite.Boxlite) -> None:
    box = await runtime.create(boxlite.BoxOptions(memory_mib=256))
    try:
        before = await box.metrics()
        assert before.commands == 0 and before.errors == 0
        assert before.total_create_ms is not None and before.total_create_ms > 0
        assert before.guest_boot_ms is not None and before.guest_boot_ms > 0
        assert before.boot in ("cold", "restored")
        for argv in (["true"], ["false"], ["sh", "-c", "exit 3"]):
            await (await box.exec(argv[0], argv[1:])).collect()
        # Keep the guest busy between two samples: the CPU figure is over that interval, of one host core.
        burn = await box.exec("python3", ["-c", "import time\nt=time.time()\nwhile time.time()-t<1.5: pass"])
        await asyncio.sleep(0.3)
        await box.metrics()
        await asyncio.sleep(1.0)
        busy = await box.metrics()
        await burn.wait()
        assert busy.commands == 4 and busy.errors == 2
        assert busy.cpu is not None and busy.cpu > 30, busy.cpu
        # Host RSS of the box's processes (shim + QEMU), and the guest's own view, separately.
        assert busy.mem is not None and busy.mem > 20 * 2**20
        assert busy.guest_memory_used_bytes is not None and 0 < busy.guest_memory_used_bytes < 256 * 2**20
        assert busy.mem != busy.guest_memory_used_bytes
    finally:
        await runtime.remove(box.id, force=True)


@pytest.mark.anyio
async def test_runtime_metrics_count_across_processes(runtime: boxlite.Boxlite, vm_home: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(memory_mib=256, detach=True, auto_remove=False))
    try:
        before = await runtime.metrics()
        assert before.running >= 1
        # Another process, same home: its commands and errors count in this runtime's totals.
        script = (
            "import asyncio, boxlite\n"
            "async def main():\n"
            "    rt = boxlite.Boxlite()\n"
            f"    box = await rt.get({box.id!r})\n"
            "    for argv in (['true'], ['false']):\n"
            "        await (await box.exec(argv[0], argv[1:])).collect()\n"
            "    await box._client.close()\n"
            "asyncio.run(main())\n"
        )
        env = {**os.environ, "BOXLITE_HOME": str(vm_home)}
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], env=env, check=True, timeout=120)
        after = await runtime.metrics()
        assert after.commands == before.commands + 2
        assert after.errors == before.errors + 1
        assert after.boxes_created == before.boxes_created
        await box.stop()
        stopped = await runtime.metrics()
        assert stopped.running == before.running - 1
    finally:
        await runtime.remove(box.id, force=True)


@pytest.mark.anyio
async def test_a_killed_box_counts_as_failed_once(runtime: boxlite.Boxlite) -> None:
    box = await runtime.create(boxlite.BoxOptions(memory_mib=256, auto_remove=False))
    try:
        before = await runtime.metrics()
        rec = box._refresh()
        assert rec.shim_pid is not None
        os.kill(rec.shim_pid, 9)
        for _ in range(100):
            if box.info().status == "failed":
                break
            await asyncio.sleep(0.05)
        assert box.info().status == "failed"
        after = await runtime.metrics()
        assert after.boxes_failed == before.boxes_failed + 1
        assert after.running == before.running - 1
    finally:
        await runtime.remove(box.id, force=True)
