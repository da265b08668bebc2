"""The host end of the serial link: host connections multiplexed on the VM's virtio-serial portal port.

Used by the shim for boxes that must be snapshot-capable (vhost-user vsock cannot be migrated). The frame
layout is described in proto/portal.proto ("the serial link") and implemented for the guest in
guest/serial_link.py: type (u8) | stream id (u32 BE) | length (u32 BE) | payload.

Flow control is gRPC's own (HTTP/2 windows bound what is in flight per stream), so the link buffers what a
slow reader has not taken yet instead of stalling every other stream behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

HEADER = struct.Struct(">BII")
OPEN, DATA, EOF, CLOSE, READY, RESET, RESTORE, RESTORED = range(1, 9)
CHUNK = 256 * 1024


def encode(kind: int, stream: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, stream, len(payload)) + payload


class FrameParser:
    """Turns a byte stream into (kind, stream, payload) frames, however the bytes are split."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        frames = []
        at = 0
        size = HEADER.size
        while len(self._buf) - at >= size:
            kind, stream, length = HEADER.unpack_from(self._buf, at)
            if len(self._buf) - at - size < length:
                break
            frames.append((kind, stream, bytes(self._buf[at + size:at + size + length])))
            at += size + length
        del self._buf[:at]
        return frames


class _Stream:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.done = asyncio.Event()  # the agent's side ended (EOF or CLOSE)


class HostLink:
    """One connection to QEMU's chardev of the portal port, shared by every host connection to the box."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._control: dict[int, asyncio.Future[bytes]] = {}
        self.closed = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._read_loop())

    def _send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        if not self._writer.is_closing():
            self._writer.write(encode(kind, stream, payload))

    def expect(self, kind: int) -> asyncio.Future[bytes]:
        """A future for the next control frame of `kind` (READY, RESTORED) from the agent."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._control[kind] = fut
        return fut

    def reset(self) -> None:
        """Tell the agent to forget every stream (those of a previous host end, or of a snapshot's template)."""
        self._send(RESET, 0)

    def restore(self, request: bytes) -> asyncio.Future[bytes]:
        fut = self.expect(RESTORED)
        self._send(RESTORE, 0, request)
        return fut

    async def _read_loop(self) -> None:
        parser = FrameParser()
        try:
            while data := await self._reader.read(CHUNK):
                for kind, sid, payload in parser.feed(data):
                    self._dispatch(kind, sid, payload)
        except (ConnectionError, OSError):
            pass
        finally:
            for stream in self._streams.values():
                stream.done.set()
                stream.writer.close()
            self._streams.clear()
            for fut in self._control.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the VM's portal port closed"))
            if not self.closed.done():
                self.closed.set_result(None)

    def _dispatch(self, kind: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            fut = self._control.pop(kind, None)
            if fut is not None and not fut.done():
                fut.set_result(payload)
            return
        stream = self._streams.get(sid)
        if stream is None:
            return
        if kind == DATA:
            stream.writer.write(payload)
        elif kind == EOF:
            stream.done.set()
            if stream.writer.can_write_eof():
                with contextlib.suppress(OSError):
                    stream.writer.write_eof()
        elif kind == CLOSE:
            self._streams.pop(sid, None)
            stream.done.set()
            stream.writer.close()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Carry one host connection (to the box's portal socket) over the link until both ends are done."""
        sid = self._next_id
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        stream = self._streams[sid] = _Stream(writer)
        self._send(OPEN, sid)
        try:
            while data := await reader.read(CHUNK):
                self._send(DATA, sid, data)
                await self._writer.drain()
            self._send(EOF, sid)
            # The answer keeps flowing until the agent's side ends too.
            await stream.done.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            if self._streams.pop(sid, None) is not None:
                self._send(CLOSE, sid)
            writer.close()

    async def aclose(self) -> None:
        self._writer.close()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
