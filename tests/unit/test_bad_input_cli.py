"""Property tests for the command line: any argv ends in a usage error (exit 2, with a usage message) or a
boxlite error (exit 125, "boxlite: ..."), or works; never an uncaught exception and traceback.

Driven in-process through cli.main(argv), against an empty home in a temporary directory. Nothing boots or pulls:
the subcommands that would (setup, doctor, images pull/build) are never generated, and `run` finds no image
(image resolution is replaced by an ImageError, which is what an unreachable registry gives).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from boxlite import cli
from boxlite._errors import ImageError

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NEVER = {"setup", "doctor", "pull", "build"}  # they build, probe the host or reach the network

subcommands = st.sampled_from(["run", "exec", "ls", "ps", "start", "stop", "rm", "info", "inspect", "metrics",
                               "images", "image", "snapshot", "snapshots", "help", "", "-h"])
image_subcommands = st.sampled_from(["ls", "list", "load", "rm", "rmi", "remove", "prune", "--builtin", "-q",
                                     "create"])
flags = st.sampled_from([
    "-e", "--env", "-w", "--workdir", "-u", "--user", "--timeout", "--cpus", "--memory", "-m", "--name", "--rootfs",
    "--entrypoint", "-d", "--detach", "--rm", "--accel", "-q", "--quiet", "--json", "-a", "--all", "-f", "--force",
    "-i", "--interactive", "--input", "--", "-", "--version", "--unknown", "-zz",
    "-p", "--publish", "-v", "--volume", "--network", "-t", "--tty", "-it", "--snapshot",
])
values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["0", "-1", "1", "2", "99999999999999999999999", "9" * 5000, "nan", "inf", "-inf", "1e400",
                     "1e-400", "0x10", "A=1", "=x", "A", "A\0=1", "/", "/tmp", "relative", "~nosuchuser-xyz",
                     "\0", "\ud800", "\udcff", "é", "UPPER:tag", "alpine@sha256:" + "a" * 64, "oci-layout:/x",
                     "archive:", "sha256:", "kvm", "tcg", "auto", "KVM", "8080:80", "127.0.0.1:1:2/tcp", "1:2/udp",
                     "99999:1", "/tmp:/data", "/tmp:/data:ro", "/:/x", "/tmp:rel", "enabled", "disabled"]),
)
tokens = st.one_of(flags, values, flags, image_subcommands)
homes = st.sampled_from([None, "home", "./other-home", "~nosuchuser-xyz/h", "a\0b", "", "\udcff"])


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty home and working directory, and `run` unable to find any image."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOXLITE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BOXLITE_ACCEL", raising=False)

    def no_image(*_args: Any, **_kw: Any) -> Any:
        raise ImageError("no image in this test", fix="none")

    monkeypatch.setattr(cli, "_resolve_image", no_image)
    logger = logging.getLogger("boxlite")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield tmp_path
    logger.handlers[:], logger.level, logger.propagate = saved


def run_cli(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse: usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 1


def _check(argv: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    assume(not NEVER & set(argv))
    code = run_cli(argv)
    event(f"exit {code}")  # see --hypothesis-show-statistics: every kind of ending is reached
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2, 125), (argv, code, err)
    if code == 2:
        assert "usage:" in err or "error:" in err, err
    if code == 125:
        assert err.startswith("boxlite: ") or "\nboxlite: " in err, err


@SETTINGS
@given(homes, subcommands, st.lists(tokens, max_size=8))
def test_random_argv(sandbox: Path, capfd: pytest.CaptureFixture[str], home: str | None, sub: str,
                     rest: list[str]) -> None:
    argv = (["--home", home] if home is not None else []) + ([sub] if sub else []) + rest
    _check(argv, capfd)


@SETTINGS
@given(st.lists(st.one_of(tokens, subcommands), max_size=10))
def test_any_token_soup(sandbox: Path, capfd: pytest.CaptureFixture[str], argv: list[str]) -> None:
    _check(argv, capfd)


@SETTINGS
@given(st.sampled_from(["--cpus", "--memory", "--timeout", "--name", "-e", "-w", "-u", "--rootfs", "--entrypoint",
                        "-p", "-v", "--network", "--snapshot"]),
       values, st.one_of(st.none(), values))
def test_run_options(sandbox: Path, capfd: pytest.CaptureFixture[str], flag: str, value: str,
                     image: str | None) -> None:
    _check(["run", flag, value, *([image] if image is not None else []), "--", "true"], capfd)


@SETTINGS
@given(st.sampled_from(["-e", "-w", "-u", "--timeout"]), values, values)
def test_exec_options(sandbox: Path, capfd: pytest.CaptureFixture[str], flag: str, value: str, box: str) -> None:
    _check(["exec", flag, value, box, "--", "true"], capfd)


@pytest.mark.parametrize("argv", [
    ["--home", "a\0b", "ls"], ["--home", "~nosuchuser-xyz", "ls"],          # ValueError / RuntimeError
    ["run", "--rootfs", "a\0b", "--", "true"], ["run", "--rootfs", "~nosuchuser-xyz/x", "--", "true"],
    ["images", "load", "\0"], ["images", "load", "~nosuchuser-xyz"],        # ValueError / RuntimeError
    ["rm", "\ud800"], ["info", "\udcff"], ["start", "\udcff"],              # UnicodeEncodeError from sqlite
])
def test_found_argv(sandbox: Path, capfd: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert run_cli(argv) == 125
    assert capfd.readouterr().err.startswith("boxlite: ")


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "0"])
def test_timeout_must_be_finite_and_positive(sandbox: Path, capfd: pytest.CaptureFixture[str], value: str) -> None:
    """--timeout inf was accepted: the box booted, then the command was refused."""
    assert run_cli(["run", "--timeout", value, "--", "true"]) == 2
    assert "--timeout" in capfd.readouterr().err
