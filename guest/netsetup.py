"""Configuring the box's interfaces with the kernel's ioctls (the guest root carries no iproute2)."""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCADDRT = 0x890B
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
IFF_UP = 0x1
RTF_UP, RTF_GATEWAY = 0x1, 0x2
RTENTRY_SIZE = 120  # sizeof(struct rtentry) on x86_64


def _ifreq_addr(name: str, address: str) -> bytes:
    # struct ifreq: char ifr_name[16]; then a struct sockaddr_in in a 24-byte union.
    return struct.pack("16sHH4s16x", name.encode(), socket.AF_INET, 0, socket.inet_aton(address))


def _sockaddr(address: str) -> bytes:
    return struct.pack("HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def _netmask(prefix: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))


def _ioctl(request: int, arg: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        result: bytes = fcntl.ioctl(s.fileno(), request, arg)
        return result


def link_up(name: str) -> None:
    flags = struct.unpack_from("16sH", _ioctl(SIOCGIFFLAGS, struct.pack("16s24x", name.encode())))[1]
    _ioctl(SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP))


def set_address(name: str, address: str, prefix: int) -> None:
    _ioctl(SIOCSIFADDR, _ifreq_addr(name, address))
    _ioctl(SIOCSIFNETMASK, _ifreq_addr(name, _netmask(prefix)))


def set_mtu(name: str, mtu: int) -> None:
    _ioctl(SIOCSIFMTU, struct.pack("16si20x", name.encode(), mtu))


def add_default_route(gateway: str) -> None:
    # struct rtentry: rt_pad1, rt_dst, rt_gateway, rt_genmask, rt_flags, ... (native alignment), no device.
    entry = struct.pack("@L16s16s16sHh", 0, _sockaddr("0.0.0.0"), _sockaddr(gateway), _sockaddr("0.0.0.0"),
                        RTF_UP | RTF_GATEWAY, 0)
    _ioctl(SIOCADDRT, entry.ljust(RTENTRY_SIZE, b"\0"))


def add_loopback_address(index: int, address: str) -> None:
    """Make `address` one of the box's own (an alias of lo), so connections to it stay in the box."""
    label = f"lo:{index}"
    _ioctl(SIOCSIFADDR, _ifreq_addr(label, address))
    _ioctl(SIOCSIFNETMASK, _ifreq_addr(label, "255.255.255.255"))
