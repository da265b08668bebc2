"""`boxlite run` with volumes, published ports, network modes and a terminal, against real VMs."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.vm.test_cli import boxlite_cli, cli_home  # noqa: F401 - the fixture is shared

pytestmark = [pytest.mark.vm]


def test_run_with_volume_and_no_network(cli_home: Path, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "in.txt").write_text("from-host\n")
    r = boxlite_cli(cli_home, "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/data",
                    "-v", f"{tmp_path}:/ro:ro", "--", "sh", "-c",
                    "cat /data/in.txt; echo from-box > /data/out.txt; ls /sys/class/net; touch /ro/x || echo ro-ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["from-host", "lo", "sit0", "ro-ok"]
    assert (tmp_path / "out.txt").read_text() == "from-box\n"


TTY_SCRIPT = """
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
print("tty", os.isatty(0), os.get_terminal_size(), flush=True)
print("ready", flush=True)
signal.sigwait({signal.SIGWINCH})
print("resized", os.get_terminal_size(), flush=True)
line = sys.stdin.readline()
print("got", line.strip(), flush=True)
"""


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {marker!r}; saw {bytes(seen)!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            assert chunk, f"the CLI ended before {marker!r}; saw {bytes(seen)!r}"
            seen += chunk


def test_run_interactive_tty_follows_the_terminal(cli_home: Path) -> None:  # noqa: F811
    """`run -it` on a real terminal: the box sees a tty of our size, a resize reaches it, keys are typed in."""
    env = {**os.environ, "BOXLITE_HOME": str(cli_home)}
    env.pop("BOXLITE_ACCEL", None)
    pid, master = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "boxlite.cli", "-q", "run", "--rm", "-it",
                                   "--network", "none", "--", "python3", "-c", TTY_SCRIPT], env)
    seen = bytearray()
    try:
        _read_until(master, b"ready", seen)
        assert b"tty True os.terminal_size(columns=100, lines=30)" in seen
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        _read_until(master, b"resized os.terminal_size(columns=132, lines=50)", seen)
        os.write(master, b"hello\r")
        _read_until(master, b"got hello", seen)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0, bytes(seen)
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(master)
