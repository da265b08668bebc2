"""A command running in a box: its output as it is produced, its stdin, its exit, and killing it."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import signal as signals
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from boxlite._errors import ExecutionError, InvalidStateError, PortalError, TimeoutError
from boxlite._exec_args import check_tty_size
from boxlite._portal import portal_pb2 as pb
from boxlite._portal_client import PortalClient


@dataclass(frozen=True)
class ExecStatus:
    """How a command ended. exit_code is negative (-N) when signal N killed it."""

    exit_code: int
    signal: int = 0
    timed_out: bool = False
    duration_ms: float = 0.0
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0


@dataclass
class ExecResult:
    """The whole result of a command (SimpleBox.exec)."""

    exit_code: int
    stdout: str
    stderr: str
    error_message: str | None = None

    def __str__(self) -> str:
        return self.stdout


class _Stream:
    """One output stream: chunks as they arrive, readable as bytes or as decoded lines (once: it is not kept)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.consumed = False

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        if self.consumed:
            raise InvalidStateError(f"the command's {self.name} has already been read: output is delivered once",
                                    fix="iterate each stream once and keep what you need (or use collect() or "
                                    "SimpleBox.exec for the whole output)")
        self.consumed = True
        while (chunk := await self.chunks.get()) is not None:
            yield chunk

    async def iter_lines(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        async for chunk in self.iter_bytes():
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line + "\n"
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending


class Execution:
    """Returned by Box.exec. Iterate stdout()/stderr(), write stdin, wait() for the exit, kill()."""

    def __init__(self, client: PortalClient, command: list[str], on_exit: Callable[[ExecStatus], None]) -> None:
        self._client = client
        self.command = command
        self.id = ""
        self.pid = 0
        self._call: grpc.aio.StreamStreamCall | None = None
        self._stdout = _Stream("stdout")
        self._stderr = _Stream("stderr")
        self._status: asyncio.Future[ExecStatus] = asyncio.get_running_loop().create_future()
        self._reader: asyncio.Task[None] | None = None
        self._on_exit = on_exit
        self._stdin_closed = False

    async def _start(self, request: pb.ExecRequest) -> None:
        self._call = self._client.execution.Exec()
        try:
            await self._call.write(pb.ExecInput(start=request))
            first = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._client.error(exc, "exec") from None
        if first is grpc.aio.EOF:
            raise PortalError(f"the agent closed the exec stream of box {self._client.box_id} without answering",
                              fix=self._portal_fix())
        if first.WhichOneof("kind") == "exit":
            # The command could not be started: report it as a shell would, through its output and exit code.
            if first.exit.error:
                self._stderr.chunks.put_nowait((first.exit.error + "\n").encode())
            self._finish(first.exit)
            return
        self.id, self.pid = first.started.exec_id, first.started.pid
        self._reader = asyncio.ensure_future(self._read())

    def _finish(self, exit_msg: pb.ExecExit | None, error: BaseException | None = None) -> None:
        self._stdout.chunks.put_nowait(None)
        self._stderr.chunks.put_nowait(None)
        if self._status.done():
            return
        if error is not None:
            self._status.set_exception(error)
            # Raised from wait(); nobody may wait, and an unretrieved exception is only noise then.
            self._status.add_done_callback(lambda f: f.exception())
            return
        assert exit_msg is not None
        code = -exit_msg.signal if exit_msg.signal else exit_msg.exit_code
        status = ExecStatus(exit_code=code, signal=exit_msg.signal, timed_out=exit_msg.timed_out,
                            duration_ms=exit_msg.duration_ms, error=exit_msg.error or None)
        self._status.set_result(status)
        self._on_exit(status)

    async def _read(self) -> None:
        assert self._call is not None
        try:
            while (msg := await self._call.read()) is not grpc.aio.EOF:
                kind = msg.WhichOneof("kind")
                if kind == "stdout":
                    self._stdout.chunks.put_nowait(msg.stdout)
                elif kind == "stderr":
                    self._stderr.chunks.put_nowait(msg.stderr)
                elif kind == "exit":
                    self._finish(msg.exit)
                    return
            self._finish(None, PortalError(f"the exec stream of box {self._client.box_id} ended without an exit",
                                           fix=self._portal_fix()))
        except grpc.aio.AioRpcError as exc:
            self._finish(None, self._client.error(exc, "exec"))
        except asyncio.CancelledError:
            self._finish(None, PortalError(f"the exec stream of box {self._client.box_id} was cancelled (its event "
                                           "loop is closing)", fix="wait for the command before closing the loop"))
            raise

    def _portal_fix(self) -> str:
        return f"check the box with `boxlite info {self._client.box_id}`; restart it if it stopped"

    def stdout(self) -> AsyncIterator[str]:
        """The command's standard output as lines (each ending in a newline, except perhaps the last)."""
        return self._stdout.iter_lines()

    def stderr(self) -> AsyncIterator[str]:
        return self._stderr.iter_lines()

    def stdout_bytes(self) -> AsyncIterator[bytes]:
        return self._stdout.iter_bytes()

    def stderr_bytes(self) -> AsyncIterator[bytes]:
        return self._stderr.iter_bytes()

    async def write_stdin(self, data: bytes | str) -> None:
        if self._stdin_closed:
            raise InvalidStateError(f"stdin of {self._what()} is closed: close_stdin() was called",
                                    fix="write all the input before close_stdin()")
        if not isinstance(data, bytes | bytearray | memoryview | str):
            raise ExecutionError(f"stdin data must be bytes or str, got {type(data).__name__}",
                                 fix="encode it first, e.g. write_stdin(str(value))")
        try:
            payload = data.encode() if isinstance(data, str) else bytes(data)
        except UnicodeEncodeError:
            raise ExecutionError("stdin text is not valid (it holds a lone surrogate)",
                                 fix="pass bytes, or text that can be encoded as UTF-8") from None
        await self._send(pb.ExecInput(stdin=payload))

    async def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            await self._send(pb.ExecInput(close_stdin=True))

    async def resize(self, rows: int, cols: int) -> None:
        """Change the size of a tty command's terminal (it gets SIGWINCH)."""
        rows, cols = check_tty_size((rows, cols))
        await self._send(pb.ExecInput(resize=pb.TtySize(rows=rows, cols=cols)))

    # Names the reference SDK uses for the same two operations.
    send_input = write_stdin

    async def _send(self, msg: pb.ExecInput) -> None:
        if self._call is None or self._status.done():
            return
        # If the command has ended meanwhile the write fails; its exit status says how it ended.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._call.write(msg)

    async def kill(self, signal: int = signals.SIGKILL) -> None:
        """Send `signal` to the command's whole process group."""
        if isinstance(signal, bool) or not isinstance(signal, int) or not 1 <= signal < signals.NSIG:
            raise ExecutionError(f"signal must be a signal number from 1 to {signals.NSIG - 1}, got {signal!r}",
                                 fix="pass e.g. signal.SIGTERM")
        if self._status.done():
            return
        await self._send(pb.ExecInput(signal=int(signal)))

    async def wait(self, timeout: float | None = None) -> ExecStatus:
        """The command's exit. With a timeout, boxlite.TimeoutError when it is still running by then (it keeps
        running: kill() it, or wait again)."""
        if timeout is None:
            return await asyncio.shield(self._status)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            raise ExecutionError(f"timeout must be a number of seconds (0 or more), got {timeout!r}",
                                 fix="pass e.g. wait(timeout=30), or None to wait for as long as it runs")
        # asyncio.wait neither cancels the exit future nor confuses its own timeout with an error of the command.
        await asyncio.wait([self._status], timeout=timeout)
        if not self._status.done():
            raise TimeoutError(f"{self._what()} is still running after {timeout:g} s",
                               fix="wait longer, or stop it with `await execution.kill()`")
        return self._status.result()

    def _what(self) -> str:
        return f"command {self.command[0] if self.command else '?'!r} (exec {self.id or '-'}) in box " \
               f"{self._client.box_id}"

    async def collect(self) -> tuple[bytes, bytes, ExecStatus]:
        """All of stdout and stderr, and the exit (for callers that want the whole result)."""
        async def drain(stream: _Stream) -> bytes:
            return b"".join([chunk async for chunk in stream.iter_bytes()])

        out, err = await asyncio.gather(drain(self._stdout), drain(self._stderr))
        return out, err, await self.wait()

    @property
    def done(self) -> bool:
        return self._status.done()
