"""The guest root: the read-only disk every box boots from, carrying Python, grpcio and the agent.

Built in two cached steps: a Debian base (mmdebstrap, keyed by the package list) and the ext4 disk with the
agent added (keyed by the base and the agent's sources), so changing the agent costs seconds, not a debootstrap.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from boxlite._errors import StorageError
from boxlite.provision._common import Progress, digest_of, file_lock, run_logged

SUITE = "bookworm"
PACKAGES = ["python3-minimal", "python3-grpcio", "python3-protobuf", "tini"]
BASE_VERSION = "1"
INIT = """#!/bin/sh
# PID 1 of every box: tini reaps orphans, the agent serves the portal.
# -S and a script path (not -m) skip site and runpy: a few hundred ms at boot under emulation.
export PYTHONPATH=/usr/lib/python3/dist-packages
exec /usr/bin/tini -s -- /usr/bin/python3 -S /usr/lib/python3/dist-packages/guest/__main__.py
"""
# The benchmark's floor: the same boot, straight to Python printing "ready" on the console (bench/).
FLOOR_INIT = """#!/bin/sh
exec /usr/bin/python3 -S -c 'print("ready")'
"""
# mmdebstrap lines worth showing as progress.
_NOTEWORTHY = ("downloading", "extracting", "installing", "success")
# Files a headless agent never reads; dropping them keeps the disk small.
PRUNE = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
         "var/lib/apt/lists"]


def _agent_source() -> Path:
    import guest

    return Path(guest.__file__).resolve().parent


def _build_base(base: Path, cache: Path, progress: Progress) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="base-", dir=cache))
    try:
        progress(f"building the guest root from Debian {SUITE} packages: {', '.join(PACKAGES)} (about a minute, once)")
        run_logged(
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp / "root")],
            cache / "guest-root.log", progress, what="guest root build (mmdebstrap)",
            echo=lambda line: line.startswith("I: ") and any(w in line for w in _NOTEWORTHY),
        )
        for rel in PRUNE:
            shutil.rmtree(tmp / "root" / rel, ignore_errors=True)
        os.replace(tmp / "root", base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _base_key() -> str:
    return digest_of(SUITE, ",".join(PACKAGES), BASE_VERSION)


def base_ready(cache: Path) -> bool:
    return (cache / f"guest-base-{_base_key()}").exists()


def guest_root_path(assets: Path) -> Path:
    """The disk for this version of the agent (it changes whenever the agent's sources change)."""
    return assets / f"guest-root-{digest_of(_base_key(), INIT, FLOOR_INIT, _agent_source())}.ext4"


def ensure_guest_root(assets: Path, cache: Path, progress: Progress) -> Path:
    """The guest root of this agent version, made from the cached base (built first when missing).

    A failure is a StorageError (or EngineError for a missing tool) naming the log, and leaves no partial disk
    or staging directory behind.
    """
    disk = guest_root_path(assets)
    if disk.exists():
        return disk
    try:
        return _make_guest_root(assets, cache, disk, progress)
    except OSError as exc:
        raise StorageError(f"cannot make the guest root {disk.name} in {assets}: {exc}",
                           fix=_os_error_fix(exc, assets, cache)) from exc


def _os_error_fix(exc: OSError, assets: Path, cache: Path) -> str:
    log = cache / "guest-root.log"
    if exc.errno == errno.ENOSPC:
        return f"free some space under {assets.parent}, then try again (build log: {log})"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"make {assets} and {cache} writable by this user, or run `boxlite setup` as the user that "
                f"owns them (build log: {log})")
    return f"see the build log {log}; `boxlite setup` rebuilds the guest root"


def _make_guest_root(assets: Path, cache: Path, disk: Path, progress: Progress) -> Path:
    base = cache / f"guest-base-{_base_key()}"
    log = cache / "guest-root.log"
    assets.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / "guest-root.lock"):
        if disk.exists():
            return disk
        if not base.exists():
            _build_base(base, cache, progress)
        progress("installing the agent into the guest root")
        staging = Path(tempfile.mkdtemp(prefix="guest-root-", dir=cache))
        tmp_disk = disk.with_suffix(".tmp")
        try:
            root = staging / "root"
            run_logged(["cp", "-a", "--reflink=auto", f"{base}/.", str(root)], log, progress,
                       what="copying the guest base")
            target = root / "usr/lib/python3/dist-packages/guest"
            shutil.copytree(_agent_source(), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            run_logged(["chroot", str(root), "python3", "-m", "compileall", "-q",
                        "/usr/lib/python3/dist-packages/guest"], log, progress,
                       what="compiling the agent in the guest root (chroot)")
            for name, text in (("boxlite-init", INIT), ("boxlite-floor", FLOOR_INIT)):
                script = root / "sbin" / name
                script.write_text(text)
                script.chmod(0o755)
            for sub in ("run/boxlite/root", "tmp", "proc", "sys", "dev"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            size_mib = _du_mib(root) + 64
            with open(tmp_disk, "wb") as f:
                f.truncate(size_mib * 1024 * 1024)
            run_logged(["mke2fs", "-q", "-t", "ext4", "-O", "^has_journal", "-L", "boxlite-guest", "-d", str(root),
                        str(tmp_disk), f"{size_mib}M"], log, progress, what="guest root disk")
            os.replace(tmp_disk, disk)
        finally:
            with contextlib.suppress(OSError):  # a cleanup failure must not hide the build's own error
                tmp_disk.unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        for old in assets.glob("guest-root-*.ext4"):
            if old != disk:
                old.unlink(missing_ok=True)
    progress(f"guest root ready: {disk.name}")
    return disk


def _du_mib(path: Path) -> int:
    done = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise StorageError(f"cannot measure the guest root tree {path}: {done.stderr.strip()}",
                           fix="check free space and permissions under the boxlite home, then try again")
    return int(done.stdout.split()[0])
