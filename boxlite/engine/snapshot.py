"""Saving a running VM: its memory and device state (QEMU migration to a file) and a frozen copy of its disk.

Memory and disk must be one consistent moment: the memory holds the guest's page cache, so the disk a clone
boots with must be byte-identical to the disk at that moment. When the migration completes QEMU has stopped
the guest and flushed and released its disks; the box's overlay is copied then, and the VM resumes.

`-sandbox on` forbids QEMU to spawn (`exec:` URIs), so the state goes out through a descriptor passed over
QMP (`getfd` + `migrate fd:`).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from boxlite.engine.qmp import Qmp, QmpError

MIGRATION_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SavedVm:
    state_bytes: int
    disk_bytes: int
    paused_ms: float  # how long the guest stood still
    total_ms: float
    stopped_at: float  # time.monotonic() when the guest stopped for good (its clock stands from there)


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy a disk file keeping its holes (qcow2 overlays are mostly holes)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                data_at = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            hole_at = os.lseek(fin.fileno(), data_at, os.SEEK_HOLE)
            fin.seek(data_at)
            fout.seek(data_at)
            remaining = hole_at - data_at
            while remaining:
                chunk = fin.read(min(remaining, 1 << 22))
                if not chunk:
                    break
                fout.write(chunk)
                remaining -= len(chunk)
            offset = hole_at
        fout.truncate(size)


def save_vm(qmp_path: Path, state_path: Path, disk: Path, disk_copy: Path) -> SavedVm:
    """Write the VM's state to `state_path` and copy `disk` to `disk_copy` at the same moment; it runs on.

    A live migration to a file: QEMU copies memory while the guest runs, then stops it for the last pages
    (the "downtime") and flushes and releases the disks. The disk is copied right then, still stopped, and
    the VM resumes. The state records that the VM was running, so a restore runs it at once.
    Raises QmpError (QEMU refused or failed) or OSError (files).
    """
    with Qmp(qmp_path) as qmp:
        status = qmp.command("query-status")
        if status.get("status") != "running":
            raise QmpError(f"the VM is {status.get('status')}, not running")
        started = time.monotonic()
        # The default bandwidth cap (128 MiB/s) only slows a copy to a local file down.
        qmp.command("migrate-set-parameters", arguments={"max-bandwidth": 64 << 30, "downtime-limit": 50})
        fd = os.open(state_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            qmp.command("getfd", fds=[fd], fdname="boxlite-snapshot")
        finally:
            os.close(fd)
        qmp.command("migrate", uri="fd:boxlite-snapshot")
        try:
            deadline = time.monotonic() + MIGRATION_TIMEOUT_S
            while True:
                info = qmp.command("query-migrate")
                state = info.get("status")
                if state == "completed":
                    break
                if state in ("failed", "cancelled") or time.monotonic() > deadline:
                    if state not in ("failed", "cancelled"):
                        qmp.command("migrate_cancel")
                    raise QmpError(f"saving the VM state {state or 'timed out'}: {info.get('error-desc', '')}")
                time.sleep(0.005)
            stopped = time.monotonic()
            # Completed: the guest is stopped and QEMU has flushed and let go of the disk; copy it now.
            copy_sparse(disk, disk_copy)
        finally:
            if qmp.command("query-status").get("status") != "running":
                qmp.command("cont")
        downtime_ms = float(info.get("downtime", 0))
        paused_ms = downtime_ms + (time.monotonic() - stopped) * 1000
        total_ms = (time.monotonic() - started) * 1000
    return SavedVm(state_bytes=state_path.stat().st_size, disk_bytes=disk_copy.stat().st_blocks * 512,
                   paused_ms=round(paused_ms, 1), total_ms=round(total_ms, 1),
                   stopped_at=stopped - downtime_ms / 1000)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
