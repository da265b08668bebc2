"""The few portal messages the shim reads or writes, in protobuf's wire format, without importing protobuf.

The shim is on the critical path of every box start, and importing protobuf's runtime doubled its start-up
time. The messages (proto/portal.proto: Ready, RestoreRequest, RestoreReply) are tiny; tests/unit/test_wire.py
checks this codec against the generated classes, so the contract stays the .proto file.
"""

from __future__ import annotations

import struct
from typing import Any

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 values are ten bytes, as protobuf writes them
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def encode_restore_request(entropy: bytes, hostname: str, machine_id: str, unix_time_ns: int) -> bytes:
    """A serialized RestoreRequest (fields 1 entropy, 2 hostname, 3 machine_id, 4 unix_time_ns)."""
    out = bytearray()
    for number, raw in ((1, entropy), (2, hostname.encode()), (3, machine_id.encode())):
        if raw:
            out += _key(number, _LEN) + _varint(len(raw)) + raw
    if unix_time_ns:
        out += _key(4, _VARINT) + _varint(unix_time_ns)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def decode(data: bytes) -> dict[int, Any]:
    """{field number: raw value} of a message: ints for varints, bytes for length-delimited fields, and the
    undecoded 8 or 4 bytes for fixed-width ones (see double())."""
    fields: dict[int, Any] = {}
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            fields[number], at = _read_varint(data, at)
        elif wire_type == _I64:
            fields[number], at = data[at:at + 8], at + 8
        elif wire_type == _LEN:
            length, at = _read_varint(data, at)
            fields[number], at = data[at:at + length], at + length
        elif wire_type == _I32:
            fields[number], at = data[at:at + 4], at + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return fields


def double(fields: dict[int, Any], number: int) -> float:
    raw = fields.get(number)
    return struct.unpack("<d", raw)[0] if isinstance(raw, bytes) and len(raw) == 8 else 0.0


def text(fields: dict[int, Any], number: int) -> str:
    raw = fields.get(number)
    return raw.decode(errors="replace") if isinstance(raw, bytes) else ""
