"""The few Linux calls Python's os module lacks (mount, umount, reboot), through libc."""

from __future__ import annotations

import ctypes
import os

# Not ctypes.util.find_library: it imports half the standard library, which costs ~80 ms at boot.
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384

# With `reboot=t -no-reboot`, a reboot is a triple fault that makes QEMU exit at once; microvm without ACPI
# cannot power off (the kernel would only halt).
RB_AUTOBOOT = 0x01234567
MNT_DETACH = 2


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype}): {os.strerror(err)}")


def umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def power_off() -> None:
    os.sync()
    _libc.reboot(RB_AUTOBOOT)
