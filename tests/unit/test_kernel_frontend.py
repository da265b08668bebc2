"""The BoxLite kernel's sockets on the host: what a client sees first on iopub (no box involved)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from codebox_kernel.frontend import Frontend

KEY = "a-test-key"


def _connection(tmp_path: Path) -> dict[str, object]:
    ports = {f"{ch}_port": n for n, ch in enumerate(("shell", "iopub", "stdin", "control", "hb"), start=1)}
    return {"transport": "ipc", "ip": str(tmp_path / "k"), "key": KEY, "signature_scheme": "hmac-sha256", **ports}


@pytest.mark.anyio
async def test_a_client_subscribing_while_the_kernel_publishes_first_gets_its_welcome(tmp_path: Path) -> None:
    """JEP 65: a subscriber's first iopub message is its iopub_welcome, even when it subscribes in the middle of a
    stream of status messages (the kernel publishes "starting" as Jupyter connects)."""
    frontend = Frontend(_connection(tmp_path))
    frontend.bind()
    workers = [asyncio.ensure_future(frontend.run_sender()), asyncio.ensure_future(frontend.watch_subscriptions())]
    ctx = zmq.asyncio.Context()
    session = Session(key=KEY.encode())
    publishing = True

    async def publish() -> None:
        while publishing:
            frontend.send("iopub", frontend.new("status", {"execution_state": "busy"}))
            await asyncio.sleep(0.001)

    flood = asyncio.ensure_future(publish())
    try:
        for _ in range(5):
            sub = ctx.socket(zmq.SUB)
            sub.linger = 0
            sub.connect(frontend._url("iopub"))
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            frames = await asyncio.wait_for(sub.recv_multipart(), timeout=10)
            _, parts = session.feed_identities(frames)
            first = session.deserialize(parts)
            sub.close()
            assert first["header"]["msg_type"] == "iopub_welcome", first["header"]["msg_type"]
    finally:
        publishing = False
        for task in [flood, *workers]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        frontend.close()
        ctx.term()
