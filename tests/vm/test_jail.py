"""The jail around a box's host processes: seccomp, resource limits, a control group, private directories, a user."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import boxlite
from boxlite._metrics import box_process_ids
from boxlite.engine import jail

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


def limits(pid: int) -> dict[str, str]:
    rows = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {row[:26].strip(): row[26:47].strip() for row in rows}


async def test_vm_processes_are_jailed(runtime: boxlite.Boxlite) -> None:
    box = await runtime.create(boxlite.BoxOptions(memory_mib=256, auto_remove=False))
    try:
        info = box.info()
        assert info.pid is not None and info.shim_pid is not None
        status = Path(f"/proc/{info.pid}/status").read_text()
        assert "Seccomp:\t2" in status  # QEMU's own seccomp filter is on
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
        sandbox = cmdline[cmdline.index(b"-sandbox") + 1].decode()
        for rule in ("obsolete=deny", "elevateprivileges=deny", "spawn=deny", "resourcecontrol=deny"):
            assert rule in sandbox
        for pid in box_process_ids(info.shim_pid):
            assert limits(pid)["Max core file size"] == "0"
            assert limits(pid)["Max open files"] == str(jail.OPEN_FILES)
        for directory in {Path(info.box_dir), *(p.parent for p in Path(info.box_dir).glob("*.sock"))}:
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    finally:
        await runtime.remove(box.id, force=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="boxes get a control group only when boxlite runs as root")
async def test_each_box_has_a_control_group_with_its_memory_and_task_limits(runtime: boxlite.Boxlite,
                                                                           box_cgroup: Callable[[int], Any],
                                                                           helpers: type) -> None:
    box = await runtime.create(boxlite.BoxOptions(memory_mib=256, auto_remove=False))
    try:
        info = box.info()
        group = box_cgroup(info.pid)  # QEMU's; fails unless it is in a memory and a pids group of boxlite's
        assert all(d.name == box.id and d.parent.name == jail.GROUP for d in group.dirs), group.dirs
        family = box_process_ids(info.shim_pid)
        assert len(family) >= 2 and all(box_cgroup(pid) == group for pid in family)  # the shim and all it started
        # The guest's RAM plus the VMM's own overhead, and a bounded number of tasks.
        assert int(group.memory_max.read_text()) == (256 + jail.OVERHEAD_MIB) * 1024 * 1024
        assert int(group.pids_max.read_text()) == jail.TASKS
        await box.stop()
        assert helpers.wait_until(lambda: not any(d.exists() for d in group.dirs), timeout=5)
    finally:
        await runtime.remove(box.id, force=True)


def status(pid: int) -> dict[str, str]:
    rows = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (row.partition(":") for row in rows)}


def program(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def open_paths(pid: int) -> set[str]:
    """The files (not sockets, pipes or anonymous inodes) process `pid` holds open."""
    targets = {os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    return {t for t in targets if t.startswith("/") and not t.startswith("/memfd:")}


def vm_processes(info: boxlite.BoxInfo) -> dict[str, int]:
    """The box's host processes by role: qemu, passt, vsock, helper (the 9p proxy helpers)."""
    found: dict[str, int] = {}
    for pid in box_process_ids(info.shim_pid)[1:]:
        name = program(pid)
        role = ("qemu" if "qemu-system" in name else "passt" if name.endswith("passt")
                else "helper" if "virtfs-proxy-helper" in name else "vsock" if "/proc/self/fd/" in name else name)
        found[role] = pid
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="the VM processes change user only when boxlite runs as root")
async def test_vm_processes_run_as_an_unprivileged_user_of_their_own(runtime: boxlite.Boxlite,
                                                                    tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "root-only.txt").write_text("owned by root, mode 0600\n")
    (shared / "root-only.txt").chmod(0o600)
    nat = await runtime.create(boxlite.BoxOptions(network="enabled", auto_remove=False))
    # A published port takes the vsock device; a volume takes a 9p proxy helper.
    other = await runtime.create(boxlite.BoxOptions(network="disabled", ports=[(0, 8000, "tcp")],
                                                    volumes=[(str(shared), "/shared", "rw")], auto_remove=False))
    try:
        users = set()
        for box, roles in ((nat, {"qemu", "passt"}), (other, {"qemu", "vsock", "helper"})):
            info = box.info()
            procs = vm_processes(info)
            assert roles <= set(procs), procs
            for role in roles - {"helper"}:
                s = status(procs[role])
                uid = int(s["Uid"].split()[0])
                assert uid >= 0x70000000, (role, s["Uid"])
                assert s["Uid"].split() == [str(uid)] * 4 and s["Gid"].split() == [str(uid)] * 4, (role, s)
                assert s["Groups"] == "" and int(s["CapEff"], 16) == 0 and int(s["CapPrm"], 16) == 0, (role, s)
                users.add((box.id, uid))
            # QEMU holds only this box's own files (and the shared image files), opened for it by the shim.
            box_dir = Path(info.box_dir)
            shared_files = {os.path.realpath(p) for d in ("assets", "images") for p in (runtime.home / d).rglob("*")}
            for path in open_paths(procs["qemu"]):
                assert (path.startswith(str(box_dir) + "/") or path in shared_files
                        or path in ("/dev/null", "/dev/urandom")), path
            # What it holds, it could not have opened: its user reaches nothing of ours by name.
            uid = next(u for b, u in users if b == box.id)
            for path in (box_dir / "disk.qcow2", box_dir / "console.log", runtime.home / "boxlite.db"):
                # setpriv, not subprocess's user=: that forks this gRPC-threaded process (and gRPC's fork
                # handlers can crash the child); a plain spawn does not.
                denied = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                         "/bin/cat", str(path)], capture_output=True, text=True)
                assert denied.returncode != 0 and "Permission denied" in denied.stderr, path
        assert len({u for _, u in users}) == 2  # one user per box: no box can signal or trace another's VM
        nat_uid = next(u for b, u in users if b == nat.id)
        other_qemu = vm_processes(other.info())["qemu"]
        signal = subprocess.run(["setpriv", f"--reuid={nat_uid}", f"--regid={nat_uid}", "--clear-groups",
                                 "/bin/kill", "-0", str(other_qemu)], capture_output=True, text=True)
        assert signal.returncode != 0 and "not permitted" in signal.stderr.lower(), signal

        # The 9p helper keeps the caller's file rights, inside the shared directory only (chrooted there).
        helper = vm_processes(other.info())["helper"]
        assert os.readlink(f"/proc/{helper}/root") == str(shared)
        run = await other.exec("sh", ["-c", "cat /shared/root-only.txt && echo made-in-box > /shared/new.txt"])
        assert (await run.wait()).exit_code == 0
        assert (shared / "new.txt").read_text() == "made-in-box\n"
    finally:
        for box in (nat, other):
            await runtime.remove(box.id, force=True)


