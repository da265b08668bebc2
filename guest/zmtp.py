"""Just enough ZMTP 3.0 (ZeroMQ's wire protocol, NULL security) to be a DEALER or SUB peer of a Jupyter kernel.

The agent relays a kernel's channels without pyzmq: nothing to load into the guest root or import at boot, and
the relay reads and writes plain sockets it can multiplex with a selector. The kernel (real ZeroMQ) binds; we
connect once over a unix socket (the kernel's ipc transport) and never reconnect: a kernel that goes away ends
the relay.

Wire format (rfc.zeromq.org, ZMTP 3.0): a 64-byte greeting each way, a READY command each way (socket type and,
for a DEALER, the identity the kernel's ROUTER routes replies by), then frames: a flags byte (MORE, LONG,
COMMAND), a 1- or 8-byte size, the body. As a 3.0 peer, a SUB subscribes with a message whose first byte is 1.
"""

from __future__ import annotations

import select
import socket

SIGNATURE_HEAD, SIGNATURE_TAIL = 0xFF, 0x7F
MORE, LONG, COMMAND = 0x01, 0x02, 0x04
GREETING_SIZE = 64


class ZmtpError(Exception):
    pass


def greeting() -> bytes:
    mechanism = b"NULL".ljust(20, b"\0")
    return bytes([SIGNATURE_HEAD]) + bytes(8) + bytes([SIGNATURE_TAIL, 3, 0]) + mechanism + b"\0" + bytes(31)


def check_greeting(data: bytes) -> None:
    if len(data) != GREETING_SIZE or data[0] != SIGNATURE_HEAD or data[9] & 0x01 != 0x01:
        raise ZmtpError(f"not a ZMTP peer (greeting {data[:12]!r})")
    if data[10] < 3:
        raise ZmtpError(f"the peer speaks ZMTP {data[10]}.{data[11]}; 3.0 or later is needed")
    mechanism = data[12:32].rstrip(b"\0")
    if mechanism != b"NULL":
        raise ZmtpError(f"the peer asks for security mechanism {mechanism.decode(errors='replace')}; only NULL "
                        "is supported")


def encode_frame(body: bytes, more: bool = False, command: bool = False) -> bytes:
    flags = (MORE if more else 0) | (COMMAND if command else 0)
    if len(body) > 255:
        return bytes([flags | LONG]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def encode_message(frames: list[bytes]) -> bytes:
    if not frames:
        raise ZmtpError("a message has at least one frame")
    last = len(frames) - 1
    return b"".join(encode_frame(frame, more=i < last) for i, frame in enumerate(frames))


def _property(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value


def ready_command(socket_type: str, identity: bytes = b"") -> bytes:
    body = b"\x05READY" + _property(b"Socket-Type", socket_type.encode())
    if identity:
        body += _property(b"Identity", identity)
    return body


def parse_ready(body: bytes) -> dict[str, bytes]:
    """The properties of a READY command body (raises on anything else)."""
    if not body.startswith(b"\x05READY"):
        raise ZmtpError(f"expected READY, got command {body[:16]!r}")
    props: dict[str, bytes] = {}
    pos = 6
    while pos < len(body):
        name_len = body[pos]
        name = body[pos + 1:pos + 1 + name_len]
        pos += 1 + name_len
        value_len = int.from_bytes(body[pos:pos + 4], "big")
        props[name.decode(errors="replace")] = body[pos + 4:pos + 4 + value_len]
        pos += 4 + value_len
    return props


class FrameParser:
    """Turns a byte stream into complete multipart messages (and commands), however the bytes arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._parts: list[bytes] = []
        self.commands: list[bytes] = []

    def feed(self, data: bytes) -> list[list[bytes]]:
        self._buf += data
        buf, messages = self._buf, []
        while True:
            pos = self._pos
            if len(buf) - pos < 2:
                break
            flags = buf[pos]
            if flags & LONG:
                if len(buf) - pos < 9:
                    break
                size, header = int.from_bytes(buf[pos + 1:pos + 9], "big"), 9
            else:
                size, header = buf[pos + 1], 2
            end = pos + header + size
            if len(buf) < end:
                break
            body = bytes(buf[pos + header:end])
            self._pos = end
            if flags & COMMAND:
                self.commands.append(body)
            else:
                self._parts.append(body)
                if not flags & MORE:
                    messages.append(self._parts)
                    self._parts = []
        if self._pos:
            del buf[:self._pos]  # once per feed, not per frame
            self._pos = 0
        return messages


class Peer:
    """One connected ZMTP socket (DEALER or SUB) to a bound ZeroMQ socket at a unix path.

    Reading (read_available) and writing (send) may happen in two different threads.
    """

    def __init__(self, path: str, socket_type: str, identity: bytes = b"", timeout: float = 10.0) -> None:
        self.socket_type = socket_type
        self.parser = FrameParser()
        self.pending: list[list[bytes]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self.sock.sendall(greeting())
            check_greeting(self._recv_exactly(GREETING_SIZE))
            self.sock.sendall(encode_frame(ready_command(socket_type, identity), command=True))
            while not self.parser.commands:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ZmtpError("the peer closed the connection during the handshake")
                self.pending.extend(self.parser.feed(chunk))
            parse_ready(self.parser.commands.pop(0))
            if socket_type == "SUB":
                self.sock.sendall(encode_message([b"\x01"]))  # subscribe to every topic
            self.sock.settimeout(None)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ZmtpError("the peer closed the connection during the handshake")
            data += chunk
        return data

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_available(self) -> list[list[bytes]] | None:
        """The complete messages that can be read now without blocking; None when the peer has closed."""
        messages, self.pending = self.pending, []
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return messages
            except OSError:
                return messages or None
            if not chunk:
                return messages or None
            messages.extend(self.parser.feed(chunk))
            self.parser.commands.clear()  # PING and friends: nothing to answer for a NULL, heartbeat-less peer
            if len(chunk) < (1 << 20):
                return messages

    def send(self, frames: list[bytes]) -> None:
        data = memoryview(encode_message(frames))
        # The socket is non-blocking for the reader's sake; the writer waits for room itself.
        while data:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                select.select([], [self.sock], [])
                continue
            data = data[sent:]

    def close(self) -> None:
        self.sock.close()
