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

CHUNK = 1 << 20


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
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(conn, unix_path), daemon=True).start()
