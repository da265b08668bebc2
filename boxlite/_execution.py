"""A command running in a box: its output as it is produced, its stdin, its exit, and killing it."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import signal as signals
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from boxlite._errors import PortalError
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
    """One output stream: chunks as they arrive, readable as bytes or as decoded lines."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.consumed = False

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        if self.consumed:
            raise RuntimeError("this output stream has already been read")
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
        self._stdout = _Stream()
        self._stderr = _Stream()
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
            raise PortalError(f"the agent closed the exec stream of box {self._client.box_id} without answering")
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
            self._finish(None, PortalError(f"the exec stream of box {self._client.box_id} ended without an exit"))
        except grpc.aio.AioRpcError as exc:
            self._finish(None, self._client.error(exc, "exec"))
        except asyncio.CancelledError:
            self._finish(None, PortalError("the exec stream was cancelled"))
            raise

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
            raise ValueError("stdin is closed")
        await self._send(pb.ExecInput(stdin=data.encode() if isinstance(data, str) else data))

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
        if self._status.done():
            return
        await self._send(pb.ExecInput(signal=int(signal)))

    async def wait(self, timeout: float | None = None) -> ExecStatus:
        if timeout is None:
            return await asyncio.shield(self._status)
        return await asyncio.wait_for(asyncio.shield(self._status), timeout)

    async def collect(self) -> tuple[bytes, bytes, ExecStatus]:
        """All of stdout and stderr, and the exit (for callers that want the whole result)."""
        async def drain(stream: _Stream) -> bytes:
            return b"".join([chunk async for chunk in stream.iter_bytes()])

        out, err = await asyncio.gather(drain(self._stdout), drain(self._stderr))
        return out, err, await self.wait()

    @property
    def done(self) -> bool:
        return self._status.done()
