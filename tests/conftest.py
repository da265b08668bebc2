"""Shared fixtures for the whole suite.

The real home (where `boxlite setup` put the assets and the default image) is read here, at import time,
before any fixture points BOXLITE_HOME somewhere else.
"""

from __future__ import annotations

import os
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
