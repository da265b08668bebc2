"""The `boxlite` command line against real VMs, each command a separate process (`python -m boxlite.cli`).

Boots are kept few: three `run --rm` boxes (exit codes, signals, stdin), one Ctrl-C'd `run`, and one detached
box that every exec/ls/info/stop/rm test shares, in file order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm]

SHARED = ("assets", "cache", "images")
BOX = "cli-box"


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory, real_home: Path, provisioned_home: Path) -> Iterator[Path]:
    """A home of our own (so `ls` sees only our boxes) sharing the provisioned assets, cache and images."""
    home = tmp_path_factory.mktemp("cli_home")
    for sub in SHARED:
        (home / sub).symlink_to(real_home / sub, target_is_directory=True)
    yield home
    left = boxlite_cli(home, "ls", "-a", "-q").stdout.split()
    if left:
        boxlite_cli(home, "rm", "-f", *left)


def boxlite_cli(home: Path, *args: str, input: bytes | None = None, timeout: float = 180,
                ) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "BOXLITE_HOME": str(home)}
    env.pop("BOXLITE_ACCEL", None)
    return subprocess.run([sys.executable, "-m", "boxlite.cli", *args], input=input,
                          stdin=subprocess.DEVNULL if input is None else None,
                          capture_output=True, env=env, timeout=timeout, check=False)


def popen_cli(home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BOXLITE_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "boxlite.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def box_ids(home: Path) -> list[str]:
    return boxlite_cli(home, "ls", "-a", "-q").stdout.decode().split()


# -- run ------------------------------------------------------------------------------------------------------

def test_run_prints_the_output_and_exits_0_and_rm_removes_the_box(cli_home: Path) -> None:
    r = boxlite_cli(cli_home, "run", "--rm", "--", "python3", "-c", "print(6*7)")
    assert (r.returncode, r.stdout) == (0, b"42\n"), r.stderr
    assert box_ids(cli_home) == []


def test_run_forwards_piped_stdin_and_exits_with_the_commands_code(cli_home: Path) -> None:
    data = bytes(range(256)) * 1000 + b"end\n"  # binary-safe, several chunks
    r = boxlite_cli(cli_home, "run", "--rm", "--", "sh", "-c", "cat; exit 3", input=data)
    assert r.returncode == 3, r.stderr
    assert r.stdout == data


def test_run_killed_by_a_signal_exits_128_plus_n_and_streams_both_outputs(cli_home: Path) -> None:
    r = boxlite_cli(cli_home, "run", "--rm", "--", "sh", "-c", "echo out; echo err >&2; kill -TERM $$")
    assert r.returncode == 143, r.stderr
    assert r.stdout == b"out\n"
    assert b"err\n" in r.stderr


def test_ctrl_c_forwards_sigint_stops_the_box_and_exits_130(cli_home: Path) -> None:
    proc = popen_cli(cli_home, "run", "--rm", "--name", "cli-interrupted", "--", "sh", "-c",
                     'trap "echo got INT; exit 5" INT; echo started; while :; do sleep 0.1; done')
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out == b"got INT\n"
    assert box_ids(cli_home) == []


# -- one detached box, shared in file order -------------------------------------------------------------------

def test_run_detached_prints_the_id_and_leaves_the_box_running(cli_home: Path) -> None:
    r = boxlite_cli(cli_home, "run", "-d", "--name", BOX, "-e", "GREETING=hello")
    assert r.returncode == 0, r.stderr
    box_id = r.stdout.decode().strip()
    assert len(box_id) == 12 and box_ids(cli_home) == [box_id]
    taken = boxlite_cli(cli_home, "run", "-d", "--name", BOX)
    assert taken.returncode == 125
    assert b"already exists" in taken.stderr


def test_exec_in_the_detached_box(cli_home: Path) -> None:
    r = boxlite_cli(cli_home, "exec", BOX, "--", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr
    r = boxlite_cli(cli_home, "exec", "-e", "X=1", "-w", "/tmp", BOX, "--", "sh", "-c", 'echo "$GREETING $X"; pwd')
    assert (r.returncode, r.stdout) == (0, b"hello 1\n/tmp\n"), r.stderr  # -e of `run` is the box's default env
    r = boxlite_cli(cli_home, "exec", BOX, "--", "sh", "-c", "exit 7")
    assert r.returncode == 7
    r = boxlite_cli(cli_home, "exec", BOX, "--", "no-such-command")
    assert r.returncode == 127 and b"command not found" in r.stderr


def test_exec_interactive_forwards_stdin(cli_home: Path) -> None:
    data = b"line one\nline two\n\x00\xff"
    r = boxlite_cli(cli_home, "exec", "-i", BOX, "--", "cat", input=data)
    assert (r.returncode, r.stdout) == (0, data), r.stderr
    r = boxlite_cli(cli_home, "exec", BOX, "--", "cat", input=data)  # without -i: no stdin
    assert (r.returncode, r.stdout) == (0, b"")


def test_exec_timeout_exits_124(cli_home: Path) -> None:
    r = boxlite_cli(cli_home, "exec", "--timeout", "1", BOX, "--", "sleep", "30")
    assert r.returncode == 124
    assert b"boxlite: command timed out after 1 s" in r.stderr


def test_exec_ctrl_c_forwards_sigint_and_leaves_the_box_running(cli_home: Path) -> None:
    proc = popen_cli(cli_home, "exec", BOX, "--", "sh", "-c",
                     'trap "echo got INT; exit 5" INT; echo started; while :; do sleep 0.1; done')
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert out == b"got INT\n"
    assert boxlite_cli(cli_home, "exec", BOX, "--", "true").returncode == 0


def test_ls_info_and_metrics_show_the_running_box(cli_home: Path) -> None:
    r = boxlite_cli(cli_home, "ls")
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["ID", "NAME", "IMAGE", "STATUS", "ENGINE", "CREATED"]
    assert len(lines) == 2 and BOX in lines[1] and "running" in lines[1] and "ago" in lines[1]
    listed = json.loads(boxlite_cli(cli_home, "ls", "--json").stdout)
    assert [b["name"] for b in listed] == [BOX]
    info = json.loads(boxlite_cli(cli_home, "info", BOX).stdout)
    assert (info["name"], info["status"]) == (BOX, "running")
    assert info["id"] == listed[0]["id"]
    metrics = json.loads(boxlite_cli(cli_home, "metrics", BOX).stdout)
    assert metrics["commands_executed_total"] >= 4
    runtime = json.loads(boxlite_cli(cli_home, "metrics").stdout)
    assert runtime["num_running_boxes"] == 1


def test_stop_rm_then_the_box_is_not_found(cli_home: Path) -> None:
    box_id = json.loads(boxlite_cli(cli_home, "info", BOX).stdout)["id"]
    r = boxlite_cli(cli_home, "stop", BOX)
    assert (r.returncode, r.stdout.decode().strip()) == (0, box_id), r.stderr
    assert boxlite_cli(cli_home, "ls", "-q").stdout == b""
    assert BOX in boxlite_cli(cli_home, "ls", "-a").stdout.decode()
    assert json.loads(boxlite_cli(cli_home, "info", BOX).stdout)["status"] == "stopped"
    r = boxlite_cli(cli_home, "exec", BOX, "--", "echo", "hi")
    assert r.returncode == 125 and b"stopped" in r.stderr
    r = boxlite_cli(cli_home, "rm", BOX)
    assert (r.returncode, r.stdout.decode().strip()) == (0, box_id), r.stderr
    r = boxlite_cli(cli_home, "exec", BOX, "--", "echo", "hi")
    assert r.returncode == 125
    assert b"not found" in r.stderr
    assert box_ids(cli_home) == []
