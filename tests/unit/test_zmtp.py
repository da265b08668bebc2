"""The agent's ZMTP code against real ZeroMQ (pyzmq's libzmq) on ipc sockets, and its frame parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest import zmtp

zmq = pytest.importorskip("zmq")


@pytest.fixture
def ctx() -> Iterator[object]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _read(peer: zmtp.Peer, count: int, timeout: float = 5.0) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(peer.read_available() or [])
        time.sleep(0.005)
    return got


def test_dealer_talks_to_a_router_with_its_identity(ctx: object, tmp_path: Path) -> None:
    router = ctx.socket(zmq.ROUTER)  # type: ignore[attr-defined]
    router.bind(f"ipc://{tmp_path}/shell")
    dealer = zmtp.Peer(f"{tmp_path}/shell", "DEALER", identity=b"client-1")
    try:
        dealer.send([b"<IDS|MSG>", b"sig", b"h" * 300, b""])
        assert router.recv_multipart() == [b"client-1", b"<IDS|MSG>", b"sig", b"h" * 300, b""]
        big = bytes(range(256)) * 1000
        router.send_multipart([b"client-1", b"<IDS|MSG>", b"reply", big])
        assert _read(dealer, 1) == [[b"<IDS|MSG>", b"reply", big]]
    finally:
        dealer.close()


def test_sub_receives_everything_published_after_subscribing(ctx: object, tmp_path: Path) -> None:
    pub = ctx.socket(zmq.PUB)  # type: ignore[attr-defined]
    pub.bind(f"ipc://{tmp_path}/iopub")
    sub = zmtp.Peer(f"{tmp_path}/iopub", "SUB")
    try:
        time.sleep(0.2)  # the subscription reaches the publisher asynchronously, as with any SUB
        for i in range(100):
            pub.send_multipart([b"kernel.x.status", str(i).encode()])
        got = _read(sub, 100)
        assert [m[1] for m in got] == [str(i).encode() for i in range(100)]
    finally:
        sub.close()


def test_a_closed_peer_reads_as_none(ctx: object, tmp_path: Path) -> None:
    router = ctx.socket(zmq.ROUTER)  # type: ignore[attr-defined]
    router.bind(f"ipc://{tmp_path}/s")
    dealer = zmtp.Peer(f"{tmp_path}/s", "DEALER")
    router.close(linger=0)
    deadline = time.monotonic() + 5
    result: list[list[bytes]] | None = []
    while result is not None and time.monotonic() < deadline:
        result = dealer.read_available()
        time.sleep(0.01)
    assert result is None
    dealer.close()


def test_parser_handles_any_split_and_long_frames() -> None:
    frames = [b"a", b"", b"x" * 255, b"y" * 256, b"z" * 70000]
    wire = zmtp.encode_message(frames) + zmtp.encode_frame(b"\x04PING", command=True) + zmtp.encode_message([b"end"])
    for step in (1, 7, 300, len(wire)):
        parser = zmtp.FrameParser()
        got: list[list[bytes]] = []
        for i in range(0, len(wire), step):
            got.extend(parser.feed(wire[i:i + step]))
        assert got == [frames, [b"end"]]
        assert parser.commands == [b"\x04PING"]


def test_greeting_checks() -> None:
    zmtp.check_greeting(zmtp.greeting())
    with pytest.raises(zmtp.ZmtpError):
        zmtp.check_greeting(b"HTTP/1.1 200 OK" + bytes(49))
    curve = bytearray(zmtp.greeting())
    curve[12:32] = b"CURVE".ljust(20, b"\0")
    with pytest.raises(zmtp.ZmtpError, match="CURVE"):
        zmtp.check_greeting(bytes(curve))
    assert zmtp.parse_ready(zmtp.ready_command("DEALER", b"id")) == {"Socket-Type": b"DEALER", "Identity": b"id"}
    with pytest.raises(zmtp.ZmtpError):
        zmtp.encode_message([])
