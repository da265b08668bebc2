"""The jail around a box's host processes: seccomp, resource limits, a control group, private directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import boxlite
from boxlite._metrics import box_process_ids
from boxlite.engine import jail

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


def limits(pid: int) -> dict[str, str]:
    rows = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {row[:26].strip(): row[26:47].strip() for row in rows}


async def test_vm_processes_are_jailed(runtime: boxlite.Boxlite, helpers: type) -> None:
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

        groups = jail.cgroup_of(info.pid)
        if os.geteuid() == 0 and groups:
            assert all(g.endswith(f"/{jail.GROUP}/{box.id}") for g in groups)
            memory = [Path(jail.CGROUP_ROOT, c, g.lstrip("/")) for c in ("memory", "unified", "") for g in groups]
            limit_files = [m / name for m in memory for name in ("memory.limit_in_bytes", "memory.max")
                           if (m / name).exists()]
            assert limit_files and int(limit_files[0].read_text()) == (256 + jail.OVERHEAD_MIB) * 1024 * 1024
        await box.stop()
        if os.geteuid() == 0 and groups:
            dirs = [Path(jail.CGROUP_ROOT, c, g.lstrip("/")) for c in ("memory", "pids", "unified", "") for g in groups]
            assert helpers.wait_until(lambda: not any(d.exists() for d in dirs), timeout=5)
    finally:
        await runtime.remove(box.id, force=True)
