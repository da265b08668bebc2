"""BoxMetrics and RuntimeMetrics are real numbers: measured, counted, and shared by processes of one home."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

import boxlite
from boxlite._execution import Execution
from codebox_kernel.notebook_box import default_box_name

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
        after = await box.metrics()
        assert after.commands == 3 and after.errors == 2
        # Host RSS of the box's processes (shim + QEMU), and the guest's own view, separately.
        assert after.mem is not None and after.mem > 20 * 2**20
        assert after.guest_memory_used_bytes is not None and 0 < after.guest_memory_used_bytes < 256 * 2**20
        assert after.mem != after.guest_memory_used_bytes
    finally:
        await runtime.remove(box.id, force=True)


async def _busy_loop(box: boxlite.Box) -> Execution:
    """A Python busy loop in the box, returned once it runs."""
    burn = await box.exec("python3", ["-c", "print('spinning', flush=True)\nwhile True: pass"])
    with anyio.fail_after(60):
        async for line in burn.stdout():
            assert line.strip() == "spinning"
            break
    return burn


@pytest.mark.anyio
async def test_cpu_is_over_the_last_interval_not_since_boot(runtime: boxlite.Boxlite) -> None:
    """A live panel asks once a second: a running busy loop reads high, and the interval after it ended reads
    low (an average since boot, a boot and a busy loop included, would still read high)."""
    box = await runtime.create(boxlite.BoxOptions(memory_mib=256))
    try:
        burn = await _busy_loop(box)
        spinning = time.monotonic()
        first = await box.metrics()  # no earlier call: over a short window inside the call
        busy = await box.metrics()  # since `first`
        while time.monotonic() - spinning < 4:  # a loop long enough to weigh in any average since boot
            busy = await box.metrics()
        await burn.kill()
        await burn.wait(timeout=30)
        await box.metrics()  # closes the interval in which the loop ended
        idle = await box.metrics()
        assert first.guest_cpu_percent is not None and first.guest_cpu_percent > 80, first
        assert busy.guest_cpu_percent is not None and busy.guest_cpu_percent > 80, busy
        assert idle.guest_cpu_percent is not None and idle.guest_cpu_percent < 25, idle
        # The host figure covers the same intervals: QEMU emulating the loop, then QEMU idling. (How much of a
        # host core the loop gets depends on what else the host runs.)
        assert busy.cpu is not None and idle.cpu is not None
        assert busy.cpu > 10 and idle.cpu < busy.cpu / 2, (busy.cpu, idle.cpu)
    finally:
        await runtime.remove(box.id, force=True)


@pytest.mark.anyio
async def test_codebox_cells_count_as_commands_and_failed_cells_as_errors(runtime: boxlite.Boxlite) -> None:
    async with boxlite.CodeBox(runtime=runtime) as cb:
        before = await cb.metrics()
        assert (await cb.run("x = 1")).error is None
        assert (await cb.run("1 / 0")).error is not None
        assert (await cb.run("print(x)")).error is None
        assert (await cb.run("import os; os._exit(3)")).error is not None  # the kernel died under the cell
        with pytest.raises(boxlite.TimeoutError):
            await cb.run("import time; time.sleep(60)", timeout=3)
        await (await cb.box.exec("false")).wait()  # commands outside the kernel count as before
        after = await cb.metrics()
        assert after.commands - before.commands == 6
        assert after.errors - before.errors == 4


def test_jupyter_cells_count_as_commands_and_failed_cells_as_errors(kernelspec: str) -> None:
    """Through a real Jupyter client: what the BoxLite Python kernel runs is in its box's metrics."""
    km, kc = start_new_kernel(kernel_name=kernelspec, startup_timeout=240, env=dict(os.environ))
    try:
        box = boxlite.SyncBoxlite.default().get(default_box_name(km.connection_file))
        assert box is not None
        before = box.metrics()
        statuses = [kc.execute_interactive(code, timeout=120)["content"]["status"]
                    for code in ("y = 2", "undefined_name", "print(y)", "raise ValueError('no')")]
        assert statuses == ["ok", "error", "ok", "error"]
        after = box.metrics()
        assert after.commands - before.commands == 4
        assert after.errors - before.errors == 2
        # Run All past an error: the two cells after it are aborted, never run: neither commands nor errors. Then
        # cells sent the moment an error is answered, which the box may abort and the kernel sends again: each
        # counts once.
        ids = [kc.execute(code) for code in ("raise ValueError('stop')", "print(1)", "print(2)")]
        assert [_reply_to(kc, msg_id)["content"]["status"] for msg_id in ids] == ["error", "aborted", "aborted"]
        for _ in range(3):
            assert _reply_to(kc, kc.execute("1 / 0"))["content"]["status"] == "error"
            assert _reply_to(kc, kc.execute("pass"))["content"]["status"] == "ok"
        final = box.metrics()
        assert final.commands - after.commands == 1 + 6
        assert final.errors - after.errors == 1 + 3
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def _reply_to(kc: BlockingKernelClient, msg_id: str) -> dict[str, Any]:
    """The shell reply to request `msg_id` (other replies, to requests already answered, are passed over)."""
    while True:
        reply = kc.get_shell_msg(timeout=120)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


@pytest.mark.anyio
async def test_guest_boot_ms_of_a_restored_box_is_measured_or_none(runtime: boxlite.Boxlite) -> None:
    source = await runtime.create(boxlite.BoxOptions(memory_mib=256, auto_remove=False))
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    try:
        info = await runtime.snapshots.create(source, name)
        assert info.guest_uptime_s is not None
        clone = await runtime.create(boxlite.BoxOptions(memory_mib=256, snapshot=name))
        try:
            m = await clone.metrics()
            assert m.boot == "restored"
            # On the guest's clock, from the snapshot's moment to the agent's answer: part of what create() took.
            assert m.guest_boot_ms is not None and m.total_create_ms is not None
            assert 0 < m.guest_boot_ms < m.total_create_ms, m
        finally:
            await runtime.remove(clone.id, force=True)
        # A snapshot whose clock was not read (the agent did not answer the ping before it was taken): nothing to
        # measure from, so no figure rather than a stand-in.
        meta = Path(info.path) / "meta.json"
        meta.chmod(0o644)
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "guest_uptime_s": None}))
        clone = await runtime.create(boxlite.BoxOptions(memory_mib=256, snapshot=name))
        try:
            m = await clone.metrics()
            assert m.boot == "restored" and m.guest_boot_ms is None, m
        finally:
            await runtime.remove(clone.id, force=True)
    finally:
        await runtime.remove(source.id, force=True)
        with contextlib.suppress(boxlite.BoxliteError):
            runtime.snapshots.remove(name)


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
