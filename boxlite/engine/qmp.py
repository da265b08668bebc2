"""A minimal QMP (QEMU Machine Protocol) client: JSON commands over a VM's unix socket, and passing it fds."""

from __future__ import annotations

import array
import json
import socket
from pathlib import Path
from typing import Any


class QmpError(Exception):
    """QEMU answered a command with an error, or the connection failed."""


class Qmp:
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise QmpError(f"cannot connect to QMP at {path}: {exc}") from exc
        self._file = self._sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self._read()  # the greeting
        self.command("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            line = self._file.readline()
            if not line:
                raise QmpError("QEMU closed the QMP connection")
            message: dict[str, Any] = json.loads(line)
            if "event" in message:
                self.events.append(message)
                continue
            return message

    def command(self, name: str, fds: list[int] | None = None, arguments: dict[str, Any] | None = None,
                **kwargs: Any) -> Any:
        args = {**(arguments or {}), **kwargs}
        request = {"execute": name, **({"arguments": args} if args else {})}
        data = json.dumps(request).encode() + b"\n"
        try:
            if fds:
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                self._sock.sendmsg([data], ancillary)
            else:
                self._file.write(data)
                self._file.flush()
            reply = self._read()
        except OSError as exc:
            raise QmpError(f"QMP {name} failed: {exc}") from exc
        if "error" in reply:
            raise QmpError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
