"""A box's life: create, find, stop, start, remove, use from other processes, and the VM dying under it.

Each test boots its own box (about 4 s each under emulation), so there are few of them and each checks a lot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

import boxlite
from boxlite._metrics import box_process_ids

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("qemu-tcg", "qemu-kvm")


def cmdline(pid: int | None) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def box_processes(box_dir: str) -> list[int]:
    """Host processes whose command line mentions this box's directory (shim, QEMU, vsock device), or any
    box directory under a home's boxes/ when given that."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and box_dir in cmdline(int(entry.name)):
            found.append(int(entry.name))
    return found


async def root_size(box: boxlite.Box) -> int:
    execution = await box.exec("python3", ["-c", "import os; s = os.statvfs('/'); print(s.f_blocks * s.f_frsize)"])
    out, err, status = await execution.collect()
    assert status.exit_code == 0, err
    return int(out)


def kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def remove_quietly(runtime: boxlite.Boxlite, box_id: str) -> None:
    with contextlib.suppress(boxlite.BoxliteError):
        await runtime.remove(box_id, force=True)


async def test_create_find_duplicate_remove_and_metrics(runtime: boxlite.Boxlite, vm_home: Path,
                                                        helpers: type) -> None:
    metrics_before = await runtime.metrics()
    box = await runtime.create(boxlite.BoxOptions(auto_remove=False, env={"BOX_LEVEL": "box"}, working_dir="/tmp",
                                                  user="nobody"), name="life-main")
    try:
        info = await box.info()
        assert info.name == "life-main"
        assert info.status == "running"
        assert info.engine in ENGINES
        assert info.engine_reason
        assert helpers.pid_alive(info.pid) and "qemu-system" in cmdline(info.pid)
        assert helpers.pid_alive(info.shim_pid) and "boxlite._shim" in cmdline(info.shim_pid)
        assert Path(info.box_dir).is_dir()
        assert Path(info.box_dir).parent == vm_home / "boxes"
        assert info.guest_boot_ms and info.guest_boot_ms > 0

        metrics_created = await runtime.metrics()
        assert metrics_created.boxes_created_total == metrics_before.boxes_created_total + 1
        assert metrics_created.num_running_boxes >= 1

        # Found by name, id and unique id prefix; unknown names are None / NotFoundError.
        for key in ("life-main", box.id, box.id[:6]):
            found = await runtime.get(key)
            assert found is not None and found.id == box.id, key
        assert await runtime.get("no-such-box") is None
        with pytest.raises(boxlite.NotFoundError) as missing:
            await runtime.remove("no-such-box")
        assert str(missing.value).startswith("box not found: no-such-box")

        # A taken name fails before anything is made: no second box dir, record or VM.
        dirs_before = sorted(p.name for p in (vm_home / "boxes").iterdir())
        processes_before = box_processes(str(vm_home / "boxes"))
        counted_before = await runtime.metrics()
        with pytest.raises(boxlite.AlreadyExistsError) as dup:
            await runtime.create(boxlite.BoxOptions(), name="life-main")
        assert "life-main" in str(dup.value)
        # Had a VM been started and then cleaned up, create() would have counted a failed box.
        counted_after = await runtime.metrics()
        assert counted_after.boxes_failed_total == counted_before.boxes_failed_total
        assert counted_after.boxes_created_total == counted_before.boxes_created_total
        assert sorted(p.name for p in (vm_home / "boxes").iterdir()) == dirs_before
        assert not set(box_processes(str(vm_home / "boxes"))) - set(processes_before), \
            "a VM was started for the duplicate name"
        assert [i.id for i in await runtime.list_info() if i.name == "life-main"] == [box.id]

        # The box's env, working_dir and user are the defaults of its commands; a command's own win.
        show = 'echo "$BOX_LEVEL $(pwd) $(id -u) $LANG"'
        out, err, _ = await (await box.exec("sh", ["-c", show])).collect()
        assert out == b"box /tmp 65534 C.UTF-8\n", err
        out, err, _ = await (await box.exec("sh", ["-c", show], env={"BOX_LEVEL": "call"}, user="root",
                                            cwd="/")).collect()
        assert out == b"call / 0 C.UTF-8\n", err

        # Commands are counted by the runtime.
        metrics_created = await runtime.metrics()
        await (await box.exec("true")).wait()
        await (await box.exec("false")).wait()
        metrics_exec = await runtime.metrics()
        assert metrics_exec.total_commands_executed == metrics_created.total_commands_executed + 2
        assert metrics_exec.total_exec_errors == metrics_created.total_exec_errors + 1

        # A running box is not removed without force.
        with pytest.raises(boxlite.InvalidStateError):
            await runtime.remove(box.id)
        assert (await box.info()).status == "running"

        # force=True stops and removes it: no process, no directory, no record.
        with anyio.fail_after(60):
            await runtime.remove(box.id, force=True)
        assert helpers.wait_until(lambda: not helpers.pid_alive(info.pid) and not helpers.pid_alive(info.shim_pid),
                                  timeout=5)
        assert box_processes(info.box_dir) == []
        assert not Path(info.box_dir).exists()
        assert await runtime.get(box.id) is None
        assert await runtime.get("life-main") is None
    finally:
        await remove_quietly(runtime, box.id)


