"""Turn an unpacked root directory into an ext4 disk image file with mke2fs -d (no mounting)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from boxlite._errors import ImageError
from boxlite.images._files import MIB

HEADROOM_FACTOR = 1.25
HEADROOM_BYTES = 256 * MIB
_BLOCK = 4096
_BYTES_PER_INODE = 16384  # mke2fs's default inode_ratio ("-T default")


@dataclass(frozen=True)
class TreeSize:
    content_bytes: int  # file data rounded up to whole blocks, plus a block per directory
    inodes: int


def measure_tree(root: Path) -> TreeSize:
    """Roughly what the tree occupies on ext4; hard-linked files count once."""
    total = 0
    inodes = 0
    seen: set[int] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        total += _BLOCK
        inodes += 1
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(st.st_mode):
                continue  # counted when walked
            if st.st_nlink > 1:
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            inodes += 1
            if stat.S_ISREG(st.st_mode) or (stat.S_ISLNK(st.st_mode) and st.st_size >= 60):
                total += -(-st.st_size // _BLOCK) * _BLOCK
    return TreeSize(content_bytes=total, inodes=inodes)


def disk_size_for(content_bytes: int) -> int:
    """content * 1.25 + 256 MiB, rounded up to a whole MiB."""
    wanted = int(content_bytes * HEADROOM_FACTOR) + HEADROOM_BYTES
    return -(-wanted // MIB) * MIB


def build_ext4(root: Path, out: Path, size_bytes: int, inodes: int) -> None:
    """Create out (which must not exist) as an ext4 filesystem of size_bytes holding root's tree."""
    mke2fs = shutil.which("mke2fs") or shutil.which("mkfs.ext4") or _sbin("mke2fs")
    if mke2fs is None:
        raise ImageError("mke2fs was not found", fix="apt-get install e2fsprogs")
    cmd = [mke2fs, "-q", "-t", "ext4", "-T", "default", "-O", "^has_journal", "-E", "root_owner=0:0"]
    wanted_inodes = inodes + inodes // 4 + 1024
    if wanted_inodes > size_bytes // _BYTES_PER_INODE:
        cmd += ["-N", str(wanted_inodes)]
    cmd += ["-d", str(root), str(out), f"{size_bytes // 1024}k"]
    try:
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    except OSError as e:
        raise ImageError(f"could not run mke2fs: {e}", fix="apt-get install e2fsprogs") from e
    if result.returncode != 0:
        out.unlink(missing_ok=True)
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ImageError(
            f"mke2fs failed with exit code {result.returncode}: {detail[-1] if detail else 'no output'}",
            fix="check free space under the boxlite home and that e2fsprogs is at least 1.43",
        )
    with open(out, "rb") as f:
        os.fsync(f.fileno())


def _sbin(name: str) -> str | None:
    for directory in ("/usr/sbin", "/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None
