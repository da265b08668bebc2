"""The agent's command runner (guest.execution.Command), run on the host: output, exit, timeouts, draining.

These exercise the same code the agent runs inside every box, against ordinary host processes.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator

from guest._portal import portal_pb2 as pb
from guest.execution import Command


def start(argv: list[str], timeout_s: float = 0.0) -> Command:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    return Command("test", proc, timeout_s)


def outputs(cmd: Command) -> Iterator[pb.ExecOutput]:
    """The command's messages, whichever way this version of the agent produces them."""
    if hasattr(cmd, "outputs"):
        yield from cmd.outputs()
        return
    thread = threading.Thread(target=cmd.pump, daemon=True)  # older agents: a pump thread and a queue
    thread.start()
    while (item := cmd.out.get()) is not None:
        yield item


def run(cmd: Command, limit: float = 30.0, per_item_delay: float = 0.0) -> tuple[bytes, bytes, pb.ExecExit | None]:
    """Consume everything (optionally as a slow client would); give up after `limit` seconds."""
    out, err, exit_msg = [], [], None
    deadline = time.monotonic() + limit
    stream = outputs(cmd)
    try:
        for item in stream:
            kind = item.WhichOneof("kind")
            if kind == "stdout":
                out.append(item.stdout)
            elif kind == "stderr":
                err.append(item.stderr)
            elif kind == "exit":
                exit_msg = item.exit
                break
            if time.monotonic() > deadline:
                break
            if per_item_delay:
                time.sleep(per_item_delay)  # a client slower than the command, not a wait for a condition
    finally:
        cmd.signal_group(signal.SIGKILL)
        stream.close()
        cmd.proc.wait()
    return b"".join(out), b"".join(err), exit_msg


def test_output_and_exit_code() -> None:
    out, err, exit_msg = run(start(["sh", "-c", "echo a; echo b >&2; echo c; exit 3"]))
    assert (out, err) == (b"a\nc\n", b"b\n")
    assert exit_msg is not None
    assert (exit_msg.exit_code, exit_msg.signal, exit_msg.timed_out) == (3, 0, False)


def test_killed_by_a_signal() -> None:
    _, _, exit_msg = run(start(["sh", "-c", "kill -TERM $$"]))
    assert exit_msg is not None
    assert (exit_msg.exit_code, exit_msg.signal) == (-1, signal.SIGTERM)


def test_timeout_of_a_quiet_command() -> None:
    started = time.monotonic()
    out, _, exit_msg = run(start(["sh", "-c", "echo begun; sleep 30"], timeout_s=0.3))
    assert exit_msg is not None
    assert exit_msg.timed_out
    assert exit_msg.signal == signal.SIGKILL
    assert out == b"begun\n"
    assert time.monotonic() - started < 5


def test_timeout_holds_while_output_keeps_coming() -> None:
    started = time.monotonic()
    _, _, exit_msg = run(start(["yes"], timeout_s=0.3), limit=3, per_item_delay=0.01)
    assert exit_msg is not None, "no exit 3 s after a 0.3 s timeout"
    assert exit_msg.timed_out
    assert time.monotonic() - started < 3.5


def test_background_child_holding_the_pipes_does_not_hold_the_exit() -> None:
    started = time.monotonic()
    cmd = start(["sh", "-c", "sleep 30 & echo parent-done"])
    out, _, exit_msg = run(cmd)
    assert exit_msg is not None
    assert (exit_msg.exit_code, out) == (0, b"parent-done\n")
    assert time.monotonic() - started < 5


def test_large_output_is_complete() -> None:
    out, _, exit_msg = run(start(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"]))
    assert exit_msg is not None and exit_msg.exit_code == 0
    assert out == b"x" * 3_000_000
