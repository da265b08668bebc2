"""The shim's side of a box's network: published ports, allowed outbound connections, the guest's config.

Runs inside the per-box shim (boxlite/_shim.py). Everything that crosses between host and guest here goes over
vsock, so the policy is decided on the host:

- published ports: the shim binds each host port *before* the VM starts (a port in use fails the start with
  nothing else begun), then relays every accepted connection to the agent (vsock PUBLISH_PORT, a header line
  with the guest port), which connects to that port on the box's loopback;
- allowed destinations: the agent relays a connection to vsock EGRESS_PORT with a header line naming the
  *index* of an allow rule; the shim connects to that rule's destination and nowhere else;
- configuration: the agent reads its network and volume configuration from vsock CONFIG_PORT at boot.

Kept free of heavy imports: the shim loads it on every box start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from boxlite._errors import NetworkError

CHUNK = 256 * 1024
HEADER_MAX = 64

Connect = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))


def bind_ports(ports: list[dict[str, Any]]) -> list[tuple[dict[str, Any], socket.socket]]:
    """Bind every published port now (all or none). Port 0 gets a free port, written back into its entry."""
    bound: list[tuple[dict[str, Any], socket.socket]] = []
    try:
        for spec in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((spec["host_ip"], int(spec["host_port"])))
            except OSError as exc:
                sock.close()
                where = f"{spec['host_ip']}:{spec['host_port']}"
                if exc.errno == errno.EADDRINUSE:
                    raise NetworkError(f"host port {spec['host_port']} is already in use ({where})",
                                       fix=f"publish guest port {spec['guest_port']} on another host port, or "
                                           "use host port 0 to get a free one") from None
                raise NetworkError(f"cannot publish on {where}: {exc.strerror or exc}",
                                   fix="choose a host address of this machine (127.0.0.1 by default)") from None
            sock.listen(128)
            sock.setblocking(False)
            bound.append(({**spec, "host_port": sock.getsockname()[1]}, sock))
    except BaseException:
        for _, sock in bound:
            sock.close()
        raise
    return bound


async def _read_header(reader: asyncio.StreamReader) -> str:
    line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout=10)
    if len(line) > HEADER_MAX:
        raise ValueError("header too long")
    return line.decode("ascii").strip()


class NetworkSide:
    """The published ports, the egress relay and the config server of one box."""

    def __init__(self, plan: dict[str, Any], box_dir: Path, connect: Connect,
                 listen: Callable[[int], socket.socket]) -> None:
        net = plan.get("net") or {}
        self.box_dir = box_dir
        self.connect = connect
        self.listen = listen
        self.config: dict[str, Any] | None = net.get("guest_config")
        self.config_port = int(net.get("config_port", 0))
        self.rules: dict[int, dict[str, Any]] = {int(r["index"]): r for r in net.get("rules", [])}
        self.port_specs: list[dict[str, Any]] = list(net.get("ports", []))
        self.bound: list[tuple[dict[str, Any], socket.socket]] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def published(self) -> list[dict[str, Any]]:
        return [spec for spec, _ in self.bound]

    def bind(self) -> None:
        """Before the VM starts: take the host ports (NetworkError if one is taken)."""
        self.bound = bind_ports(self.port_specs)
        (self.box_dir / "ports.json").write_text(json.dumps(self.published))

    async def serve_guest_side(self) -> None:
        """Before the VM starts: the ports the guest connects to (its configuration, allowed destinations)."""
        if self.config is not None and self.config_port:
            sock = self.listen(self.config_port)
            self.servers.append(await asyncio.start_server(self._send_config, sock=sock))
        if self.rules:
            sock = self.listen(int(self.config["egress_port"]) if self.config else 0)
            self.servers.append(await asyncio.start_server(self._egress, sock=sock))

    async def serve_ports(self) -> None:
        """Once the guest is ready: accept on the published ports."""
        publish_port = int((self.config or {}).get("publish_port", 0))
        for spec, sock in self.bound:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             guest_port: int = int(spec["guest_port"])) -> None:
                await self._publish(reader, writer, publish_port, guest_port)

            self.servers.append(await asyncio.start_server(handle, sock=sock))

    async def _send_config(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(json.dumps(self.config).encode())
            await writer.drain()
        writer.close()

    async def _publish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, publish_port: int,
                       guest_port: int) -> None:
        try:
            guest = await self.connect(publish_port)
        except (OSError, ConnectionError):
            writer.close()
            return
        guest[1].write(f"{guest_port}\n".encode())
        await splice((reader, writer), guest)

    async def _egress(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            rule = self.rules[int(await _read_header(reader))]
        except (TimeoutError, ValueError, KeyError, asyncio.IncompleteReadError, OSError):
            writer.close()
            return
        try:
            remote = await asyncio.wait_for(asyncio.open_connection(rule["connect"], int(rule["port"])), 30)
        except (TimeoutError, OSError):
            writer.close()
            return
        await splice((reader, writer), remote)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for _, sock in self.bound:
            with contextlib.suppress(OSError):
                sock.close()
