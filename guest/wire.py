"""The two messages of a restore (proto/portal.proto: RestoreRequest in, RestoreReply out) in protobuf's wire
format, by hand.

Right after a restore every code path runs for the first time in the new QEMU (whose translation cache is
empty), and protobuf's parser and serializer cost ~35 ms there, on the path to the box being ready; these few
lines of Python cost ~1 ms. tests/unit/test_wire.py checks them against the generated classes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class RestoreRequest:
    entropy: bytes = b""
    hostname: str = ""
    machine_id: str = ""
    unix_time_ns: int = 0


def _varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def decode_restore_request(data: bytes) -> RestoreRequest:
    fields: dict[int, object] = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number], at = _varint(data, at)
        elif wire_type == 2:
            length, at = _varint(data, at)
            fields[number], at = data[at:at + length], at + length
        elif wire_type == 1:
            at += 8
        elif wire_type == 5:
            at += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    unix_time = fields.get(4, 0)
    assert isinstance(unix_time, int)
    if unix_time >= 1 << 63:
        unix_time -= 1 << 64
    return RestoreRequest(
        entropy=bytes(fields.get(1, b"")),  # type: ignore[call-overload]
        hostname=bytes(fields.get(2, b"")).decode(errors="replace"),  # type: ignore[call-overload]
        machine_id=bytes(fields.get(3, b"")).decode(errors="replace"),  # type: ignore[call-overload]
        unix_time_ns=unix_time,
    )


def _text(number: int, value: str) -> bytes:
    raw = value.encode()
    if not raw:
        return b""
    return bytes([number << 3 | 2]) + _len(len(raw)) + raw


def _len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _double(number: int, value: float) -> bytes:
    return bytes([number << 3 | 1]) + struct.pack("<d", value) if value else b""


def encode_restore_reply(agent_version: str, kernel: str, uptime_s: float, restore_ms: float) -> bytes:
    return _text(1, agent_version) + _text(2, kernel) + _double(3, uptime_s) + _double(4, restore_ms)
