"""The host end of the kernel bridge: a Jupyter messaging client for a kernel that runs inside a box.

The agent starts the kernel and relays its shell, iopub, stdin and control channels over one gRPC stream as
raw multipart frames; this client signs and checks them with jupyter_client's Session (the key comes from the
agent) and routes every incoming message to whoever waits for replies to the request it answers (its parent's
msg_id) and to any listeners (the BoxLite Python Jupyter kernel forwards everything).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import signal as signals
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from boxlite._errors import BoxliteError, ExecutionError, InvalidStateError, PortalError, TimeoutError
from boxlite._portal import portal_pb2 as pb
from boxlite._portal import portal_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from jupyter_client.session import Session

    from boxlite._box import Box

log = logging.getLogger("boxlite")
CHANNELS = {pb.SHELL: "shell", pb.IOPUB: "iopub", pb.STDIN: "stdin", pb.CONTROL: "control"}
CHANNEL_IDS = {name: value for value, name in CHANNELS.items()}
# After a kernel_info reply, how long its iopub status may lag before the request is sent again.
IOPUB_GRACE_S = 0.1
INSTALL_FIX = ("use an image with ipykernel: boxlite.CODEBOX_IMAGE (built in), or install it in yours "
               "(`pip install ipykernel` or Debian's python3-ipykernel)")


@dataclass(frozen=True)
class KernelMessage:
    """One Jupyter message (as jupyter_client's Session.deserialize gives it) and the channel it came on."""

    channel: str
    msg: dict[str, Any]

    @property
    def msg_type(self) -> str:
        return str(self.msg["header"]["msg_type"])

    @property
    def parent_id(self) -> str | None:
        parent = self.msg.get("parent_header") or {}
        return parent.get("msg_id")

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.msg.get("content") or {})


@dataclass(frozen=True)
class KernelGone:
    """Put on every waiter's queue when the kernel process ends (exit set) or the portal breaks (error set)."""

    exit_code: int | None = None
    signal: int | None = None
    output_tail: str = ""
    error: BoxliteError | None = None

    def describe(self) -> str:
        if self.error is not None:
            return str(self.error)
        if self.signal:
            try:
                name = signals.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}" + (" (out of memory?)" if self.signal == signals.SIGKILL else "")
        return f"exited with code {self.exit_code}"


Delivery = KernelMessage | KernelGone


@dataclass
class _Waiter:
    queue: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)


def _cell_id(channel: str, msg: dict[str, Any]) -> str | None:
    """The msg_id of a code cell (a non-silent execute_request), else None."""
    header = msg.get("header") or {}
    content = msg.get("content") or {}
    if channel != "shell" or header.get("msg_type") != "execute_request" or not isinstance(content, dict) \
            or content.get("silent"):
        return None
    return str(header.get("msg_id"))


def _start_error(box: Box, exc: grpc.aio.AioRpcError) -> BoxliteError:
    detail = exc.details() or ""
    code = exc.code()
    if code == grpc.StatusCode.FAILED_PRECONDITION and "No module named" in detail and "ipykernel" in detail:
        return ExecutionError(f"the image of box {box.id} has no ipykernel, so no Python kernel can run in it",
                              fix=INSTALL_FIX)
    if code == grpc.StatusCode.NOT_FOUND:
        return ExecutionError(f"cannot start a Python kernel in box {box.id}: {detail}", fix=INSTALL_FIX)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(f"the Python kernel in box {box.id} did not start in time: {detail}",
                            fix="give the box more memory or CPUs, or raise the start timeout")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
        return ExecutionError(f"cannot start a Python kernel in box {box.id}: {detail}",
                              fix="check the kernel command, user and working directory")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return PortalError(f"the agent of box {box.id} has no kernel service (an older agent)",
                           fix="recreate the box so it boots the current agent")
    return box._explain_portal_failure()


