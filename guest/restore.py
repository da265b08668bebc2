"""Making a restored VM its own machine: every clone of a snapshot wakes up with its template's memory.

That memory holds the kernel's random state, Python's `random` state, the hostname, the machine-id and a clock
frozen at snapshot time. The host sends fresh values (a RestoreRequest) right after the restore; this module
applies them before the box is declared ready.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import sys
import time
from collections.abc import Callable

import guest
from guest import system, wire
from guest._portal import portal_pb2 as pb

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07): reseed the kernel's CRNG from its input pool now


def reseed_kernel(entropy: bytes) -> None:
    """Mix `entropy` into the kernel's pool, credited, and force the CRNG to reseed from it at once.

    Without the reseed the kernel would keep drawing from the CRNG state every clone shares until its next
    scheduled reseed (up to a minute later).
    """
    words = array.array("I", entropy[: len(entropy) // 4 * 4])
    info = struct.pack("ii", len(words) * 32, len(words) * 4) + words.tobytes()
    fd = os.open("/dev/random", os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, info)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)


def write_machine_id(machine_id: str, root: str = "/") -> None:
    """Give the box its own /etc/machine-id (in the image root the agent lives in), when it has an /etc."""
    etc = os.path.join(root, "etc")
    if not os.path.isdir(etc) or os.path.islink(etc):
        return
    tmp = os.path.join(etc, ".machine-id.boxlite")
    with open(tmp, "w") as f:
        f.write(machine_id + "\n")
    os.chmod(tmp, 0o444)
    os.replace(tmp, os.path.join(etc, "machine-id"))


def apply(request: pb.RestoreRequest) -> pb.RestoreReply:
    started = time.monotonic()
    _apply(request)
    return _reply(started)


def _reply(started: float) -> pb.RestoreReply:
    return pb.RestoreReply(
        agent_version=guest.__version__, kernel=system.kernel_release(), uptime_s=system.uptime_s(),
        restore_ms=(time.monotonic() - started) * 1000,
    )


def _apply(request: pb.RestoreRequest | wire.RestoreRequest) -> None:
    if request.unix_time_ns:
        time.clock_settime_ns(time.CLOCK_REALTIME, request.unix_time_ns)
    if request.entropy:
        reseed_kernel(request.entropy)
        # Python's `random` keeps its own state; reseed it where the agent has loaded it (a later import seeds
        # itself from the kernel, reseeded now).
        loaded = sys.modules.get("random")
        if loaded is not None:
            loaded.seed(request.entropy)
    if request.hostname:
        socket.sethostname(request.hostname)
    if request.machine_id:
        write_machine_id(request.machine_id)
    # Jupyter kernels running in the clone renew their own Python state (guest/kernels.py).
    kernels = sys.modules.get("guest.kernels")
    if kernels is not None:
        kernels.renew_all()


def prepare_snapshot() -> pb.PrepareSnapshotReply:
    """Make the coming snapshot small: write dirty pages out and drop the clean page cache nobody maps.

    The kernel runs with init_on_free=1, so the freed pages are zeroes, which a snapshot does not store and a
    restored VM does not touch: less to load, less host memory per clone.
    """
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")
    return pb.PrepareSnapshotReply(mem_available_bytes=system.memory_bytes()[1])


def apply_serialized(payload: bytes) -> tuple[bytes, Callable[[], None]]:
    """The serial link's RESTORE frame handler: a serialized RestoreRequest in; out, the serialized RestoreReply
    and the work that applies the request.

    The link sends the reply first and then does the work before it reads the next frame: the host may declare
    the box ready at once (its own bookkeeping overlaps the guest's), and every command it then sends is served
    only after the clone has its own entropy, clock and names.
    """
    started = time.monotonic()
    request = wire.decode_restore_request(payload)
    reply = wire.encode_restore_reply(guest.__version__, system.kernel_release(), system.uptime_s(),
                                      (time.monotonic() - started) * 1000)
    return reply, lambda: _apply(request)
