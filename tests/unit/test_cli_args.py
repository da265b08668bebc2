"""boxlite.cli without VMs: argument parsing, the pure helpers, and the commands that boot nothing."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxlite import cli
from boxlite._execution import ExecStatus
from boxlite.images import DEFAULT_IMAGE


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    """main() configures the "boxlite" logger for a terminal; give other tests theirs back."""
    logger = logging.getLogger("boxlite")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home: nothing provisioned, no boxes."""
    monkeypatch.delenv("BOXLITE_ACCEL", raising=False)
    path = tmp_path / "home"
    monkeypatch.setenv("BOXLITE_HOME", str(path))
    return path


# -- parsing ------------------------------------------------------------------------------------------------

def test_run_image_then_command_after_double_dash() -> None:
    args = cli.parse_args(["run", "--rm", "myimage", "--", "python3", "-c", "print(6*7)"])
    assert args.cmd == "run" and args.rm and not args.detach
    assert args.image == "myimage"
    assert args.command == ["python3", "-c", "print(6*7)"]


def test_run_without_image_takes_everything_after_double_dash_as_the_command() -> None:
    args = cli.parse_args(["run", "--rm", "--", "sh", "-c", "exit 3"])
    assert args.image is None
    assert args.command == ["sh", "-c", "exit 3"]


def test_command_options_are_not_taken_as_boxlite_options() -> None:
    args = cli.parse_args(["run", "--", "ls", "--rm", "-d", "-e", "X"])
    assert not args.rm and not args.detach and args.env is None
    assert args.command == ["ls", "--rm", "-d", "-e", "X"]


def test_run_docker_style_command_after_image_and_later_double_dash_stays_in_it() -> None:
    args = cli.parse_args(["run", "img", "sh", "-c", "echo $0", "--", "x"])
    assert args.image == "img"
    assert args.command == ["sh", "-c", "echo $0", "--", "x"]


def test_run_options() -> None:
    args = cli.parse_args(["run", "-d", "--name", "web", "--cpus", "2", "--memory", "1024", "-e", "A=1",
                           "-e", "B=x=y", "-w", "/srv", "-u", "1000:1000", "--timeout", "2.5", "--rootfs", "/l"])
    assert args.detach and args.name == "web" and args.cpus == 2 and args.memory == 1024
    assert args.env == [("A", "1"), ("B", "x=y")]
    assert (args.workdir, args.user, args.timeout, args.rootfs) == ("/srv", "1000:1000", 2.5, "/l")
    assert args.image is None and args.command == []


def test_run_defaults() -> None:
    args = cli.parse_args(["run"])
    # No --cpus/--memory: BoxOptions' defaults (1, 512), or with --snapshot the snapshot's own.
    assert (args.cpus, args.memory, args.timeout, args.entrypoint, args.env) == (None, None, None, None, None)


def test_exec_parses_box_and_command() -> None:
    args = cli.parse_args(["exec", "-i", "-e", "K=V", "mybox", "--", "cat", "-n"])
    assert args.cmd == "exec" and args.interactive and args.box == "mybox"
    assert args.env == [("K", "V")] and args.command == ["cat", "-n"]
    args = cli.parse_args(["exec", "mybox", "echo", "hi"])
    assert args.box == "mybox" and args.command == ["echo", "hi"] and not args.interactive


def test_global_flags() -> None:
    args = cli.parse_args(["--home", "/x", "--accel", "tcg", "-q", "ls", "-a", "-q"])
    assert (args.home, args.accel, args.quiet, args.all, args.quiet_ids) == ("/x", "tcg", True, True, True)
    args = cli.parse_args(["--home", "/x", "--accel=kvm", "-q", "run", "img", "--", "true"])
    assert (args.home, args.accel, args.image, args.command) == ("/x", "kvm", "img", ["true"])


def test_other_commands() -> None:
    assert cli.parse_args(["rm", "-f", "a", "b"]).boxes == ["a", "b"]
    assert cli.parse_args(["rm", "-f", "a"]).force
    assert cli.parse_args(["stop", "a"]).boxes == ["a"]
    assert cli.parse_args(["start", "a", "b"]).boxes == ["a", "b"]
    assert cli.parse_args(["info", "a"]).box == "a"
    assert cli.parse_args(["metrics"]).box is None
    assert cli.parse_args(["doctor", "--json"]).json
    assert cli.parse_args(["rm", "--", "-odd"]).boxes == ["-odd"]  # `--` keeps its usual meaning elsewhere


