"""Bridge vsock connections to the gRPC server's unix socket.

Debian bookworm's grpcio (1.51) cannot bind vsock addresses, so gRPC serves a unix socket inside the guest
and every vsock connection is spliced onto a fresh connection to it. os.splice moves the bytes inside the
kernel, so the Python cost is one call per chunk, not one copy per byte.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

CHUNK = 1 << 20
# Connections bridged at once. Each costs the agent six descriptors and two threads (and the gRPC server one more
# descriptor); a flood of connections beyond this is refused (closed at once) rather than let it take every
# descriptor the agent has, and with them every command's pipes (EMFILE). Far more than any real use needs: a
# host process keeps one connection per box.
MAX_CONNECTIONS = 256


def _pump(src: socket.socket, dst: socket.socket) -> None:
    read_end, write_end = os.pipe()
    try:
        while True:
            n = os.splice(src.fileno(), write_end, CHUNK)
            if n == 0:
                break
            while n:
                n -= os.splice(read_end, dst.fileno(), n)
    except OSError:
        pass
    finally:
        os.close(read_end)
        os.close(write_end)
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                sock.shutdown(how)


def _serve_one(conn: socket.socket, unix_path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(unix_path)
    except OSError:
        conn.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
    back.start()
    _pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    sock.bind((socket.VMADDR_CID_ANY, port))
    sock.listen(64)
    return sock


def serve_forever(listener: socket.socket, unix_path: str) -> None:
    """Accept connections for ever. Running out of descriptors (EMFILE) or threads under a flood of connections
    must not end this loop: the agent would be unreachable for good. It waits a moment and goes on instead."""
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def serve(conn: socket.socket) -> None:
        try:
            _serve_one(conn, unix_path)
        finally:
            slots.release()

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            time.sleep(0.1)
            continue
        if not slots.acquire(blocking=False):
            conn.close()
            continue
        try:
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
        except RuntimeError:  # "can't start new thread"
            slots.release()
            conn.close()
            time.sleep(0.1)
