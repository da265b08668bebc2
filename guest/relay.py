"""The agent's side of published ports and allowed destinations: TCP in the box <-> vsock to the shim.

- published ports: the shim connects to vsock `publish_port` and sends "<guest port>\n"; the agent connects to
  that port on the box's loopback and splices the two.
- allowed destinations (allow-list networks): the agent listens on each rule's address and port inside the box,
  and relays every connection to the shim (vsock `egress_port`, "<rule index>\n"), which alone decides where it
  goes. The box has no network device in that mode: this relay is its only way out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

from guest.bridge import _pump

HOST_CID = 2
HEADER_MAX = 16


def _splice_both(a: socket.socket, b: socket.socket) -> None:
    back = threading.Thread(target=_pump, args=(b, a), daemon=True)
    back.start()
    _pump(a, b)
    back.join()
    a.close()
    b.close()


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte or len(data) > HEADER_MAX:
            raise ConnectionError("bad header")
        data += byte
    return data.decode("ascii").strip()


def _publish_one(conn: socket.socket, allowed: set[int]) -> None:
    try:
        port = int(_read_line(conn))
        if port not in allowed:
            raise ConnectionError(f"port {port} is not published")
        inner = socket.create_connection(("127.0.0.1", port), timeout=10)
        inner.settimeout(None)
    except (OSError, ValueError):
        conn.close()
        return
    _splice_both(conn, inner)


def _accept_forever(listener: socket.socket, handle: Any, *args: Any) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        threading.Thread(target=handle, args=(conn, *args), daemon=True).start()


def serve_published(vsock_port: int, guest_ports: list[int]) -> None:
    listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    listener.bind((socket.VMADDR_CID_ANY, vsock_port))
    listener.listen(64)
    threading.Thread(target=_accept_forever, args=(listener, _publish_one, set(guest_ports)), daemon=True).start()


def _egress_one(conn: socket.socket, vsock_port: int, index: int) -> None:
    try:
        out = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        out.connect((HOST_CID, vsock_port))
        out.sendall(f"{index}\n".encode())
    except OSError:
        conn.close()
        with contextlib.suppress(UnboundLocalError):
            out.close()
        return
    _splice_both(conn, out)


def serve_rules(vsock_port: int, rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((rule["listen"], int(rule["port"])))
        listener.listen(64)
        threading.Thread(target=_accept_forever, args=(listener, _egress_one, vsock_port, int(rule["index"])),
                         daemon=True).start()
