"""Fixtures for tests that boot real VMs.

Every VM test runs against a temporary BOXLITE_HOME whose assets, cache and images are symlinks to the
provisioned home, so nothing is rebuilt and the real home's boxes and database are never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import boxlite

SHARED = ("assets", "cache", "images")


@pytest.fixture(autouse=True)
def _require_vm_assets(provisioned_home: Path) -> None:
    """Every test here needs the VM assets: skipped only where QEMU or `boxlite setup` is absent (never on CI);
    failed, like everything else, when the guest is broken (tests/conftest.py, provisioned_home)."""


@pytest.fixture(scope="session")
def vm_home(tmp_path_factory: pytest.TempPathFactory, real_home: Path, provisioned_home: Path) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("home")
    for sub in SHARED:
        (home / sub).symlink_to(real_home / sub, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        # Anything that falls back to the default home (Boxlite.default(), child processes) lands here too.
        mp.setenv("BOXLITE_HOME", str(home))
        mp.setattr(boxlite.Boxlite, "_default", None)
        yield home


@pytest.fixture(scope="session")
async def runtime(vm_home: Path) -> AsyncIterator[boxlite.Boxlite]:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=vm_home))
    try:
        yield rt
    finally:
        await rt.close()
        # Whatever a failed test left behind (detached boxes included) must not outlive the session.
        for info in await rt.list_info():
            with contextlib.suppress(boxlite.BoxliteError):
                await rt.remove(info.id, force=True)
        _kill_strays(vm_home / "boxes")


def _kill_strays(boxes: Path) -> None:
    """Kill (by pid) any process still running for a box of this session's home, e.g. a VM a bug orphaned."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(boxes) + "/" in cmd:
            warnings.warn(f"killing a process left running by the VM tests: {entry.name} {cmd[:80]}", stacklevel=1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@dataclass(frozen=True)
class CgroupFiles:
    """The files of the control group(s) a process is in below boxlite's group, on cgroup v2 or v1."""

    dirs: frozenset[Path]
    memory_max: Path  # memory.max (v2) / memory.limit_in_bytes (v1)
    memory_peak: Path  # memory.peak / memory.max_usage_in_bytes
    memory_current: Path  # memory.current / memory.usage_in_bytes
    oom_events: Path  # memory.events / memory.oom_control: both have an "oom_kill N" line
    pids_max: Path

    def oom_kills(self) -> int:
        return next(int(line.split()[1]) for line in self.oom_events.read_text().splitlines()
                    if line.startswith("oom_kill "))


def box_cgroup_files(pid: int) -> CgroupFiles:
    """Read from /proc/<pid>/cgroup, not from the library: where the kernel accounts process `pid`."""
    from boxlite.engine import jail

    found: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if f"/{jail.GROUP}/" not in path:
            continue
        names = controllers.split(",")
        if controllers == "":  # cgroup v2: one directory, every controller
            found["v2"] = jail.CGROUP_ROOT / path.lstrip("/")
        elif "memory" in names:
            found["memory"] = jail.CGROUP_ROOT / "memory" / path.lstrip("/")
        elif "pids" in names:
            found["pids"] = jail.CGROUP_ROOT / "pids" / path.lstrip("/")
    if "v2" in found:
        d = found["v2"]
        return CgroupFiles(frozenset({d}), d / "memory.max", d / "memory.peak", d / "memory.current",
                           d / "memory.events", d / "pids.max")
    assert {"memory", "pids"} <= set(found), f"process {pid} is in no memory and pids group of boxlite's: {found}"
    m = found["memory"]
    return CgroupFiles(frozenset(found.values()), m / "memory.limit_in_bytes", m / "memory.max_usage_in_bytes",
                       m / "memory.usage_in_bytes", m / "memory.oom_control", found["pids"] / "pids.max")


@pytest.fixture(scope="session")
def box_cgroup() -> Callable[[int], CgroupFiles]:
    """box_cgroup(pid): the control-group files of a box's host process (the box must have a group: as root)."""
    return box_cgroup_files


@pytest.fixture(scope="session")
async def box(runtime: boxlite.Boxlite) -> AsyncIterator[boxlite.SimpleBox]:
    """One booted box of the default image, shared by every test that is not about the box's lifecycle."""
    async with boxlite.SimpleBox(runtime=runtime, name="shared-box") as sb:
        yield sb


@pytest.fixture(scope="module")
def kernelspec(tmp_path_factory: pytest.TempPathFactory, vm_home: Path) -> Iterator[str]:
    """The BoxLite Python kernelspec installed into a temporary prefix and found through JUPYTER_PATH (nothing
    outside the test's directories is touched); its name."""
    from codebox_kernel.install import DEFAULT_NAME, install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(DEFAULT_NAME, prefix=str(prefix))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        yield DEFAULT_NAME
