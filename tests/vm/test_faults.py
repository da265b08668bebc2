"""Hostile code and faults: each ends the box (or the command) only, with a clear error, and loses nothing.

Every test here boots its own box: the shared one must not be the victim.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import boxlite
from boxlite._metrics import box_process_ids, process_rss_bytes
from boxlite.engine import jail

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


def _is_root() -> bool:
    return os.geteuid() == 0


@contextlib.asynccontextmanager
async def victim(runtime: boxlite.Boxlite, **options: object) -> AsyncIterator[boxlite.Box]:
    box = await runtime.create(boxlite.BoxOptions(auto_remove=False, **options))  # type: ignore[arg-type]
    try:
        yield box
    finally:
        with contextlib.suppress(boxlite.BoxliteError):
            await runtime.remove(box.id, force=True)


async def test_vm_killed_mid_exec_fails_the_exec_within_2s(runtime: boxlite.Boxlite, helpers: type) -> None:
    async with victim(runtime) as box:
        info = await box.info()
        family = box_process_ids(info.shim_pid)
        running = await box.exec("sleep", ["100"])
        os.kill(info.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises((boxlite.PortalError, boxlite.EngineError)):
            with anyio.fail_after(10):
                await running.wait()
        assert time.monotonic() - started < 2.0
        assert helpers.wait_until(lambda: box.info().status == "failed", timeout=5)
        assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in family), timeout=5)
        assert not list(Path(info.box_dir).glob("*.sock"))


async def test_kernel_panic_in_the_guest_ends_that_box_only(runtime: boxlite.Boxlite, box: boxlite.SimpleBox,
                                                            helpers: type) -> None:
    async with victim(runtime) as doomed:
        # Killing the agent makes init exit: the guest kernel panics ("Attempted to kill init!").
        execution = await doomed.exec("sh", ["-c", "kill -KILL $PPID; sleep 30"])
        with pytest.raises((boxlite.PortalError, boxlite.EngineError)):
            with anyio.fail_after(15):
                await execution.wait()
        assert helpers.wait_until(lambda: doomed.info().status == "failed", timeout=10)
        error = doomed.info().error or ""
        assert "exited unexpectedly" in error and "panic" in error.lower(), error
        with pytest.raises(boxlite.EngineError):
            await doomed.exec("true")
    assert (await box.exec("echo", "others-unharmed")).stdout == "others-unharmed\n"


async def test_fork_bomb_ends_with_its_command(runtime: boxlite.Boxlite) -> None:
    async with victim(runtime, memory_mib=256) as box:
        # The classic bomb, kept in the command's process group (the timeout kills the whole group). The guest's
        # task limit makes its forks fail before memory runs out, so the agent keeps running.
        execution = await box.exec("sh", ["-c", "bomb() { bomb | bomb; }; bomb"], timeout=8)
        with anyio.fail_after(90):
            status = await execution.wait()
        assert status.timed_out or status.exit_code != 0
        with anyio.fail_after(60):
            out, _, after = await (await box.exec("echo", ["alive"])).collect()
        assert (out, after.exit_code) == (b"alive\n", 0)
        assert box.info().status == "running"


async def test_disk_filler_hits_the_box_disk_limit_not_the_host(runtime: boxlite.Boxlite) -> None:
    async with victim(runtime, disk_size_gb=1) as box:
        with anyio.fail_after(180):
            out, err, status = await (await box.exec(
                "sh", ["-c", "dd if=/dev/zero of=/fill bs=1M 2>&1; df -m / | tail -1"])).collect()
        assert b"No space left on device" in out + err
        disk = Path(box.info().box_dir) / "disk.qcow2"
        assert disk.stat().st_size < 1.3 * 1024**3  # the overlay cannot outgrow the box's virtual disk
        out, _, status = await (await box.exec("sh", ["-c", "rm /fill && echo freed"])).collect()
        assert (out, status.exit_code) == (b"freed\n", 0)


def host_oom_kills() -> list[dict[str, str]]:
    """The host kernel's reports of its OOM killer's kills, from its log ("oom-kill:constraint=...,pid=N,...")."""
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    return [dict(field.partition("=")[::2] for field in line.split("oom-kill:", 1)[1].split(","))
            for line in log.splitlines() if "oom-kill:" in line]


# Writes every page it takes (a zero-filled allocation may never touch the guest's memory).
HOG = "chunks = []\nwhile True:\n    chunks.append(bytearray(b'\\x01') * (16 << 20))"
MIB = 1024 * 1024


async def test_memory_hog_is_stopped_inside_the_box(runtime: boxlite.Boxlite) -> None:
    async with victim(runtime, memory_mib=256) as box:
        hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))"
        with anyio.fail_after(120):
            _, err, status = await (await box.exec("python3", ["-c", hog])).collect()
        assert status.exit_code != 0  # MemoryError, or killed by the guest's OOM killer
        assert b"MemoryError" in err or status.signal == signal.SIGKILL
        info = box.info()
        rss = sum(r for r in (process_rss_bytes(p) for p in box_process_ids(info.shim_pid)) if r)
        # Guest memory plus the VMM's own overhead, never more: the cap boxlite gives a box's group. Measured:
        # 462 MiB for a cold-booted box (its guest zeroes all its RAM at boot, and a 128 MiB translation cache),
        # 389 MiB for a restored one.
        assert rss < (256 + jail.OVERHEAD_MIB) * MIB
        assert (await (await box.exec("true")).wait()).exit_code == 0


@pytest.mark.skipif(not _is_root(), reason="boxes get a control group only when boxlite runs as root")
async def test_the_host_cgroup_caps_a_box_whose_guest_cannot(runtime: boxlite.Boxlite, box: boxlite.SimpleBox,
                                                             box_cgroup: Callable[[int], Any], helpers: type) -> None:
    """The host-side cap, not the guest's OOM killer. Under the cap boxlite sets (guest RAM + the VMM's
    overhead) a hog is the guest's problem: its memory is accounted to the box's group and the host kills
    nothing. In a second box the cap is lowered below what its guest may use, so the guest's OOM killer cannot
    keep it within: the host's must end that box's VM, and only it. That box must be restored from the template
    the first one left: only a restored guest has RAM the host has not backed yet (a cold boot zeroes it all,
    init_on_free), so only there can the hog make QEMU grow."""
    async with victim(runtime, memory_mib=256) as hogged:
        group = box_cgroup(hogged.info().pid)
        cap = int(group.memory_max.read_text())
        assert cap == (256 + jail.OVERHEAD_MIB) * MIB
        with anyio.fail_after(120):
            _, _, status = await (await hogged.exec("python3", ["-c", HOG])).collect()
        assert status.exit_code != 0  # stopped by the guest
        peak = int(group.memory_peak.read_text())
        assert peak >= 256 * MIB, peak  # the guest's RAM, all of it in use by now, is charged to the group
        assert peak <= cap and group.oom_kills() == 0  # and stayed under the cap: the host killed nothing
        assert hogged.info().status == "running"

    async with victim(runtime, memory_mib=256) as capped:
        assert capped.info().boot == "restored", "no template was left by the first box: see the docstring"
        qemu = capped.info().pid
        group = box_cgroup(qemu)
        low = int(group.memory_current.read_text()) + 32 * MIB
        group.memory_max.write_text(f"{low}\n")
        hog = await capped.exec("python3", ["-c", HOG])
        with pytest.raises((boxlite.PortalError, boxlite.EngineError)), anyio.fail_after(120):
            await hog.wait()
        assert helpers.wait_until(lambda: capped.info().status == "failed", timeout=15)
        assert "code -9" in (capped.info().error or ""), capped.info().error  # SIGKILLed
        # By the host's OOM killer, for this box's memory group (removed by the shim by now; the kernel's
        # report stays), not the guest's (which the host never sees).
        kills = [k for k in host_oom_kills() if k.get("oom_memcg", "").endswith(f"/{jail.GROUP}/{capped.id}")]
        assert [(k["constraint"], k["pid"]) for k in kills] == [("CONSTRAINT_MEMCG", str(qemu))], host_oom_kills()[-3:]
    assert (await box.exec("echo", "others-unharmed")).stdout == "others-unharmed\n"


CREATE_DETACHED_THEN_DIE = textwrap.dedent("""
    import asyncio, os, signal, sys, boxlite
    async def main():
        rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
        await rt.create(boxlite.BoxOptions(detach=True, auto_remove=False), name=sys.argv[2])
        print("created", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    asyncio.run(main())
""")


async def test_boxes_survive_a_killed_caller_and_are_reattached(runtime: boxlite.Boxlite, vm_home: Path) -> None:
    result = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-c", CREATE_DETACHED_THEN_DIE, str(vm_home), "orphan-of-kill9"],
        capture_output=True, text=True, timeout=120))
    assert result.returncode == -signal.SIGKILL and result.stdout == "created\n", result.stderr
    box = await runtime.get("orphan-of-kill9")
    assert box is not None
    try:
        assert box.info().status == "running"
        out, _, _ = await (await box.exec("echo", ["reattached"])).collect()
        assert out == b"reattached\n"
    finally:
        await runtime.remove(box.id, force=True)


CHURN = textwrap.dedent("""
    import asyncio, sys, boxlite
    async def main():
        rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
        for i in range(int(sys.argv[3])):
            box = await rt.create(boxlite.BoxOptions(auto_remove=False), name=f"{sys.argv[2]}-{i}")
            await (await box.exec("true")).wait()
            await box.stop()
            await rt.remove(box.id)
        print("ok")
    asyncio.run(main())
""")


async def test_two_processes_churning_boxes_keep_the_store_consistent(runtime: boxlite.Boxlite,
                                                                      vm_home: Path) -> None:
    before = {b.id for b in await runtime.list_info()}
    procs = [subprocess.Popen([sys.executable, "-c", CHURN, str(vm_home), f"churn{n}", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (1, 2)]
    outputs = await anyio.to_thread.run_sync(lambda: [p.communicate(timeout=300) for p in procs])
    assert [p.returncode for p in procs] == [0, 0], outputs
    after = await runtime.list_info()
    assert {b.id for b in after} == before  # nothing lost, nothing phantom
    assert not [d for d in (vm_home / "boxes").iterdir() if d.name not in before]
    metrics = await runtime.metrics()
    assert metrics.num_running_boxes == sum(1 for b in after if b.status == "running")


@pytest.mark.skipif(not _is_root(), reason="needs root to mount a small tmpfs as a full disk")
async def test_full_home_disk_is_a_storage_error_and_leaves_nothing(vm_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "tiny-home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(home)], check=True)
    try:
        for sub in ("assets", "cache", "images"):
            (home / sub).symlink_to((vm_home / sub).resolve(), target_is_directory=True)
        rt = boxlite.Boxlite(boxlite.Options(home_dir=home))
        await rt.list_info()  # the store exists
        fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT, 0o600)  # fill the disk to the last block
        for size in (65536, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
        os.close(fd)
        with pytest.raises(boxlite.StorageError):
            await rt.create(boxlite.BoxOptions())
        (home / "filler").unlink()
        assert await rt.list_info() == []  # nothing half-created is left in the store
        assert not any((home / "boxes").iterdir()) if (home / "boxes").exists() else True
        await rt.close()
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
