"""Shared fixtures for the whole suite.

The real home (where `boxlite setup` put the assets and the default image) is read here, at import time,
before any fixture points BOXLITE_HOME somewhere else.

Tests that boot boxes take `provisioned_home`: it skips them only when QEMU or a provisioned asset is absent
(and on CI even that fails, see ../conftest.py); a broken guest fails them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

REAL_HOME = Path(os.environ.get("BOXLITE_HOME") or Path.home() / ".boxlite")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # Session scope so that session-scoped async fixtures (the shared runtime and box) and every test share
    # one event loop.
    return "asyncio"


@pytest.fixture(scope="session")
def real_home() -> Path:
    return REAL_HOME


def vm_prerequisites_missing(home: Path) -> list[str]:
    """What boxes need that this machine lacks: QEMU, or an asset `boxlite setup` was never run to make.

    Only absence counts. A guest root that cannot be built (a broken agent) or any other error is not
    "missing": find_assets raises it and the tests fail."""
    from boxlite.provision.guest_root import base_ready, guest_root_path
    from boxlite.provision.kernel import kernel_key
    from boxlite.provision.vsock_device import installed_binary

    assets = home / "assets"
    missing = [tool for tool in ("qemu-system-x86_64", "qemu-img") if shutil.which(tool) is None]
    if not (assets / f"vmlinux-6.1-{kernel_key()}").exists():
        missing.append("the guest kernel")
    # A guest root made for another version of the agent is not missing when the Debian base it is made from
    # is cached: find_assets re-makes it, and if that fails, so do the tests.
    if not guest_root_path(assets).exists() and not base_ready(home / "cache"):
        missing.append("the guest root")
    if installed_binary() is None and not (assets / "vhost-device-vsock").exists():
        missing.append("vhost-device-vsock")
    return missing


@pytest.fixture(scope="session")
def provisioned_home(real_home: Path) -> Path:
    """The real home, holding everything a box needs; the tests that boot boxes depend on it."""
    from boxlite.provision import find_assets

    missing = vm_prerequisites_missing(real_home)
    if missing:
        pytest.skip(f"no VMs on this machine: {', '.join(missing)} not found for {real_home} "
                    "(apt-get install qemu-system-x86 qemu-utils; run `boxlite setup`)")
    # Unguarded: an error here (say the agent does not compile into a new guest root) fails every VM test.
    find_assets(real_home)
    return real_home


def pid_alive(pid: int | None) -> bool:
    """True while process `pid` exists and is not a zombie (read from /proc, independently of the library)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds pass; return its last truth value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def await_until(predicate: Callable[[], Awaitable[object]], timeout: float, interval: float = 0.1) -> bool:
    """The async twin of wait_until, for predicates that must await (box.info(), an exec)."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(interval)


@pytest.fixture(scope="session")
def helpers() -> type:
    """pid_alive / wait_until / await_until, as a fixture so test modules need no import path tricks."""

    class Helpers:
        pass

    Helpers.pid_alive = staticmethod(pid_alive)  # type: ignore[attr-defined]
    Helpers.wait_until = staticmethod(wait_until)  # type: ignore[attr-defined]
    Helpers.await_until = staticmethod(await_until)  # type: ignore[attr-defined]
    return Helpers
