"""BOXLITE_HOMEs of the bench's own, so a run never touches the real home's boxes, and "first box" rows start
with no start template at all.

A bench home links the provisioned home's assets, cache and images (nothing is rebuilt or pulled); its boxes,
database, snapshots and templates (HOME/templates, see boxlite/_snapshots.py) are its own and start empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boxlite
from boxlite._state import default_home

SHARED = ("assets", "cache", "images")


def _kill_strays(boxes: Path) -> None:
    """Kill (by pid) any process still running for a box of this home: nothing of a bench run may outlive it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(boxes) + "/" in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def bench_home(real_home: Path | None = None) -> Iterator[Path]:
    """A fresh home linking `real_home`'s (default: the provisioned home's) assets, cache and images."""
    real = real_home or default_home()
    home = Path(tempfile.mkdtemp(prefix="boxlite-bench-"))
    try:
        for sub in SHARED:
            if not (real / sub).is_dir():
                raise boxlite.ConfigError(f"the bench needs {real / sub}, which is missing",
                                          fix="run `boxlite setup` (or scripts/setup.sh) first")
            (home / sub).symlink_to(real / sub, target_is_directory=True)
        if (home / "templates").exists():  # a first-box row would measure a restore
            raise AssertionError(f"a fresh bench home {home} already has templates")
        yield home
    finally:
        _kill_strays(home / "boxes")
        shutil.rmtree(home, ignore_errors=True)


@contextlib.asynccontextmanager
async def runtime_in(home: Path, templates: bool = True) -> AsyncIterator[boxlite.Boxlite]:
    """A runtime on `home`; templates=False: every box boots cold. Its boxes are removed when the block ends."""
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, templates=templates))
    try:
        yield rt
    finally:
        await rt.close()
        for info in await rt.list_info():
            with contextlib.suppress(boxlite.BoxliteError):
                await rt.remove(info.id, force=True)


def template_count(home: Path) -> int:
    """How many start templates `home` holds (directories under HOME/templates)."""
    root = home / "templates"
    return sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 0