async def test_without_the_vm_user_qemu_still_gets_only_descriptors(runtime: boxlite.Boxlite, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The path of a caller who is not root (or BOXLITE_JAIL=off): the caller's user, the same descriptors,
    volumes served by QEMU itself."""
    monkeypatch.setenv("BOXLITE_JAIL", "off")
    (tmp_path / "in.txt").write_text("from the host\n")
    box = await runtime.create(boxlite.BoxOptions(network="enabled", volumes=[(str(tmp_path), "/shared", "rw")],
                                                  auto_remove=False))
    try:
        procs = vm_processes(box.info())
        assert "helper" not in procs
        assert status(procs["qemu"])["Uid"].split()[0] == str(os.getuid())
        cmdline = Path(f"/proc/{procs['qemu']}/cmdline").read_bytes().decode().split("\0")
        assert not any(box.info().box_dir in arg for arg in cmdline)  # still no path of the box's
        run = await box.exec("sh", ["-c", "cat /shared/in.txt && echo back > /shared/out.txt"])
        assert (await run.wait()).exit_code == 0
        assert (tmp_path / "out.txt").read_text() == "back\n"
        assert "vm user: BOXLITE_JAIL=off" in (Path(box.info().box_dir) / "shim.log").read_text()
    finally:
        await runtime.remove(box.id, force=True)
