"""The portal over a virtio-serial port: many host connections multiplexed on one byte stream.

Why: a VM can only be snapshotted (QEMU migration) when all its devices are migratable, and vhost-user vsock
is not. A virtio-serial port is, but carries one byte stream, so connections are multiplexed on it in frames
(the layout is documented in proto/portal.proto, "The serial link"):

    type (1 byte) | stream id (4 bytes, big endian) | payload length (4 bytes, big endian) | payload

The host opens a stream per connection (OPEN), sends its bytes (DATA) and half-closes it (EOF); the agent
connects each stream to the gRPC server's unix socket and sends the answers back the same way. CLOSE aborts a
stream. Stream 0 carries control messages: READY (agent -> host, at boot), RESET (host -> agent: forget every
stream, sent by each new host end), RESTORE (host -> agent after a snapshot restore) and RESTORED (the reply).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

PORT_NAME = "boxlite.portal"
HEADER = struct.Struct(">BII")
OPEN, DATA, EOF, CLOSE, READY, RESET, RESTORE, RESTORED = range(1, 9)
CHUNK = 1 << 18
MAX_PAYLOAD = 1 << 20


def find_port(name: str = PORT_NAME) -> str | None:
    """The /dev path of the virtio-serial port called `name`, or None when the VM has none."""
    base = "/sys/class/virtio-ports"
    try:
        entries = os.listdir(base)
    except OSError:
        return None
    for entry in entries:
        try:
            with open(f"{base}/{entry}/name") as f:
                if f.read().strip() == name:
                    return f"/dev/{entry}"
        except OSError:
            continue
    return None


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
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent_eof = False
        self.got_eof = False


class SerialLink:
    """The agent's end: serve host streams by connecting each to `upstream` (a unix socket path)."""

    def __init__(self, fd: int, upstream: str,
                 on_restore: Callable[[bytes], tuple[bytes, Callable[[], None]]]) -> None:
        self.fd = fd
        self.upstream = upstream
        self.on_restore = on_restore
        self._write_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        # Pump threads are reused, not made per stream: a restored clone finds idle ones in its template's
        # memory, and making a thread is one more first-time code path (slow under emulation) on its first call.
        self._pumps = ThreadPoolExecutor(max_workers=1024, thread_name_prefix="serial-pump")

    # -- writing -------------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        with self._write_lock:
            self._write(encode(kind, stream, payload))

    def _send_for(self, sid: int, owner: _Stream, kind: int, payload: bytes = b"") -> bool:
        """Send for a stream only while it is still the live stream with that id (not reset meanwhile)."""
        with self._write_lock:
            if self._streams.get(sid) is not owner:
                return False
            self._write(encode(kind, sid, payload))
            return True

    # -- streams -------------------------------------------------------------------------------------------
    def _open(self, sid: int) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.upstream)
        except OSError:
            sock.close()
            self.send(CLOSE, sid)
            return
        stream = _Stream(sock)
        with self._write_lock:
            self._streams[sid] = stream
        self._pumps.submit(self._pump_up, sid, stream)

    def _pump_up(self, sid: int, stream: _Stream) -> None:
        """Bytes from the gRPC server go to the host as DATA frames; its end of output as EOF."""
        try:
            while data := stream.sock.recv(CHUNK):
                if not self._send_for(sid, stream, DATA, data):
                    return
        except OSError:
            pass
        if self._send_for(sid, stream, EOF):
            stream.sent_eof = True
            self._maybe_forget(sid, stream)

    def _maybe_forget(self, sid: int, stream: _Stream) -> None:
        if stream.sent_eof and stream.got_eof:
            self._forget(sid, stream)

    def _forget(self, sid: int, stream: _Stream | None) -> None:
        with self._write_lock:
            if stream is None or self._streams.get(sid) is stream:
                stream = self._streams.pop(sid, None)
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.sock.close()

    def _reset(self) -> None:
        with self._write_lock:
            streams, self._streams = self._streams, {}
        for stream in streams.values():
            with contextlib.suppress(OSError):
                stream.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                stream.sock.close()

    def _restore(self, payload: bytes) -> None:
        reply, work = self.on_restore(payload)
        self.send(RESTORED, 0, reply)
        work()

    # -- the reader ----------------------------------------------------------------------------------------
    def handle(self, kind: int, sid: int, payload: bytes) -> None:
        if kind == OPEN:
            self._open(sid)
        elif kind == DATA:
            stream = self._streams.get(sid)
            if stream is not None:
                try:
                    stream.sock.sendall(payload)
                except OSError:
                    self._forget(sid, stream)
                    self.send(CLOSE, sid)
        elif kind == EOF:
            stream = self._streams.get(sid)
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.sock.shutdown(socket.SHUT_WR)
                stream.got_eof = True
                self._maybe_forget(sid, stream)
        elif kind == CLOSE:
            self._forget(sid, None)
        elif kind == RESET:
            self._reset()
        elif kind == RESTORE:
            # Inline, on purpose: every frame after it (the host's first command, say) is served only once the
            # clone has its own entropy, clock and names. The reply goes first (see restore.apply_serialized).
            self._restore(payload)

    def serve_forever(self) -> None:
        parser = FrameParser()
        while True:
            try:
                data = os.read(self.fd, CHUNK)
            except InterruptedError:
                continue
            except OSError:
                return  # the port is gone: nothing more can come
            if not data:
                # No host end connected (reads return at once, poll says HUP): wait for one.
                time.sleep(0.01)
                continue
            for kind, sid, payload in parser.feed(data):
                self.handle(kind, sid, payload)
