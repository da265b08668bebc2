"""The host end of the portal: a gRPC channel to one box's agent, through the box's unix socket.

grpc.aio channels belong to the event loop that made them, so a client keeps one channel per loop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from boxlite._errors import PortalError
from boxlite._portal import portal_pb2 as pb
from boxlite._portal import portal_pb2_grpc as pb_grpc

_CHANNEL_OPTIONS = [
    # One kernel message (a large image a cell displays, say) arrives whole: allow big ones.
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
]


class PortalClient:
    def __init__(self, socket_path: Path, box_id: str) -> None:
        self.socket_path = socket_path
        self.box_id = box_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: grpc.aio.Channel | None = None
        self._guest: pb_grpc.GuestStub | None = None
        self._execution: pb_grpc.ExecutionStub | None = None
        self._files: pb_grpc.FilesStub | None = None

    def _ensure(self) -> None:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            self._loop = loop
            self._channel = grpc.aio.insecure_channel(f"unix:{self.socket_path}", options=_CHANNEL_OPTIONS)
            self._guest = pb_grpc.GuestStub(self._channel)
            self._execution = pb_grpc.ExecutionStub(self._channel)
            self._files = pb_grpc.FilesStub(self._channel)

    def _channel_for_loop(self) -> grpc.aio.Channel:
        """The channel for the running event loop (for stubs of services made elsewhere)."""
        self._ensure()
        assert self._channel is not None
        return self._channel

    @property
    def guest(self) -> pb_grpc.GuestStub:
        self._ensure()
        assert self._guest is not None
        return self._guest

    @property
    def execution(self) -> pb_grpc.ExecutionStub:
        self._ensure()
        assert self._execution is not None
        return self._execution

    @property
    def files(self) -> pb_grpc.FilesStub:
        self._ensure()
        assert self._files is not None
        return self._files

    def error(self, exc: grpc.aio.AioRpcError, what: str) -> PortalError:
        return PortalError(f"{what} failed for box {self.box_id}: {exc.code().name}: {exc.details()}",
                           fix=f"check the box with `boxlite info {self.box_id}`; restart it if it stopped")

    async def ping(self, timeout: float = 5.0) -> pb.PingReply:
        try:
            return await self.guest.Ping(pb.PingRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc, "ping") from None

    async def metrics(self, timeout: float = 5.0) -> pb.GuestMetrics:
        try:
            return await self.guest.Metrics(pb.MetricsRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc, "metrics") from None

    async def shutdown(self, timeout: float = 5.0) -> None:
        try:
            await self.guest.Shutdown(pb.ShutdownRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc, "shutdown") from None

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and self._loop is asyncio.get_running_loop():
            await channel.close()
