"""The serial link's framing and multiplexing, both ends for real over a socketpair (no VM needed).

The guest end (guest/serial_link.py) reads and writes a file descriptor, as it does on the virtio-serial port;
here that descriptor is one end of a unix socketpair whose other end is the host end (boxlite/_serial_link.py).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from boxlite import _serial_link as host
from guest import serial_link as guest_link


def test_both_ends_agree_on_the_frame_layout() -> None:
    assert host.HEADER.format == guest_link.HEADER.format
    for name in ("OPEN", "DATA", "EOF", "CLOSE", "READY", "RESET", "RESTORE", "RESTORED"):
        assert getattr(host, name) == getattr(guest_link, name)
    assert host.encode(host.DATA, 7, b"abc") == guest_link.encode(guest_link.DATA, 7, b"abc")


@pytest.mark.parametrize("parser_cls", [host.FrameParser, guest_link.FrameParser])
def test_parser_reassembles_frames_split_anywhere(parser_cls: type) -> None:
    frames = [(host.OPEN, 1, b""), (host.DATA, 1, b"x" * 1000), (host.DATA, 2, bytes(range(256))),
              (host.EOF, 1, b""), (host.READY, 0, b"ready")]
    wire = b"".join(host.encode(*f) for f in frames)
    for step in (1, 3, 9, 100, len(wire)):
        parser = parser_cls()
        got = []
        for at in range(0, len(wire), step):
            got += parser.feed(wire[at:at + step])
        assert got == frames


@pytest.fixture
def upstream() -> Iterator[str]:
    """A real unix-socket echo server standing in for the agent's gRPC socket: it echoes, then closes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "up.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(16)

        def serve_one(conn: socket.socket) -> None:
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        yield path
        server.close()


def test_streams_are_multiplexed_and_restore_is_answered(upstream: str) -> None:
    host_sock, guest_sock = socket.socketpair()
    restored: list[bytes] = []

    def on_restore(payload: bytes) -> tuple[bytes, Callable[[], None]]:
        return b"reply:" + payload, lambda: restored.append(payload)

    agent = guest_link.SerialLink(guest_sock.fileno(), upstream, on_restore)
    threading.Thread(target=agent.serve_forever, daemon=True).start()

    async def main() -> None:
        reader, writer = await asyncio.open_connection(sock=host_sock)
        link = host.HostLink(reader, writer)
        link.reset()
        assert await asyncio.wait_for(link.restore(b"fresh"), 10) == b"reply:fresh"
        with tempfile.TemporaryDirectory() as tmp:
            portal = str(Path(tmp) / "portal.sock")
            server = await asyncio.start_unix_server(link.relay, path=portal)

            async def client(n: int) -> bytes:
                r, w = await asyncio.open_unix_connection(portal)
                payload = os.urandom(1000 + n * 50_000)
                w.write(payload)
                await w.drain()
                w.write_eof()
                echoed = await r.read()
                w.close()
                assert echoed == payload
                return echoed

            results = await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(8))), 30)
            assert len(results) == 8
            server.close()
        await link.aclose()

    asyncio.run(main())
    assert restored == [b"fresh"]
    guest_sock.close()


def test_reset_forgets_old_streams(upstream: str) -> None:
    """A restored clone's agent remembers its template's streams; RESET (sent by every new host end) drops them,
    so a new stream with a reused id is a fresh connection."""
    host_sock, guest_sock = socket.socketpair()
    agent = guest_link.SerialLink(guest_sock.fileno(), upstream, lambda p: (p, lambda: None))
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    host_sock.sendall(host.encode(host.OPEN, 1) + host.encode(host.DATA, 1, b"old"))
    parser = host.FrameParser()
    got: list[tuple[int, int, bytes]] = []
    while not any(f[0] == host.DATA for f in got):
        got += parser.feed(host_sock.recv(65536))
    assert (host.DATA, 1, b"old") in got
    host_sock.sendall(host.encode(host.RESET, 0) + host.encode(host.OPEN, 1) + host.encode(host.DATA, 1, b"new")
                      + host.encode(host.EOF, 1))
    got = []
    while not any(f[0] == host.EOF and f[1] == 1 for f in got):
        got += parser.feed(host_sock.recv(65536))
    assert b"".join(p for k, s, p in got if k == host.DATA and s == 1) == b"new"
    host_sock.close()
    guest_sock.close()
