"""The Execution service: run commands in the image's root and stream their output back.

The agent has chrooted itself into the image's root at boot, so commands are plain children of it.

One bidirectional Exec stream per command. The RPC's own thread multiplexes stdout, stderr and a pidfd of the
command with one selector and yields the output as it comes; a feeder thread turns the client's messages into
stdin writes and signals.
Every command gets its own session (so its own process group); timeouts and kills hit the whole group.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import signal
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from guest import users
from guest._portal import portal_pb2 as pb
from guest._portal import portal_pb2_grpc as pb_grpc

READ_CHUNK = 64 * 1024
# After the command exits, keep reading output its background children still write for this long.
DRAIN_GRACE_S = 0.05
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The longest single wait for output: epoll cannot wait longer than 2**31 ms (a timeout of a month would raise
# OverflowError), and the loop re-checks its deadline after every wait anyway.
MAX_WAIT_S = 3600.0


def valid_signal(signum: int) -> bool:
    """A signal number the kernel knows (killpg with another raises OSError EINVAL)."""
    return 0 < signum < signal.NSIG


TIOCSCTTY, TIOCSWINSZ = 0x540E, 0x5414


def set_tty_size(fd: int, rows: int, cols: int) -> None:
    """Set a terminal's size; the kernel sends SIGWINCH to its foreground process group."""
    # The sizes come from the portal's uint32s: beyond 65535 struct.pack would raise, so they are capped.
    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", min(rows or 24, 0xFFFF), min(cols or 80, 0xFFFF), 0, 0))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _take_controlling_tty() -> None:
    """In the child, after setsid(): its stdin, the pseudo-terminal, becomes its controlling terminal."""
    fcntl.ioctl(0, TIOCSCTTY, 0)


