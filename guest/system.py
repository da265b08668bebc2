"""Bringing the guest up: kernel parameters, mounts, the image root, and the numbers the host asks for."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from dataclasses import dataclass

from guest import syscalls

IMAGE_ROOT = "/run/boxlite/root"


@dataclass(frozen=True)
class BootParams:
    ready_port: int
    image_device: str
    hostname: str
    transport: str


def boot_params(cmdline: str) -> BootParams:
    values = dict(item.split("=", 1) for item in cmdline.split() if item.startswith("boxlite.") and "=" in item)
    return BootParams(
        ready_port=int(values.get("boxlite.ready_port", "2696")),
        image_device=values.get("boxlite.image", "/dev/vdb"),
        hostname=values.get("boxlite.hostname", "boxlite"),
        transport=values.get("boxlite.transport", "vsock"),
    )


def _mount_quiet(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    try:
        syscalls.mount(source, target, fstype, flags, data)
    except OSError as exc:
        if exc.errno != 16:  # EBUSY: already mounted (devtmpfs is mounted by the kernel)
            raise


def mount_guest_filesystems() -> None:
    """The agent's own root is read-only; give it the pseudo filesystems and scratch space it needs."""
    nosuid_nodev = syscalls.MS_NOSUID | syscalls.MS_NODEV
    _mount_quiet("proc", "/proc", "proc", nosuid_nodev | syscalls.MS_NOEXEC)
    _mount_quiet("sysfs", "/sys", "sysfs", nosuid_nodev | syscalls.MS_NOEXEC)
    _mount_quiet("devtmpfs", "/dev", "devtmpfs", syscalls.MS_NOSUID)
    _mount_quiet("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755")
    _mount_quiet("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777")


# Tasks (processes and threads) the guest may hold per MiB of its memory. Each costs its kernel stack, page tables
# and a little memory of its own (~200 KiB for a shell): with this bound a fork bomb gets EAGAIN from fork()
# while memory is still free, instead of driving the guest into an OOM storm in which the agent cannot even run
# the timeout that would end it. 256 MiB -> 512 tasks, 512 MiB -> 1024, 2 GiB -> 4096.
TASKS_PER_MIB = 2
MIN_TASKS = 512


def limit_tasks() -> None:
    total_mib = memory_bytes()[0] >> 20
    try:
        with open("/proc/sys/kernel/threads-max", "w") as f:
            f.write(f"{max(MIN_TASKS, total_mib * TASKS_PER_MIB)}\n")
    except OSError:
        pass


def mount_image_root(device: str) -> str:
    """Mount the box's own disk (the image's root) and give it /proc, /sys and /dev for commands."""
    root = IMAGE_ROOT
    _mount_quiet(device, root, "ext4", 0, "")
    grow_filesystem(root, device)
    nosuid_nodev = syscalls.MS_NOSUID | syscalls.MS_NODEV
    _mount_quiet("proc", f"{root}/proc", "proc", nosuid_nodev | syscalls.MS_NOEXEC)
    _mount_quiet("sysfs", f"{root}/sys", "sysfs", nosuid_nodev | syscalls.MS_NOEXEC)
    _mount_quiet("devtmpfs", f"{root}/dev", "devtmpfs", syscalls.MS_NOSUID)
    _mount_quiet("devpts", f"{root}/dev/pts", "devpts", syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620")
    _mount_quiet("tmpfs", f"{root}/dev/shm", "tmpfs", nosuid_nodev, "mode=1777")
    return root


EXT4_IOC_RESIZE_FS = 0x40086610  # _IOW('f', 16, __u64)
GROW_SLACK_BYTES = 64 << 20


def grow_filesystem(mountpoint: str, device: str) -> None:
    """Grow the box's ext4 online to fill its disk, so a box sees the disk_size_gb it asked for."""
    name = os.path.basename(device)
    try:
        with open(f"/sys/class/block/{name}/size") as f:
            device_bytes = int(f.read()) * 512
    except OSError:
        return
    st = os.statvfs(mountpoint)
    if device_bytes <= st.f_blocks * st.f_frsize + GROW_SLACK_BYTES:
        return
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_RESIZE_FS, struct.pack("Q", device_bytes // st.f_bsize))
    except OSError as exc:
        print(f"boxlite-guest: cannot grow {device} to {device_bytes} bytes: {exc}", flush=True)
    finally:
        os.close(fd)


def set_hostname(name: str) -> None:
    socket.sethostname(name)


def uptime_s() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def kernel_release() -> str:
    return os.uname().release


def cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole guest since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8])
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (total - idle) / ticks, total / ticks


def memory_bytes() -> tuple[int, int]:
    """(total, available) memory of the guest, from /proc/meminfo."""
    info: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))


def process_count() -> int:
    return sum(1 for name in os.listdir("/proc") if name.isdigit())


def disk_usage(path: str) -> tuple[int, int]:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return total, total - st.f_bfree * st.f_frsize
