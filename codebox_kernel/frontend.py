"""The kernel's side of the Jupyter wire: the five sockets a frontend connects to, bound from the connection
file, and the frontend's session (its key signs and checks every message).

Outgoing messages go through one queue and one sender task, so they leave in the order they were made, whoever
made them (the relay from the box, host-side cells, widget updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from boxlite import ConfigError

ROUTER_CHANNELS = ("shell", "control", "stdin")


@dataclass(frozen=True)
class Incoming:
    channel: str
    idents: list[bytes]
    msg: dict[str, Any]

    @property
    def msg_type(self) -> str:
        return str(self.msg["header"]["msg_type"])

    @property
    def msg_id(self) -> str:
        return str(self.msg["header"]["msg_id"])

    @property
    def content(self) -> dict[str, Any]:
        return dict(self.msg.get("content") or {})


def read_connection_file(path: str) -> dict[str, Any]:
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the connection file {path}: {exc}",
                          fix="start the kernel from Jupyter, which writes the connection file") from None
    missing = [k for k in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port", "key")
               if k not in info]
    if missing:
        raise ConfigError(f"the connection file {path} lacks {', '.join(missing)}",
                          fix="start the kernel from Jupyter, which writes a complete connection file")
    return dict(info)


# An outbox entry that is no message: "greet the clients that subscribed to iopub" (see `run_sender`).
GREET = b"greet"


class Frontend:
    """Bound sockets and the signing session for one connection file."""

    def __init__(self, connection: dict[str, Any]) -> None:
        self.connection = connection
        key = str(connection.get("key", "")).encode()
        self.session = Session(key=key, signature_scheme=connection.get("signature_scheme") or "hmac-sha256",
                               username="boxlite", check_pid=False)
        self.kernel_id = uuid.uuid4().hex
        # Messages made here carry the session of the kernel in the box (the last one relayed), so to a frontend
        # all come from one kernel: JupyterLab drops comm messages whose header's session is not that of the
        # last message it received ("Canceling handling of old message"), so host-made ones (the metrics
        # panel's) and relayed ones (the box's widgets') would cancel each other where they interleave.
        self.kernel_session = self.session.session
        self._ctx = zmq.asyncio.Context()
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        self._outbox: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self._greeted = asyncio.Event()
        self._hb: threading.Thread | None = None
        self._hb_ctx: zmq.Context[Any] | None = None

    def _url(self, channel: str) -> str:
        transport = self.connection.get("transport", "tcp")
        ip = self.connection.get("ip", "127.0.0.1")
        port = self.connection[f"{channel}_port"]
        return f"ipc://{ip}-{port}" if transport == "ipc" else f"{transport}://{ip}:{port}"

    def bind(self) -> None:
        for channel in ROUTER_CHANNELS:
            sock = self._ctx.socket(zmq.ROUTER)
            sock.linger = 1000
            sock.router_handover = 1
            sock.bind(self._url(channel))
            self.sockets[channel] = sock
        # XPUB: each new subscriber is greeted with an iopub_welcome (JEP 65), so a client knows when it starts
        # receiving (a plain PUB drops what is published before the subscription lands).
        iopub = self._ctx.socket(zmq.XPUB)
        iopub.linger = 1000
        iopub.setsockopt(zmq.XPUB_VERBOSE, 1)
        iopub.bind(self._url("iopub"))
        self.sockets["iopub"] = iopub
        # Heartbeat: echo whatever arrives, from a thread, so it answers even while the loop is busy.
        self._hb_ctx = zmq.Context()
        hb = self._hb_ctx.socket(zmq.ROUTER)
        hb.linger = 0
        hb.bind(self._url("hb"))
        self._hb = threading.Thread(target=_echo, args=(hb,), name="heartbeat", daemon=True)
        self._hb.start()

    async def recv(self, channel: str) -> Incoming | None:
        """The next message on a ROUTER channel; None for one that is malformed or badly signed."""
        frames = await self.sockets[channel].recv_multipart(copy=True)
        try:
            idents, parts = self.session.feed_identities(frames, copy=True)
            msg = self.session.deserialize(parts, content=True, copy=True)
        except Exception:
            return None
        return Incoming(channel, list(idents), msg)

    def send(self, channel: str, msg: dict[str, Any], idents: list[bytes] | None = None,
             buffers: list[Any] | None = None) -> None:
        """Sign `msg` (header and parent kept as they are) and queue it for `channel`."""
        session = msg["header"].get("session")
        if session and session != self.session.session:  # relayed from the box's kernel
            self.kernel_session = session
        if channel == "iopub" and not idents:
            idents = [f"kernel.{self.kernel_id}.{msg['header']['msg_type']}".encode()]
        frames = self.session.serialize(msg, ident=idents)
        frames.extend(bytes(b) for b in (buffers if buffers is not None else msg.get("buffers") or []))
        self._outbox.put_nowait([channel.encode(), *frames])

    def new(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None = None,
            metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """A message made by this kernel (its header with the box kernel's session, see `kernel_session`)."""
        msg = self.session.msg(msg_type, content, parent=parent or {}, metadata=metadata)
        msg["header"]["session"] = self.kernel_session
        return msg

    async def watch_subscriptions(self) -> None:
        """Wake the sender whenever a client subscribes to iopub (the sender alone reads the subscriptions)."""
        poller = zmq.asyncio.Poller()
        poller.register(self.sockets["iopub"], zmq.POLLIN)
        while True:
            await poller.poll()
            self._greeted.clear()
            self._outbox.put_nowait([GREET])
            await self._greeted.wait()

    async def run_sender(self) -> None:
        """Hand queued messages to their sockets. Before each iopub message, every client that subscribed since
        the last one is sent its iopub_welcome (JEP 65), so a subscriber's first message is always its welcome,
        even when it subscribed while the kernel was publishing (its "starting" status, say)."""
        while True:
            channel, *frames = await self._outbox.get()
            if channel in (GREET, b"iopub"):
                await self._welcome_new_subscribers()
            if channel != GREET:
                with contextlib.suppress(zmq.ZMQError):
                    await self.sockets[channel.decode()].send_multipart(frames, copy=True)

    async def _welcome_new_subscribers(self) -> None:
        iopub = self.sockets["iopub"]
        while True:
            try:
                frames = await iopub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            event = frames[0] if frames else b""
            if event[:1] == b"\x01":
                topic = event[1:].decode(errors="replace")
                welcome = self.new("iopub_welcome", {"subscription": topic})
                with contextlib.suppress(zmq.ZMQError):
                    await iopub.send_multipart(self.session.serialize(welcome, ident=[event[1:]]), copy=True)
        self._greeted.set()

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait until what is queued has been handed to the sockets."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._outbox.empty() and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=500)
        self._ctx.term()
        if self._hb_ctx is not None:
            self._hb_ctx.destroy(linger=0)


def _echo(sock: zmq.Socket[Any]) -> None:
    with contextlib.suppress(zmq.ZMQError):
        zmq.proxy(sock, sock)