class Command:
    """A running command: its process and its process group."""

    def __init__(self, exec_id: str, proc: subprocess.Popen[bytes], timeout_s: float,
                 master: int | None = None) -> None:
        self.exec_id = exec_id
        self.proc = proc
        # The pseudo-terminal's master side, for a tty command (its only output, and where its input goes).
        self.master = master
        self.started = time.monotonic()
        # A NaN or negative timeout is no limit, as 0 is; an infinite one never comes either.
        self.deadline = self.started + timeout_s if 0 < timeout_s < float("inf") else None
        self.timed_out = False

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def outputs(self) -> Iterator[pb.ExecOutput]:
        """The output as it is produced until the command exits (or times out), then its exit."""
        sel = selectors.DefaultSelector()
        streams = {self.proc.stdout: "stdout", self.proc.stderr: "stderr"} if self.master is None else {}
        for stream in streams:
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ, streams[stream])
        if self.master is not None:
            sel.register(self.master, selectors.EVENT_READ, "stdout")
        pidfd = os.pidfd_open(self.proc.pid)
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        exited_at: float | None = None
        open_streams = 2 if self.master is None else 1
        try:
            while open_streams:
                # Deadlines are checked on every pass: a command that floods its output keeps select() busy.
                now = time.monotonic()
                if exited_at is not None and now >= exited_at + DRAIN_GRACE_S:
                    break
                if self.deadline is not None and not self.timed_out and now >= self.deadline:
                    self.timed_out = True
                    self.signal_group(signal.SIGKILL)
                waits = []
                if self.deadline is not None and not self.timed_out:
                    waits.append(self.deadline - now)
                if exited_at is not None:
                    waits.append(exited_at + DRAIN_GRACE_S - now)
                events = sel.select(min(max(0.0, min(waits)), MAX_WAIT_S) if waits else MAX_WAIT_S)
                for key, _ in events:
                    if key.data == "exit":
                        sel.unregister(pidfd)
                        exited_at = time.monotonic()
                        continue
                    try:
                        data = os.read(key.fd, READ_CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:  # EIO: every holder of the terminal's other side has closed it
                        data = b""
                    if not data:
                        sel.unregister(key.fd)
                        open_streams -= 1
                        continue
                    if key.data == "stdout":
                        yield pb.ExecOutput(stdout=data)
                    else:
                        yield pb.ExecOutput(stderr=data)
            code = self.proc.wait()
        finally:
            sel.close()
            os.close(pidfd)
            if self.master is not None:
                with contextlib.suppress(OSError):
                    os.close(self.master)
            for stream in streams:
                if stream is not None:
                    stream.close()
        exit_msg = pb.ExecExit(
            exit_code=code if code >= 0 else -1,
            signal=-code if code < 0 else 0,
            timed_out=self.timed_out,
            duration_ms=(time.monotonic() - self.started) * 1000,
        )
        yield pb.ExecOutput(exit=exit_msg)


def _failure(argv0: str, exc: BaseException) -> pb.ExecExit:
    """What a shell would say when a command cannot be started at all."""
    if isinstance(exc, FileNotFoundError):
        return pb.ExecExit(exit_code=127, error=f"{argv0}: command not found")
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return pb.ExecExit(exit_code=126, error=f"{argv0}: Permission denied")
    if isinstance(exc, OSError) and exc.errno == errno.ENOEXEC:
        return pb.ExecExit(exit_code=126, error=f"{argv0}: cannot execute binary file: Exec format error")
    return pb.ExecExit(exit_code=126, error=f"{argv0}: {exc}")


def release_from_agent_oom_guard(pid: int) -> None:
    """Make a child killable by the guest's OOM killer again (it inherits the agent's immunity)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write("0")


def process_settings(req: pb.ExecRequest) -> dict[str, Any]:
    """Popen's env, cwd and identity for a request: the image's user (passwd/group), its home, the given env.

    Raises users.UnknownUser, or NotADirectoryError for a missing working directory.
    """
    identity = users.resolve("/", req.user)
    cwd = req.cwd or "/"
    env = {"PATH": DEFAULT_PATH, "HOME": identity.home, "HOSTNAME": os.uname().nodename}
    env.update(req.env)
    if not os.path.isdir(cwd):
        raise NotADirectoryError(errno.ENOENT, f"cd: {cwd}: No such file or directory")
    as_root = identity.uid == 0 and identity.gid == 0
    return {
        "env": env,
        "cwd": cwd,
        # Only for other users: any of these makes Python fork instead of vfork.
        "user": None if as_root else identity.uid,
        "group": None if as_root else identity.gid,
        "extra_groups": None if as_root else list(identity.groups),
    }


class ExecutionService(pb_grpc.ExecutionServicer):
    def __init__(self) -> None:
        # Feeder threads are reused: starting a thread per command cost 4-10 ms under emulation.
        self.feeders = ThreadPoolExecutor(max_workers=512, thread_name_prefix="feeder")  # as agent.SERVER_THREADS
        self.running: dict[str, Command] = {}
        self.lock = threading.Lock()

    def _spawn(self, req: pb.ExecRequest) -> Command:
        settings = process_settings(req)
        if req.HasField("tty"):
            return self._spawn_tty(req, settings)
        proc = subprocess.Popen(
            list(req.argv),
            stdin=subprocess.PIPE if req.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            **settings,
        )
        release_from_agent_oom_guard(proc.pid)
        return Command(uuid.uuid4().hex[:12], proc, req.timeout_s)

    @staticmethod
    def _spawn_tty(req: pb.ExecRequest, settings: dict[str, Any]) -> Command:
        master, slave = os.openpty()
        try:
            set_tty_size(master, req.tty.rows, req.tty.cols)
            settings["env"].setdefault("TERM", "xterm")
            proc = subprocess.Popen(
                list(req.argv), stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                preexec_fn=_take_controlling_tty, **settings,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        release_from_agent_oom_guard(proc.pid)
        return Command(uuid.uuid4().hex[:12], proc, req.timeout_s, master=master)

    def Exec(self, request_iterator: Iterator[pb.ExecInput], context: Any) -> Iterator[pb.ExecOutput]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "start" or not first.start.argv:
            yield pb.ExecOutput(exit=pb.ExecExit(exit_code=126, error="the first message must start a command"))
            return
        req = first.start
        try:
            cmd = self._spawn(req)
        except users.UnknownUser as exc:
            yield pb.ExecOutput(exit=pb.ExecExit(exit_code=126, error=str(exc)))
            return
        except NotADirectoryError as exc:
            yield pb.ExecOutput(exit=pb.ExecExit(exit_code=126, error=exc.strerror or str(exc)))
            return
        except (OSError, subprocess.SubprocessError, ValueError, OverflowError, TypeError) as exc:
            # ValueError: a NUL byte in argv, env or cwd, '=' in an env name, a "uid" int() cannot read;
            # OverflowError: a uid or gid beyond 32 bits. A shell would say the command cannot be run.
            yield pb.ExecOutput(exit=_failure(req.argv[0], exc))
            return
        with self.lock:
            self.running[cmd.exec_id] = cmd
        self.feeders.submit(self._feed, cmd, request_iterator)
        # When the client goes away mid-command, the command must not live on unseen.
        def on_rpc_end() -> None:
            if cmd.proc.poll() is None:
                cmd.signal_group(signal.SIGKILL)

        context.add_callback(on_rpc_end)
        try:
            yield pb.ExecOutput(started=pb.ExecStarted(exec_id=cmd.exec_id, pid=cmd.proc.pid))
            yield from cmd.outputs()
        finally:
            with self.lock:
                self.running.pop(cmd.exec_id, None)

    @staticmethod
    def _feed(cmd: Command, request_iterator: Iterator[pb.ExecInput]) -> None:
        stdin = cmd.proc.stdin
        try:
            for msg in request_iterator:
                kind = msg.WhichOneof("kind")
                if cmd.master is not None and kind in ("stdin", "close_stdin", "resize"):
                    with contextlib.suppress(OSError):
                        if kind == "stdin":
                            _write_all(cmd.master, msg.stdin)
                        elif kind == "close_stdin":
                            os.write(cmd.master, b"\x04")  # end of input, as a terminal says it
                        else:
                            set_tty_size(cmd.master, msg.resize.rows, msg.resize.cols)
                elif kind == "stdin" and stdin is not None and not stdin.closed:
                    try:
                        stdin.write(msg.stdin)
                        stdin.flush()
                    except BrokenPipeError:
                        stdin.close()
                elif kind == "close_stdin" and stdin is not None:
                    stdin.close()
                elif kind == "signal" and valid_signal(msg.signal):  # others are dropped, the stream goes on
                    cmd.signal_group(msg.signal)
        except Exception:
            pass
        finally:
            if stdin is not None and not stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    stdin.close()

    def Kill(self, request: pb.KillRequest, context: Any) -> pb.KillReply:
        with self.lock:
            cmd = self.running.get(request.exec_id)
        if request.signal and not valid_signal(request.signal):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no such signal: {request.signal}")
        if cmd is None:
            return pb.KillReply(found=False)
        cmd.signal_group(request.signal or signal.SIGKILL)
        return pb.KillReply(found=True)
