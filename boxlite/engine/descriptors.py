"""Files and sockets handed to a box's VM processes as open descriptors, never as paths.

A box's VMM and helpers may run as an unprivileged user of their own (boxlite/engine/jail.py) who can open
nothing of ours by name: the box directory, the disks, the kernel and every socket are reached only through
descriptors the shim opens and passes. Command lines refer to them by placeholder, filled in by the shim:

- `{fd:NAME}`: the descriptor opened for NAME (for a `pair`, the end given to the VM process);
- `{peer:NAME}`: a `pair`'s other end (kept by the shim, or given to a second process such as a 9p helper).

Even a program the VM user runs (the vsock device, which may live under root's home) is started as
`/proc/self/fd/N`.

QEMU takes them as `-add-fd fd=N,set=S` + `/dev/fdset/S` (drives, the console log), `/proc/self/fd/N` (the
kernel), `fd=N` (sockets) and `-incoming fd:N`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
from dataclasses import asdict, dataclass
from typing import Any

# What the shim opens for each kind of descriptor. KERNEL and PROGRAM are files the VM process reads or runs
# through /proc/self/fd/N, which re-checks the file's own mode against that process's user.
READ, READ_WRITE, LOG, KERNEL, PROGRAM, LISTEN, CONNECT, PAIR, DEVICE = (
    "read", "readwrite", "log", "kernel", "program", "listen", "connect", "pair", "device")
_PLACEHOLDER = re.compile(r"\{(fd|peer):([A-Za-z0-9_.-]+)\}")


@dataclass(frozen=True)
class Descriptor:
    name: str
    kind: str
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        return cls(name=data["name"], kind=data["kind"], path=data.get("path"))


def fd(name: str) -> str:
    return "{fd:" + name + "}"


def peer(name: str) -> str:
    return "{peer:" + name + "}"


class FdSets:
    """QEMU fd sets for files QEMU opens through its block and chardev layers (`/dev/fdset/N`)."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._next = 1

    def add(self, name: str) -> str:
        """Register descriptor `name` in a new set; returns the path QEMU opens it by."""
        n, self._next = self._next, self._next + 1
        self.args += ["-add-fd", f"fd={fd(name)},set={n},opaque={name}"]
        return f"/dev/fdset/{n}"


def referenced(argv: list[str]) -> list[tuple[str, str]]:
    """The (kind, name) placeholders an argv uses, in order, without repeats."""
    seen: list[tuple[str, str]] = []
    for arg in argv:
        for m in _PLACEHOLDER.finditer(arg):
            if (m.group(1), m.group(2)) not in seen:
                seen.append((m.group(1), m.group(2)))
    return seen


class OpenedDescriptors:
    """The descriptors of one VM start, opened by the shim. `spawn_args` gives a command line with its
    placeholders filled in and the descriptors to pass; `close_passed` closes the shim's copies of what was
    handed over (the shim keeps only pair ends nobody was given); `close` closes everything left."""

    def __init__(self, vm_user: int | None = None) -> None:
        """`vm_user`: the uid the VM's processes run as, when it is not the caller's."""
        self.vm_user = vm_user
        self.fds: dict[str, int] = {}
        self.peers: dict[str, int] = {}
        self._given: set[tuple[str, str]] = set()

    def open(self, descriptors: list[Descriptor]) -> None:
        """Open these descriptors (on failure, closes every one opened so far, these and earlier ones)."""
        try:
            for d in descriptors:
                self._open_one(d)
        except BaseException:
            self.close()
            raise

    def _open_one(self, d: Descriptor) -> None:
        path = d.path or ""
        if d.kind == READ:
            self.fds[d.name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        elif d.kind in (READ_WRITE, DEVICE):
            self.fds[d.name] = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        elif d.kind == LOG:
            self.fds[d.name] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        elif d.kind == KERNEL:
            self.fds[d.name] = _open_for_others(path, self.vm_user, stat.S_IROTH)
        elif d.kind == PROGRAM:
            self.fds[d.name] = _open_for_others(path, self.vm_user, stat.S_IXOTH)
        elif d.kind == LISTEN:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                sock.listen(16)
            except OSError:
                sock.close()
                raise
            self.fds[d.name] = sock.detach()
        elif d.kind == CONNECT:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            self.fds[d.name] = sock.detach()
        elif d.kind == PAIR:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.fds[d.name], self.peers[d.name] = a.detach(), b.detach()
        else:
            raise ValueError(f"unknown descriptor kind {d.kind!r}")

    def spawn_args(self, argv: list[str]) -> tuple[list[str], tuple[int, ...]]:
        """`argv` with its placeholders filled in, and the descriptors to pass along with it."""
        refs = referenced(argv)
        table = {"fd": self.fds, "peer": self.peers}
        missing = [f"{k}:{n}" for k, n in refs if n not in table[k]]
        if missing:
            raise KeyError(f"no descriptor opened for {', '.join(missing)}")
        self._given.update(refs)
        filled = [_PLACEHOLDER.sub(lambda m: str(table[m.group(1)][m.group(2)]), arg) for arg in argv]
        return filled, tuple(table[k][n] for k, n in refs)

    def take_peer(self, name: str) -> socket.socket:
        """A pair's other end, for the shim's own use (the caller owns it from now on)."""
        return socket.socket(fileno=self.peers.pop(name))

    def close_passed(self) -> None:
        """Close the shim's copies of every descriptor handed to a process (the process keeps its own)."""
        for kind, name in self._given:
            table = self.fds if kind == "fd" else self.peers
            number = table.pop(name, None)
            if number is not None:
                with contextlib.suppress(OSError):
                    os.close(number)
        self._given.clear()

    def close(self) -> None:
        for number in [*self.fds.values(), *self.peers.values()]:
            with contextlib.suppress(OSError):
                os.close(number)
        self.fds.clear()
        self.peers.clear()


def _open_for_others(path: str, vm_user: int | None, permission: int) -> int:
    """A file the VM's user opens or runs as /proc/self/fd/N, which checks the file's own mode against that
    user (and skips the directories above it). One it may not read (or run) is copied into an anonymous memory
    file, which anyone may."""
    number = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    if vm_user is None or os.fstat(number).st_mode & permission:
        return number
    copy = os.memfd_create(os.path.basename(path), os.MFD_CLOEXEC)
    try:
        with os.fdopen(number, "rb") as src, os.fdopen(os.dup(copy), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except BaseException:
        os.close(copy)
        raise
    return copy
