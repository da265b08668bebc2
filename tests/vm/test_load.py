"""Load without leaks: many sequential execs, many boxes with concurrent execs; afterwards the host process
has the descriptors, threads and memory it had (after warm-up), and the boxes left nothing behind."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

import anyio
import pytest

import boxlite
from boxlite._metrics import box_process_ids, process_rss_bytes

pytestmark = [pytest.mark.vm, pytest.mark.anyio, pytest.mark.slow]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    return process_rss_bytes(os.getpid()) or 0


async def guest_counts(box: boxlite.SimpleBox) -> tuple[int, int]:
    """(the agent's open descriptors, its threads), read inside the box (the agent is the command's parent)."""
    result = await box.exec("sh", "-c", "ls /proc/$PPID/fd | wc -l; ls /proc/$PPID/task | wc -l")
    fds, threads = (int(x) for x in result.stdout.split())
    return fds, threads


async def test_1000_sequential_execs_leak_nothing(box: boxlite.SimpleBox) -> None:
    for _ in range(50):  # warm-up: channels, thread pools, caches
        await box.exec("true")
    gc.collect()
    fds, threads, memory = open_fds(), threading.active_count(), rss()
    guest_fds, guest_threads = await guest_counts(box)
    for i in range(1000):
        result = await box.exec("true")
        assert result.exit_code == 0, i
    gc.collect()
    assert open_fds() <= fds + 2
    assert threading.active_count() <= threads + 1
    assert rss() < memory + 20 * 1024**2, (memory, rss())
    guest_fds_after, guest_threads_after = await guest_counts(box)
    assert guest_fds_after <= guest_fds + 2 and guest_threads_after <= guest_threads + 2
    children = await box.exec("sh", "-c", r'grep -l "^PPid:[[:space:]]*$PPID\$" /proc/[0-9]*/status | wc -l')
    assert int(children.stdout) == 1  # of the agent's children only this sh is left: no leftover commands


async def test_8_boxes_with_20_concurrent_execs_each(runtime: boxlite.Boxlite, vm_home: Path,
                                                     helpers: type) -> None:
    gc.collect()
    fds = open_fds()
    boxes: list[boxlite.Box] = []
    try:
        async with anyio.create_task_group() as tg:
            async def create() -> None:
                boxes.append(await runtime.create(boxlite.BoxOptions(memory_mib=256, auto_remove=False)))

            for _ in range(8):
                tg.start_soon(create)
        results: list[tuple[str, int, bytes]] = []

        async def run(box: boxlite.Box, n: int) -> None:
            out, _, status = await (await box.exec("sh", ["-c", f"echo {box.id[:6]}-{n}"])).collect()
            results.append((box.id, status.exit_code, out))

        with anyio.fail_after(600):
            async with anyio.create_task_group() as tg:
                for box in boxes:
                    for n in range(20):
                        tg.start_soon(run, box, n)
        assert len(results) == 160
        assert all(code == 0 for _, code, _ in results)
        assert sorted(out for _, _, out in results) == sorted(f"{b.id[:6]}-{n}\n".encode() for b in boxes
                                                             for n in range(20))
        metrics = await runtime.metrics()
        assert metrics.num_running_boxes >= 8
    finally:
        families = [box_process_ids(b.info().shim_pid) for b in boxes]
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for box in boxes:
                    tg.start_soon(runtime.remove, box.id, True)
    # Every VM, shim and vsock device is gone, and so is every box directory.
    assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for f in families for p in f), timeout=10)
    assert not [b for b in boxes if (vm_home / "boxes" / b.id).exists()]
    gc.collect()
    assert open_fds() <= fds + 4
