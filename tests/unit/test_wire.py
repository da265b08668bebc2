"""The shim's protobuf-free codec agrees with the generated portal classes (the .proto stays the contract)."""

from __future__ import annotations

import os

from boxlite import _wire
from boxlite._portal import portal_pb2 as pb


def test_restore_request_encodes_as_protobuf_does() -> None:
    entropy = os.urandom(64)
    raw = _wire.encode_restore_request(entropy, "abc123", "f" * 32, 1_796_000_000_123_456_789)
    msg = pb.RestoreRequest()
    msg.ParseFromString(raw)
    assert (msg.entropy, msg.hostname, msg.machine_id, msg.unix_time_ns) == \
        (entropy, "abc123", "f" * 32, 1_796_000_000_123_456_789)
    assert raw == pb.RestoreRequest(entropy=entropy, hostname="abc123", machine_id="f" * 32,
                                    unix_time_ns=1_796_000_000_123_456_789).SerializeToString()
    time_only = pb.RestoreRequest()
    time_only.ParseFromString(_wire.encode_restore_request(b"", "", "", 5))
    assert time_only.unix_time_ns == 5 and not time_only.entropy and not time_only.hostname


def test_replies_decode_as_protobuf_writes_them() -> None:
    reply = pb.RestoreReply(agent_version="0.1.0", kernel="6.1.0", uptime_s=12.25, restore_ms=3.5)
    fields = _wire.decode(reply.SerializeToString())
    assert _wire.text(fields, 1) == "0.1.0" and _wire.text(fields, 2) == "6.1.0"
    assert _wire.double(fields, 3) == 12.25 and _wire.double(fields, 4) == 3.5
    ready = pb.Ready(agent_version="0.1.0", boot_ms=3012.5, kernel="6.1.0", cpus=2, memory_bytes=1 << 28)
    fields = _wire.decode(ready.SerializeToString())
    assert _wire.double(fields, 2) == 3012.5 and fields[4] == 2 and fields[5] == 1 << 28
    assert _wire.double(_wire.decode(b""), 2) == 0.0


def test_guest_codec_agrees_with_protobuf() -> None:
    from guest import wire
    from guest._portal import portal_pb2 as gpb

    entropy = os.urandom(64)
    raw = gpb.RestoreRequest(entropy=entropy, hostname="h1", machine_id="ab" * 16,
                             unix_time_ns=1_796_000_000_000_000_001).SerializeToString()
    assert wire.decode_restore_request(raw) == wire.RestoreRequest(entropy, "h1", "ab" * 16, 1_796_000_000_000_000_001)
    assert wire.decode_restore_request(b"") == wire.RestoreRequest()
    reply = gpb.RestoreReply()
    reply.ParseFromString(wire.encode_restore_reply("0.1.0", "6.1.0", 4.5, 1.25))
    assert (reply.agent_version, reply.kernel, reply.uptime_s, reply.restore_ms) == ("0.1.0", "6.1.0", 4.5, 1.25)
    assert wire.encode_restore_reply("0.1.0", "6.1.0", 4.5, 1.25) == \
        gpb.RestoreReply(agent_version="0.1.0", kernel="6.1.0", uptime_s=4.5, restore_ms=1.25).SerializeToString()
