"""Limits on a box's host processes (the shim, QEMU, the vsock device, passt), so one box cannot starve the host.

- Resource limits, inherited by everything the shim starts: no core dumps (a crashing VMM would write the guest's
  memory to the host's disk) and a bounded number of open files.
- A control group per box when the host lets us make one (root, and a writable cgroup v2 or v1 memory/pids
  hierarchy): memory (the guest's RAM plus the VMM's own overhead) and tasks, nested below the caller's own
  group. The shim moves itself into it, so every process it starts is in it too; past the memory limit the
  host's OOM killer ends that box only.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "boxlite"
OPEN_FILES = 4096
TASKS = 512
# QEMU's own memory beside the guest's RAM: the TCG translation cache (128 MiB), its heap, thread stacks; the
# shim, the vsock device and passt add about 50 MiB.
OVERHEAD_MIB = 384


def apply_rlimits() -> None:
    """No core dumps, and at most OPEN_FILES descriptors (never raising a lower hard limit)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


@dataclass
class BoxCgroup:
    """The control group(s) of one box: one directory on cgroup v2, or one per controller on v1."""

    dirs: list[Path]
    version: int

    @property
    def describe(self) -> str:
        return f"cgroup v{self.version}: " + ", ".join(str(d) for d in self.dirs)

    def leave_and_remove(self) -> None:
        """Move this process out (to the group's parent) and remove the now empty directories."""
        for d in self.dirs:
            with contextlib.suppress(OSError):
                (d.parent.parent / "cgroup.procs").write_text(f"{os.getpid()}\n")
            with contextlib.suppress(OSError):
                d.rmdir()


def _own_cgroup(controller: str) -> str:
    """This process's group in the hierarchy of `controller` ("" for cgroup v2), as a relative path.

    Boxes nest below it: whatever limits the caller lives under (a session, a container) still apply."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if controller in names.split(",") or (not controller and names == ""):
                return path.strip("/")
    return ""


def _v2_root() -> Path | None:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    with contextlib.suppress(OSError):
        if {"memory", "pids"} <= set(controllers.read_text().split()):
            return CGROUP_ROOT
    return None


def enter_cgroup(box_id: str, memory_mib: int) -> BoxCgroup | None:
    """Put this process (the box's shim) in a new control group limited for the box; None when not possible."""
    if os.geteuid() != 0:
        return None
    memory = (memory_mib + OVERHEAD_MIB) * 1024 * 1024
    root = _v2_root()
    made: BoxCgroup | None = None
    try:
        if root is not None:
            own = root / _own_cgroup("")
            parent = own / GROUP
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (own / "cgroup.subtree_control").write_text("+memory +pids")
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
            d = parent / box_id
            d.mkdir(exist_ok=True)
            made = BoxCgroup([d], 2)
            (d / "memory.max").write_text(f"{memory}\n")
            (d / "pids.max").write_text(f"{TASKS}\n")
            (d / "cgroup.procs").write_text(f"{os.getpid()}\n")
            return made
        made = BoxCgroup([], 1)
        for controller, settings in (("memory", {"memory.limit_in_bytes": memory}), ("pids", {"pids.max": TASKS})):
            base = CGROUP_ROOT / controller
            if not (base / "cgroup.procs").exists():
                continue
            d = base / _own_cgroup(controller) / GROUP / box_id
            d.mkdir(parents=True, exist_ok=True)
            made.dirs.append(d)
            for name, value in settings.items():
                (d / name).write_text(f"{value}\n")
            (d / "cgroup.procs").write_text(f"{os.getpid()}\n")
        return made if made.dirs else None
    except OSError:
        if made is not None:
            made.leave_and_remove()  # whatever part was made
        return None


def cgroup_of(pid: int) -> list[str]:
    """The control group paths of process `pid` (for tests and `boxlite info`)."""
    with contextlib.suppress(OSError):
        return [line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if GROUP in line.split(":", 2)[2]]
    return []