async def test_stop_start_keeps_the_disk(runtime: boxlite.Boxlite, helpers: type) -> None:
    box = await runtime.create(boxlite.BoxOptions(auto_remove=False, name="life-restart", disk_size_gb=2))
    try:
        assert await root_size(box) > 1.8 * 1024**3  # the filesystem fills the 2 GB the box asked for
        write = await box.exec("sh", ["-c", "echo persisted-data > /root/keep.txt"])
        assert (await write.wait()).exit_code == 0
        first = await box.info()

        with anyio.fail_after(60):
            await box.stop()
        info = await box.info()
        assert info.status == "stopped"
        assert info.pid is None and info.shim_pid is None
        assert helpers.wait_until(lambda: not helpers.pid_alive(first.pid) and not helpers.pid_alive(first.shim_pid),
                                  timeout=5)
        assert box_processes(first.box_dir) == []
        assert Path(first.box_dir, "disk.qcow2").exists()

        # No silent boot: exec on a stopped box is refused and the box stays stopped.
        with pytest.raises(boxlite.InvalidStateError):
            await box.exec("true")
        assert (await box.info()).status == "stopped"
        # Stopping a stopped box is a no-op.
        await box.stop()
        assert (await box.info()).status == "stopped"

        with anyio.fail_after(120):
            await box.start()
        info = await box.info()
        assert info.status == "running"
        assert helpers.pid_alive(info.pid) and info.pid != first.pid
        read = await box.exec("cat", ["/root/keep.txt"])
        out, err, status = await read.collect()
        assert (out, status.exit_code) == (b"persisted-data\n", 0), err
        assert await root_size(box) > 1.8 * 1024**3
        # Starting a running box does nothing.
        await box.start()
        assert (await box.info()).pid == info.pid
    finally:
        await remove_quietly(runtime, box.id)


async def test_simplebox_context_removes_the_box(runtime: boxlite.Boxlite, helpers: type) -> None:
    async with boxlite.SimpleBox(runtime=runtime, name="life-simple") as sb:
        r = await sb.exec("echo", "inside")
        assert r.stdout == "inside\n"
        info = await sb.info()
        assert info.status == "running"
    assert await runtime.get("life-simple") is None
    assert helpers.wait_until(lambda: not helpers.pid_alive(info.pid) and not helpers.pid_alive(info.shim_pid),
                              timeout=10)
    assert not Path(info.box_dir).exists()
    with pytest.raises(boxlite.InvalidStateError):
        sb.box  # noqa: B018 - the property raises once the box is gone


CHILD = textwrap.dedent("""
    import sys
    import anyio
    import boxlite

    async def main():
        runtime = boxlite.Boxlite()  # BOXLITE_HOME from the environment
        box = await runtime.get(sys.argv[1])
        if box is None:
            print("box not found", file=sys.stderr)
            sys.exit(90)
        execution = await box.exec("sh", ["-c", sys.argv[2]])
        out, err, status = await execution.collect()
        sys.stdout.write(out.decode())
        sys.stderr.write(err.decode())
        sys.exit(status.exit_code)

    anyio.run(main)
""")


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, BOXLITE_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


