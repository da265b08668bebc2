"""The jail of a box's host processes (QEMU, the vsock device, passt): whose they are and what they may use.

- A user of their own: when boxlite runs as root, every VM process of a box runs as an unprivileged user and
  group made for that box (a number from a reserved range, no /etc/passwd entry, no supplementary groups but
  /dev/kvm's), so it can open nothing of ours by name and signal or trace no other box's processes; it owns
  nothing on the host but the vsock device's socket directory. The files and sockets it needs come as descriptors
  (boxlite/engine/descriptors.py). QEMU's `-runas` cannot be used: its own `elevateprivileges=deny` seccomp
  rule kills it (SIGSYS), so the shim starts it as that user.

- Resource limits, inherited by everything the shim starts: no core dumps (a crashing VMM would write the guest's
  memory to the host's disk) and a bounded number of open files.
- A control group per box when the host lets us make one (root, and a writable cgroup v2 or v1 memory/pids
  hierarchy): memory (the guest's RAM plus the VMM's own overhead) and tasks, nested below the caller's own
  group. The shim moves itself into it, so every process it starts is in it too; past the memory limit the
  host's OOM killer ends that box only.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "boxlite"
OPEN_FILES = 4096
TASKS = 512
# QEMU's own memory beside the guest's RAM: the TCG translation cache (128 MiB), its heap, thread stacks; the
# shim, the vsock device and passt add about 50 MiB.
OVERHEAD_MIB = 384
# The users boxes run as: 2^20 numbers from 0x70000000 up, a range no distribution or container tool hands out
# (systemd's container ranges end below it). BOXLITE_JAIL_UID_BASE moves it; BOXLITE_JAIL=off turns it off.
UID_BASE = 0x70000000
UID_SLOTS = 1 << 20
PROXY_HELPERS = ("/usr/lib/qemu/virtfs-proxy-helper", "/usr/libexec/virtfs-proxy-helper")


@dataclass(frozen=True)
class VmUser:
    """Who a box's VM processes run as."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> VmUser | None:
        return None if not data else cls(int(data["uid"]), int(data["gid"]), tuple(data.get("groups") or ()))


def uid_base() -> int:
    value = os.environ.get("BOXLITE_JAIL_UID_BASE", "")
    return int(value, 0) if value.strip() else UID_BASE


def vm_user(box_id: str, taken: Iterable[int], accel: str, volumes: bool) -> tuple[VmUser | None, str]:
    """The user a box's VM processes run as, or None (they run as the caller) and why."""
    if os.geteuid() != 0:
        return None, "boxlite does not run as root: the VM runs as the calling user"
    if os.environ.get("BOXLITE_JAIL", "").lower() in ("0", "off", "no", "false"):
        return None, "BOXLITE_JAIL=off: the VM runs as root"
    if volumes and proxy_helper() is None:
        return None, ("the box shares host directories and QEMU's virtfs-proxy-helper is not installed: "
                      "the VM runs as root to serve them")
    groups: tuple[int, ...] = ()
    if accel == "kvm":
        kvm = os.stat("/dev/kvm")
        if kvm.st_mode & (stat.S_IRGRP | stat.S_IWGRP) != (stat.S_IRGRP | stat.S_IWGRP):
            return None, "/dev/kvm is not read-write for its group: the VM runs as root to use KVM"
        groups = (kvm.st_gid,)
    base, taken = uid_base(), set(taken)
    start = int(box_id[:5], 16) % UID_SLOTS
    for step in range(UID_SLOTS):
        uid = base + (start + step) % UID_SLOTS
        if uid not in taken:
            return VmUser(uid, uid, groups), f"the VM runs as uid {uid}"
    return None, "every jail uid is taken: the VM runs as root"


def users_of(launch_files: Iterable[Path]) -> set[int]:
    """The uids recorded in other boxes' launch plans (those are taken while those boxes run)."""
    uids = set()
    for path in launch_files:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            user = json.loads(path.read_text()).get("vm_user")
            if user:
                uids.add(int(user["uid"]))
    return uids


def proxy_helper() -> Path | None:
    """QEMU's 9p proxy helper (QEMU up to 8.0 ships it), which serves a shared directory to an unprivileged QEMU."""
    for candidate in (os.environ.get("BOXLITE_VIRTFS_PROXY_HELPER", ""), *PROXY_HELPERS,
                      shutil.which("virtfs-proxy-helper") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def private_dir(path: Path, user: VmUser | None) -> Path:
    """A 0700 directory owned by the VM's user (for the vsock device's sockets); its parents stay ours."""
    path.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(path, user.uid, user.gid)
    path.chmod(0o700)
    return path


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
