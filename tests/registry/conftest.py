"""Fixtures for tests against real local registries (scripts/registry.sh start; CI runs it before pytest).

Tests that need a registry take the `registry` fixture, which skips them with the reason when 127.0.0.1:5000
does not answer. Repository names carry a per-run suffix, so runs never see each other's images.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ocitools import ANON, BASIC, TOKEN, TOKEN_PORT, TokenServer, registry_answers

RUN = secrets.token_hex(3)

_ENV = ("BOXLITE_IMAGE_REGISTRIES", "BOXLITE_REGISTRY_MIRRORS", "BOXLITE_INSECURE_REGISTRIES", "BOXLITE_REGISTRY_AUTH")


@pytest.fixture(autouse=True)
def _clean_registry_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No registry settings leak in from the machine: the environment and Docker's config are emptied."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def _need(host: str) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (scripts/registry.sh start installs it)")
    if not registry_answers(host):
        pytest.skip(f"no local registry answers on {host}: run `scripts/registry.sh start` (CI does)")


@pytest.fixture(scope="session")
def registry() -> str:
    """The anonymous registry's host:port."""
    _need(ANON)
    return ANON


@pytest.fixture(scope="session")
def basic_registry() -> str:
    _need(BASIC)
    return BASIC


@pytest.fixture(scope="session")
def token_registry() -> Iterator[str]:
    """The token-auth registry, with the test token service running on 127.0.0.1:5003."""
    _need(TOKEN)
    server = TokenServer(TOKEN_PORT)
    try:
        yield TOKEN
    finally:
        server.stop()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test and run, e.g. t1a2b3/test-pull-by-tag."""
    name = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")
    return f"t{RUN}/{name[:60].strip('-')}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path