async def test_detached_box_used_from_other_processes(runtime: boxlite.Boxlite, vm_home: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(detach=True, auto_remove=False, name="life-shared"))
    try:
        # One other process: get() by name and exec.
        result = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-c", CHILD, "life-shared", "echo hello-from-$(hostname)"],
            env=child_env(vm_home), capture_output=True, text=True, timeout=120))
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"hello-from-{box.id[:12]}\n"

        # Two processes at once on the same box: each waits for the other's file, so both must run together.
        await (await box.exec("rm", ["-f", "/tmp/xp-a", "/tmp/xp-b"])).wait()
        script = "touch /tmp/xp-{me}; i=0; while [ ! -e /tmp/xp-{other} ]; do i=$((i+1)); " \
                 "[ $i -gt 1200 ] && exit 9; sleep 0.05; done; echo {me}-saw-{other}"
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, box.id[:8], script.format(me=me, other=other)],
                                  env=child_env(vm_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for me, other in (("a", "b"), ("b", "a"))]
        try:
            outputs = await anyio.to_thread.run_sync(lambda: [p.communicate(timeout=120) for p in procs])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert [o for o, _ in outputs] == ["a-saw-b\n", "b-saw-a\n"]

        # The creating process can still use it, and it is still running after the children exited.
        out, _, status = await (await box.exec("echo", ["still-here"])).collect()
        assert (out, status.exit_code) == (b"still-here\n", 0)
        assert (await box.info()).status == "running"
    finally:
        await remove_quietly(runtime, box.id)


async def test_vm_death_is_noticed(runtime: boxlite.Boxlite, helpers: type) -> None:
    box = await runtime.create(boxlite.BoxOptions(auto_remove=False, name="life-crash"))
    try:
        info = await box.info()
        assert info.pid and info.shim_pid
        family = box_process_ids(info.shim_pid)  # shim, QEMU and the vsock device
        assert info.pid in family and len(family) >= 2
        failed_before = (await runtime.metrics()).boxes_failed_total
        running = await box.exec("sleep", ["100"])

        os.kill(info.pid, signal.SIGKILL)

        # A command that was running when the VM died ends with an error instead of hanging.
        with anyio.fail_after(30):
            with pytest.raises(boxlite.BoxliteError):
                await running.wait()

        async def failed() -> bool:
            return (await box.info()).status == "failed"

        assert await helpers.await_until(failed, timeout=10), (await box.info()).status
        info_after = await box.info()
        assert info_after.error
        assert info_after.pid is None and info_after.shim_pid is None

        # exec fails fast with an engine (or portal) error, and does not boot the box again.
        started = time.monotonic()
        with anyio.fail_after(30):
            with pytest.raises((boxlite.EngineError, boxlite.PortalError)):
                await box.exec("true")
        assert time.monotonic() - started < 10
        assert (await box.info()).status == "failed"

        # Nothing of the box is left on the host.
        assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in family), timeout=5), \
            [p for p in family if helpers.pid_alive(p)]
        assert box_processes(info.box_dir) == []
        assert (await runtime.metrics()).boxes_failed_total == failed_before + 1

        # A failed box can be removed without force.
        await runtime.remove(box.id)
        assert await runtime.get(box.id) is None
        assert not Path(info.box_dir).exists()
    finally:
        await remove_quietly(runtime, box.id)


async def test_shim_death_leaves_no_vm_behind(runtime: boxlite.Boxlite, helpers: type) -> None:
    box = await runtime.create(boxlite.BoxOptions(auto_remove=False, name="life-shim-crash"))
    info = await box.info()
    family = box_process_ids(info.shim_pid)
    try:
        assert info.pid in family and len(family) >= 2
        os.kill(info.shim_pid, signal.SIGKILL)
        assert helpers.wait_until(lambda: not helpers.pid_alive(info.shim_pid), timeout=10)

        assert (await box.info()).status == "failed"
        with anyio.fail_after(30):
            with pytest.raises((boxlite.EngineError, boxlite.PortalError)):
                await box.exec("true")
        with anyio.fail_after(60):
            await runtime.remove(box.id, force=True)
        assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in family), timeout=5), \
            f"left running: {[cmdline(p)[:60] for p in family if helpers.pid_alive(p)]}"
    finally:
        kill_leftovers([p for p in family if helpers.pid_alive(p)])
        await remove_quietly(runtime, box.id)


async def test_vm_death_of_auto_remove_box_is_reported_as_engine_failure(runtime: boxlite.Boxlite,
                                                                          helpers: type) -> None:
    box = await runtime.create(boxlite.BoxOptions(name="life-crash-auto"))  # auto_remove=True, the default
    info = await box.info()
    family = box_process_ids(info.shim_pid)
    try:
        os.kill(info.pid, signal.SIGKILL)
        assert helpers.wait_until(lambda: not any(helpers.pid_alive(p) for p in family), timeout=10)
        with anyio.fail_after(30):
            with pytest.raises((boxlite.EngineError, boxlite.PortalError)):
                await box.exec("true")
    finally:
        kill_leftovers([p for p in family if helpers.pid_alive(p)])
        await remove_quietly(runtime, box.id)