@pytest.mark.parametrize("argv", [
    ["run", "-e", "FOO"],
    ["run", "-e", "=bar"],
    ["exec", "-e", "NOEQUALS", "box", "--", "true"],
    ["run", "--timeout", "0"],
    ["run", "--timeout", "soon"],
    ["run", "--cpus", "two"],
    ["--accel", "warp", "ls"],
    ["exec"],
    ["stop"],
    [],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_env_pairs() -> None:
    assert cli.parse_env("A=1") == ("A", "1")
    assert cli.parse_env("A=") == ("A", "")
    assert cli.parse_env("A=b=c") == ("A", "b=c")
    with pytest.raises(Exception, match="KEY=VALUE"):
        cli.parse_env("FOO")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "boxlite 0.1.0"


# -- pure helpers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "code"), [
    (ExecStatus(exit_code=0), 0),
    (ExecStatus(exit_code=3), 3),
    (ExecStatus(exit_code=127, error="x: command not found"), 127),
    (ExecStatus(exit_code=-15, signal=15), 143),
    (ExecStatus(exit_code=-9, signal=9), 137),
    (ExecStatus(exit_code=-2, signal=2), 130),
    (ExecStatus(exit_code=-9, signal=9, timed_out=True), 124),
])
def test_exit_code_for(status: ExecStatus, code: int) -> None:
    assert cli.exit_code_for(status) == code


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "Less than a second"),
    (0.9, "Less than a second"),
    (1, "1 second"),
    (42, "42 seconds"),
    (60, "About a minute"),
    (119, "About a minute"),
    (150, "2 minutes"),
    (59 * 60, "59 minutes"),
    (3600, "About an hour"),
    (5 * 3600, "5 hours"),
    (47 * 3600, "47 hours"),
    (3 * 86400, "3 days"),
    (20 * 86400, "2 weeks"),
    (90 * 86400, "3 months"),
    (800 * 86400, "2 years"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert cli.human_duration(seconds) == text


def test_humanize_ago() -> None:
    now = time.time()
    assert cli.humanize_ago(now - 120, now=now) == "2 minutes ago"
    assert cli.humanize_ago(now + 5, now=now) == "Less than a second ago"  # clock skew: never negative
    from datetime import UTC, datetime

    assert cli.humanize_ago(datetime.fromtimestamp(now - 7200, UTC), now=now) == "2 hours ago"


def test_box_argv_follows_docker() -> None:
    image = {"entrypoint": ["/entry.sh"], "cmd": ["serve", "--port", "80"]}
    assert cli.box_argv([], image) == ["/entry.sh", "serve", "--port", "80"]
    assert cli.box_argv(["sh"], image) == ["/entry.sh", "sh"]
    assert cli.box_argv(["sh"], image, entrypoint="") == ["sh"]
    assert cli.box_argv([], image, entrypoint="/bin/bash") == ["/bin/bash"]
    assert cli.box_argv([], {"entrypoint": [], "cmd": ["python3"]}) == ["python3"]
    assert cli.box_argv([], {"entrypoint": [], "cmd": []}) == []


def test_format_table_and_short_image() -> None:
    table = cli.format_table(["ID", "NAME"], [["abc", "long-name"], ["abcdef", ""]])
    assert table.splitlines() == ["ID       NAME", "abc      long-name", "abcdef"]
    assert cli.format_table(["ID", "NAME"], []) == "ID   NAME"
    assert cli.short_image("oci-layout:/x/y@sha256:" + "a" * 64) == "oci-layout:/x/y@sha256:" + "a" * 12
    assert cli.short_image(DEFAULT_IMAGE) == DEFAULT_IMAGE


def test_stdin_worth_forwarding(tmp_path: Path) -> None:
    with open(os.devnull, "rb") as devnull:
        assert not cli.stdin_worth_forwarding(devnull.fileno())
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with open(empty, "rb") as f:
        assert not cli.stdin_worth_forwarding(f.fileno())
    data = tmp_path / "data"
    data.write_bytes(b"hello")
    with open(data, "rb") as f:
        assert cli.stdin_worth_forwarding(f.fileno())
        f.read()
        assert not cli.stdin_worth_forwarding(f.fileno())  # already read to the end
    r, w = os.pipe()
    try:
        assert cli.stdin_worth_forwarding(r)
    finally:
        os.close(r)
        os.close(w)
    assert not cli.stdin_worth_forwarding(r)  # closed


# -- commands that boot nothing -----------------------------------------------------------------------------

def test_doctor_json(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"ok", "home", "checks"}
    assert report["home"] == str(home)
    expected = {"qemu", "qemu_img", "network", "accel", "vm_user", "vsock", "kernel", "guest_root", "default_image",
                "home", "disk", "templates"}
    assert set(report["checks"]) == expected
    for check in report["checks"].values():
        assert check["status"] in ("ok", "warn", "fail") and check["detail"]
    # Nothing is provisioned in an empty home: the kernel and guest root fail, so the doctor does.
    assert report["checks"]["kernel"]["status"] == "fail"
    assert report["checks"]["guest_root"]["status"] == "fail"
    assert report["checks"]["home"]["status"] == "ok"
    assert report["ok"] is False and code == 1
    assert not home.exists()  # the doctor looks, it does not create


def test_doctor_only_looks_for_a_guest_root_it_could_make(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A new version of the agent with the Debian base cached: the first box makes its guest root; the doctor
    says so and makes nothing (it used to start the build, which here fails: the "base" is an empty directory)."""
    from boxlite.provision.guest_root import _base_key

    base = home / "cache" / f"guest-base-{_base_key()}"
    base.mkdir(parents=True)
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    cli.main(["doctor", "--json"])
    guest_root = json.loads(capsys.readouterr().out)["checks"]["guest_root"]
    assert guest_root["status"] == "warn" and "the first box makes it" in guest_root["detail"], guest_root
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before  # nothing made, nothing left


def test_doctor_text(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--home", str(home), "doctor"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(out) == 12  # one line per check
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in out)
    assert any(line.startswith("FAIL") and "kernel" in line for line in out)


def test_doctor_accel_forced(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--accel", "tcg", "doctor", "--json"])
    accel = json.loads(capsys.readouterr().out)["checks"]["accel"]
    assert accel == {"status": "ok", "detail": "tcg (forced: software emulation (TCG))"}


def test_bad_accel_env_is_a_boxlite_error(home: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BOXLITE_ACCEL", "warp")
    assert cli.main(["doctor"]) == 125
    assert "unknown accelerator 'warp'" in capsys.readouterr().err


def test_unknown_box_exits_125(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["info", "nope"], ["exec", "nope", "--", "true"], ["metrics", "nope"]):
        assert cli.main(argv) == 125
        err = capsys.readouterr().err
        assert err.startswith("boxlite: box not found: nope"), err


def test_stop_rm_report_each_failure_and_exit_125(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rm", "-f", "one", "two"]) == 125
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("boxlite: box not found: one") and err[1].startswith("boxlite: box not found: two")
    assert cli.main(["stop", "one"]) == 125


def test_ls_and_metrics_on_an_empty_home(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ls", "-a"]) == 0
    assert capsys.readouterr().out.split() == ["ID", "NAME", "IMAGE", "STATUS", "ENGINE", "CREATED"]
    assert cli.main(["ls", "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["metrics"]) == 0
    assert json.loads(capsys.readouterr().out)["boxes_created_total"] == 0


def test_run_usage_errors_found_after_parsing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "-d", "--", "echo", "hi"]) == 2
    assert "takes no command" in capsys.readouterr().err
    assert cli.main(["exec", "box"]) == 2
    assert "needs a command" in capsys.readouterr().err


def test_run_invalid_options_are_config_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--memory", "1", "--", "true"]) == 125
    assert "memory_mib must be between" in capsys.readouterr().err
    assert cli.main(["run", "--name", "bad name!", "--", "true"]) == 125
    assert "invalid box name" in capsys.readouterr().err
