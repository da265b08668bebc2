"""Mounting the box's shared folders (virtio-9p; read-only ones are refused by QEMU too)."""

from __future__ import annotations

import os
from typing import Any

from guest import syscalls

# 9p2000.L with the largest message the virtio transport takes: fewer round trips per read and write.
MOUNT_OPTIONS = "trans=virtio,version=9p2000.L,msize=512000,cache=none"


def mount_all(volumes: list[dict[str, Any]]) -> None:
    """Mount every volume at its path in the image's root (the agent has chrooted into it by now, so the path
    and any links on the way resolve inside the box)."""
    for vol in volumes:
        path = vol["path"]
        os.makedirs(path, exist_ok=True)
        flags = syscalls.MS_NOSUID | syscalls.MS_NODEV
        if vol.get("read_only"):
            flags |= syscalls.MS_RDONLY
        try:
            syscalls.mount(vol["tag"], path, "9p", flags, MOUNT_OPTIONS)
        except OSError as exc:
            raise OSError(exc.errno, f"{exc.strerror}; 9p tags present: {present_tags()}") from None


def present_tags() -> list[str]:
    tags = []
    base = "/sys/bus/virtio/devices"
    for dev in sorted(os.listdir(base)):
        try:
            with open(f"{base}/{dev}/mount_tag") as f:
                tags.append(f.read().strip("\0\n"))
        except OSError:
            with open(f"{base}/{dev}/device") as f:
                tags.append(f"{dev}:{f.read().strip()}:{os.path.exists(base + '/' + dev + '/driver')}")
    return tags
