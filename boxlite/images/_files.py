"""Small file helpers for the image store: atomic writes, per-key locks, scratch names, sizes."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boxlite._errors import StorageError

MIB = 1024 * 1024


def human_size(n: int) -> str:
    """12345678 -> '11.8 MiB'."""
    if n < 1024:
        return f"{n} B"
    if n < MIB:
        return f"{n / 1024:.1f} KiB"
    if n < 1024 * MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / (1024 * MIB):.2f} GiB"


def short_digest(digest: str) -> str:
    """'sha256:abcdef0123456789...' -> 'sha256:abcdef012345…'."""
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}…"


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to path through a temp file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"could not write {path}: {e}", fix="check free space and permissions") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an fcntl.flock on path (created if missing) for the duration of the block: exclusive by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def scratch_name(tmp_dir: Path, purpose: str) -> Path:
    """A fresh name in tmp_dir that records the owning pid, so leftovers of dead processes can be found."""
    return tmp_dir / f"{os.getpid()}.{purpose}.{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree; missing is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def clean_stale_scratch(tmp_dir: Path) -> None:
    """Remove scratch entries left behind by processes that no longer exist (e.g. killed mid-build)."""
    try:
        entries = list(tmp_dir.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        pid_text = entry.name.split(".", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                remove_path(entry)


def free_bytes(path: Path) -> int:
    """Free space on the filesystem holding path (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 0


def allocated_bytes(path: Path) -> int:
    """Bytes a file or tree really occupies (sparse disk images count only their written blocks)."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_blocks * 512
    total = st.st_blocks * 512
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(where: Path, what: str, e: BaseException | None = None) -> StorageError:
    """The StorageError for a full disk, with the free space shown."""
    detail = f": {e}" if e is not None else ""
    return StorageError(
        f"not enough disk space for {what}: {human_size(free_bytes(where))} free under {where}{detail}",
        fix="free some space (e.g. `boxlite images prune`) or point BOXLITE_HOME at a bigger filesystem",
    )


def require_free(where: Path, needed: int, what: str) -> None:
    """Raise the disk-full StorageError early when the filesystem plainly cannot hold needed bytes."""
    free = free_bytes(where)
    if free < needed:
        raise StorageError(
            f"not enough disk space for {what}: it needs about {human_size(needed)} but only "
            f"{human_size(free)} is free under {where}",
            fix="free some space (e.g. `boxlite images prune`) or point BOXLITE_HOME at a bigger filesystem",
        )
