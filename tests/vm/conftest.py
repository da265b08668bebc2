"""Fixtures for tests that boot real VMs.

Every VM test runs against a temporary BOXLITE_HOME whose assets, cache and images are symlinks to the
provisioned home, so nothing is rebuilt and the real home's boxes and database are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.provision import find_assets

SHARED = ("assets", "cache", "images")


@pytest.fixture(scope="session")
def _vm_assets(real_home: Path) -> None:
    """Skip every VM test, with the reason, on a machine where `boxlite setup` has not been run."""
    try:
        find_assets(real_home)
    except Exception as exc:  # noqa: BLE001 - whatever is missing, the VM tests cannot run
        pytest.skip(f"VM assets are not provisioned under {real_home} (run `boxlite setup`): {exc}")


@pytest.fixture(autouse=True)
def _require_vm_assets(_vm_assets: None) -> None:
    pass


@pytest.fixture(scope="session")
def vm_home(tmp_path_factory: pytest.TempPathFactory, real_home: Path, _vm_assets: None) -> Iterator[Path]:
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


@pytest.fixture(scope="session")
async def box(runtime: boxlite.Boxlite) -> AsyncIterator[boxlite.SimpleBox]:
    """One booted box of the default image, shared by every test that is not about the box's lifecycle."""
    async with boxlite.SimpleBox(runtime=runtime, name="shared-box") as sb:
        yield sb