class KernelClient:
    """Start, connect to and talk to one kernel (`kernel_id`) in a running box."""

    def __init__(self, box: Box, kernel_id: str = "default") -> None:
        self.box = box
        self.kernel_id = kernel_id
        self.info: pb.KernelInfo | None = None
        self.session: Session | None = None
        self.kernel_info: dict[str, Any] = {}
        self.gone: KernelGone | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._listeners: list[Callable[[Delivery], None]] = []
        self._identity = uuid.uuid4().hex.encode()
        # Code cells sent and not answered yet. Each cell the kernel runs is one of the box's commands (see
        # BoxMetrics), whoever sends it (CodeBox.run or the Jupyter kernel's frontend): counting here counts them
        # all, once. A cell is counted when it is answered (or can no longer be), not when it is sent, so that one
        # the kernel aborted (after an earlier error) and the Jupyter kernel then sent again counts once.
        self._cells: set[str] = set()

    @property
    def _stub(self) -> pb_grpc.KernelStub:
        return pb_grpc.KernelStub(self.box._client._channel_for_loop())

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done() and self.gone is None

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, process: pb.ExecRequest, *, restart: bool = False, timeout: float = 120.0
                    ) -> pb.KernelInfo:
        """Start the kernel (or find it running) and connect to it; returns when it answers kernel_info."""
        await self.disconnect()
        request = pb.KernelStartRequest(kernel_id=self.kernel_id, process=process, restart=restart,
                                        start_timeout_s=timeout)
        try:
            info = await self._stub.Start(request, timeout=timeout + 10)
        except grpc.aio.AioRpcError as exc:
            raise _start_error(self.box, exc) from None
        self._use_info(info)
        self.info = info  # with how it started (the stream's copy says "already running")
        await self.connect(timeout=timeout)
        return info

    def _use_info(self, info: pb.KernelInfo) -> None:
        from jupyter_client.session import Session

        """Sign with this kernel's key from now on (a new session when the kernel is another one)."""
        if self.session is None or self.info is None or self.info.key != info.key:
            self.session = Session(key=info.key, signature_scheme=info.signature_scheme or "hmac-sha256",
                                   username="boxlite", check_pid=False)
        if self.info is None or self.info.pid != info.pid:
            self.info = info

    async def attach(self, timeout: float = 60.0) -> None:
        """Connect to a kernel that already runs (one restored with its box from a template, say) without
        Start: the first message of the stream carries its key. ExecutionError when none runs."""
        await self.disconnect()
        await self.connect(timeout=timeout)

    async def connect(self, timeout: float = 60.0) -> None:
        self.gone = None
        call = self._stub.Connect()
        try:
            await call.write(pb.KernelClientMessage(connect=pb.KernelConnect(kernel_id=self.kernel_id,
                                                                               identity=self._identity)))
            first = await call.read()
            if first is not grpc.aio.EOF and first.WhichOneof("kind") == "info":
                self._use_info(first.info)
                first = await call.read()
        except grpc.aio.AioRpcError as exc:
            call.cancel()
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ExecutionError(f"no Python kernel runs in box {self.box.id}: {exc.details()}",
                                     fix="restart it (CodeBox.restart() or `%boxlite restart`)") from None
            raise self.box._explain_portal_failure() from None
        if self.session is None:
            call.cancel()
            raise InvalidStateError("the kernel's stream did not say which kernel it is", fix="call start()")
        if first is grpc.aio.EOF or first.WhichOneof("kind") == "exited":
            call.cancel()
            gone = self._gone_from(first.exited) if first is not grpc.aio.EOF else KernelGone()
            raise ExecutionError(f"the Python kernel in box {self.box.id} {gone.describe()}",
                                 fix="restart it (CodeBox.restart() or `%boxlite restart`)")
        self._call = call
        self._reader = asyncio.get_running_loop().create_task(self._read_forever(call))
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:
        """Ask kernel_info until its reply and an iopub message for it arrive: then iopub is subscribed too
        (a SUB misses whatever the kernel publishes before its subscription lands, as in jupyter_client).

        Each request waits for its reply as long as it takes; after the reply its iopub status gets a short
        grace, and without it the next request goes at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.send("shell", "kernel_info_request", {})
            waiter = self.watch(msg["header"]["msg_id"])
            got_reply = got_iopub = False
            limit = deadline
            try:
                while not (got_reply and got_iopub):
                    remaining = limit - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(waiter.queue.get(), remaining)
                    except builtins.TimeoutError:
                        break
                    if isinstance(item, KernelGone):
                        raise ExecutionError(f"the Python kernel in box {self.box.id} {item.describe()} while "
                                             f"starting:\n{item.output_tail}", fix=INSTALL_FIX)
                    if item.channel == "shell" and item.msg_type == "kernel_info_reply":
                        got_reply, limit = True, min(deadline, loop.time() + IOPUB_GRACE_S)
                        self.kernel_info = item.content
                    elif item.channel == "iopub":
                        got_iopub = True
            finally:
                self.unwatch(msg["header"]["msg_id"], waiter)
            if got_reply and got_iopub:
                return
            if loop.time() >= deadline:
                raise TimeoutError(f"the Python kernel in box {self.box.id} did not answer within {timeout:g} s",
                                   fix="restart it; give the box more memory if it keeps happening")

    async def disconnect(self) -> None:
        self._cells_unfinished()  # no reply can come now: the kernel is being restarted or left
        call, self._call = self._call, None
        reader, self._reader = self._reader, None
        if call is not None:
            call.cancel()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def interrupt(self) -> None:
        """SIGINT to the kernel: KeyboardInterrupt in the running cell."""
        try:
            await self._stub.Interrupt(pb.KernelRef(kernel_id=self.kernel_id), timeout=10)
        except grpc.aio.AioRpcError:
            raise self.box._explain_portal_failure() from None

    async def shutdown(self, grace: float = 2.0) -> None:
        """Ask the kernel to shut down, then stop its process (and everything it started)."""
        with contextlib.suppress(BoxliteError):
            if self.connected:
                await self.send("control", "shutdown_request", {"restart": False})
        await self.disconnect()
        try:
            await self._stub.Stop(pb.KernelStopRequest(kernel_id=self.kernel_id, grace_s=grace), timeout=grace + 15)
        except grpc.aio.AioRpcError:
            raise self.box._explain_portal_failure() from None

    # -- messages -------------------------------------------------------------------------------------------
    def watch(self, msg_id: str) -> _Waiter:
        """A queue of every message whose parent is `msg_id` (and a KernelGone if the kernel ends first)."""
        waiter = _Waiter()
        self._waiters.setdefault(msg_id, []).append(waiter)
        if self.gone is not None:
            waiter.queue.put_nowait(self.gone)
        return waiter

    def unwatch(self, msg_id: str, waiter: _Waiter) -> None:
        waiters = self._waiters.get(msg_id, [])
        with contextlib.suppress(ValueError):
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(msg_id, None)

    def add_listener(self, listener: Callable[[Delivery], None]) -> None:
        """Call `listener` with every message from the kernel, in order (also those nobody waits for), and with
        a KernelGone when the kernel ends or the connection breaks."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Delivery], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def send(self, channel: str, msg_type: str, content: dict[str, Any], *,
                   parent: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
                   buffers: list[bytes] | None = None) -> dict[str, Any]:
        """Sign and send a new message; returns it (its header's msg_id identifies the replies)."""
        if self.session is None:
            raise InvalidStateError("the kernel has not been started", fix="call start() first")
        msg = self.session.msg(msg_type, content, parent=parent, metadata=metadata)
        await self.send_msg(channel, msg, buffers)
        return msg

    async def send_msg(self, channel: str, msg: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        """Sign and send a message made elsewhere (a frontend's request being forwarded, say)."""
        if self.session is None or self._call is None:
            raise self.box._explain_portal_failure() if self.gone and self.gone.error else ExecutionError(
                f"the Python kernel in box {self.box.id} is not connected"
                + (f": it {self.gone.describe()}" if self.gone else ""),
                fix="restart it (CodeBox.restart() or `%boxlite restart`)")
        frames = self.session.serialize(msg)
        if buffers:
            frames.extend(bytes(b) for b in buffers)
        request = pb.KernelClientMessage(message=pb.KernelFrames(channel=CHANNEL_IDS[channel], frames=frames))
        cell = _cell_id(channel, msg)
        if cell is not None:
            self._cells.add(cell)  # before the write: its reply may be read before the write returns
        try:
            async with self._write_lock:
                await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            if cell is not None:
                self._cells.discard(cell)
            raise self.box._explain_portal_failure() from None

    def _cell_answered(self, reply: KernelMessage) -> None:
        """A cell's reply: "ok" is a command, any other answer a command that failed; "aborted" (the kernel did not
        run it, after an earlier error) is neither."""
        cell = reply.parent_id
        if cell is None or cell not in self._cells:
            return
        self._cells.discard(cell)
        status = reply.content.get("status")
        if status == "aborted":
            return
        self._count(self.box._count_command)
        if status != "ok":
            self._count(self.box._count_error)

    def _cells_unfinished(self) -> None:
        """Cells that will never be answered (the kernel died, or is being restarted) ran and failed."""
        cells, self._cells = self._cells, set()
        for _ in cells:
            self._count(self.box._count_command)
            self._count(self.box._count_error)

    def _count(self, bump: Callable[[], None]) -> None:
        # Counting runs inside the message path: a busy state database must not break the kernel's stream.
        try:
            bump()
        except BoxliteError as exc:
            log.warning("could not count a cell in the metrics of box %s: %s", self.box.id, exc)

    async def _read_forever(self, call: Any) -> None:
        assert self.session is not None
        session = self.session
        gone = KernelGone(error=PortalError(f"the connection to the kernel of box {self.box.id} ended",
                                            fix="restart the kernel"))
        try:
            while (reply := await call.read()) is not grpc.aio.EOF:
                kind = reply.WhichOneof("kind")
                if kind == "message":
                    self._deliver(session, reply.message)
                elif kind == "batch":
                    for frames in reply.batch.messages:
                        self._deliver(session, frames)
                elif kind == "exited":
                    gone = self._gone_from(reply.exited)
                    break
        except grpc.aio.AioRpcError:
            gone = KernelGone(error=self.box._explain_portal_failure())
        except asyncio.CancelledError:
            return
        except Exception as exc:  # a bug here must end the waits, not hang them
            gone = KernelGone(error=PortalError(f"reading from the kernel of box {self.box.id} failed: {exc!r}",
                                                fix="restart the kernel"))
        self.gone = gone
        self._cells_unfinished()
        for waiters in list(self._waiters.values()):
            for waiter in waiters:
                waiter.queue.put_nowait(gone)
        for listener in list(self._listeners):
            listener(gone)

    @staticmethod
    def _gone_from(exited: pb.KernelExit) -> KernelGone:
        return KernelGone(exit_code=exited.exit_code, signal=exited.signal or None, output_tail=exited.output_tail)

    def _deliver(self, session: Session, frames_msg: pb.KernelFrames) -> None:
        try:
            _idents, parts = session.feed_identities(list(frames_msg.frames), copy=True)
            msg = session.deserialize(parts, content=True, copy=True)
        except Exception:  # a malformed or badly signed message: nothing sensible to route
            return
        item = KernelMessage(CHANNELS.get(frames_msg.channel, "shell"), msg)
        if item.channel == "shell" and item.msg_type == "execute_reply":
            self._cell_answered(item)  # counted before anyone hears of the reply
        for listener in list(self._listeners):
            listener(item)
        parent_id = item.parent_id
        if parent_id:
            for waiter in self._waiters.get(parent_id, []):
                waiter.queue.put_nowait(item)
