"""The frame filter between a box's network device and its user-mode NAT (passt), run in the shim.

passt forwards whatever destination the guest writes in a packet, 127.0.0.1 included: a box is root inside
and can hand-craft frames (measured: a raw TCP SYN to 127.0.0.1 reached a host service through passt). So QEMU's
network device is connected to the shim, not to passt, and every frame the guest sends is checked here first.
Only ARP and IPv4 to a destination outside 0/8, 127/8 and 169.254/16 (the host's loopback, "this host", and
link-local services such as cloud metadata endpoints) goes on; everything else is dropped. Frames towards the
guest are copied as they are.

QEMU's `-netdev stream` and passt frame the stream the same way: a 4-byte big-endian length, then the frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

ETH_ARP, ETH_IPV4 = 0x0806, 0x0800
_LENGTH = struct.Struct("!I")
MAX_FRAME = 65535 + 14
CHUNK = 256 * 1024


def allowed(frame: bytes) -> bool:
    """Whether a frame from the guest may reach the NAT."""
    if len(frame) < 14:
        return False
    ethertype = (frame[12] << 8) | frame[13]
    if ethertype == ETH_ARP:
        return True
    if ethertype != ETH_IPV4 or len(frame) < 34:
        return False
    first, second = frame[30], frame[31]
    return not (first in (0, 127) or (first == 169 and second == 254))


async def _guest_to_nat(guest: asyncio.StreamReader, nat: asyncio.StreamWriter) -> int:
    dropped = 0
    try:
        while True:
            header = await guest.readexactly(4)
            (length,) = _LENGTH.unpack(header)
            if length > MAX_FRAME:
                break  # not a frame stream: end the connection
            frame = await guest.readexactly(length)
            if allowed(frame):
                nat.write(header + frame)
                await nat.drain()
            else:
                dropped += 1
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            nat.close()
    return dropped


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            dst.close()


async def join(guest: socket.socket, nat: socket.socket) -> asyncio.Task[None]:
    """Filter the stream of QEMU's network device (`guest`) onto passt's (`nat`), both connected sockets
    (ends of socket pairs whose other ends QEMU and passt hold); runs until either side closes."""
    reader, writer = await asyncio.open_connection(sock=guest, limit=2 * MAX_FRAME)
    nat_reader, nat_writer = await asyncio.open_connection(sock=nat, limit=2 * MAX_FRAME)

    async def both() -> None:
        await asyncio.gather(_guest_to_nat(reader, nat_writer), _copy(nat_reader, writer))

    return asyncio.ensure_future(both())
