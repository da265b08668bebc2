"""The Kernel service: Jupyter kernels running inside the box, relayed to the host frame by frame.

A kernel is a real ipykernel (or any program taking a Jupyter connection file) started in the image's root with
a connection file of the agent's making: ipc transport under /run/boxlite/kernels/<id>/ and a fresh HMAC key.
`Connect` opens ZMTP connections to its shell, control and stdin (as DEALERs sharing one identity) and iopub (as
a SUB) channels and relays whole multipart messages both ways, unread and unsigned: the host holds the key.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import secrets
import selectors
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from guest import users
from guest._portal import portal_pb2 as pb
from guest._portal import portal_pb2_grpc as pb_grpc
from guest.execution import process_settings, release_from_agent_oom_guard
from guest.zmtp import Peer, ZmtpError

KERNELS_DIR = "/run/boxlite/kernels"
DEFAULT_ARGV = ("python3", "-m", "ipykernel_launcher", "-f", "{connection_file}")
# Port numbers only name the ipc socket files (<dir>/kernel-<port>).
PORTS: dict[int, int] = {pb.SHELL: 1, pb.IOPUB: 2, pb.STDIN: 3, pb.CONTROL: 4}
HB_PORT = 5
SOCKET_TYPES: dict[int, str] = {pb.SHELL: "DEALER", pb.CONTROL: "DEALER", pb.STDIN: "DEALER", pb.IOPUB: "SUB"}
TAIL_BYTES = 16 * 1024
# A batch to the host is cut at this size (big outputs travel as several messages, memory stays bounded).
BATCH_BYTES = 1 << 20
DEFAULT_START_TIMEOUT_S = 60.0
# Sent to every kernel of a VM restored from a snapshot: a launcher that handles it (CodeBox's does) reseeds the
# kernel process's `random` and takes the clone's hostname. A real-time signal: no program uses it by chance.
RENEW_SIGNAL = signal.SIGRTMIN + 5
KERNEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_START_TIMEOUT_S = 600.0
MAX_GRACE_S = 60.0


def seconds(requested: float, default: float, limit: float) -> float:
    """A duration from a request: `default` for 0, a negative or NaN value, at most `limit` (a NaN deadline never
    comes, and threading's waits raise OverflowError beyond ~292 years), so Start and Stop always end."""
    if not requested > 0:
        return default
    return min(requested, limit)


class Kernel:
    """One kernel process, its directory and the last output it wrote to its own stdout/stderr."""

    def __init__(self, kernel_id: str, directory: str, key: str, proc: subprocess.Popen[bytes], cwd: str) -> None:
        self.kernel_id = kernel_id
        self.cwd = cwd
        self.directory = directory
        self.key = key
        self.proc = proc
        self.exited = threading.Event()
        self._tail = bytearray()
        self._tail_lock = threading.Lock()
        threading.Thread(target=self._collect_output, daemon=True, name=f"kernel-{kernel_id}-out").start()
        threading.Thread(target=self._wait, daemon=True, name=f"kernel-{kernel_id}-wait").start()

    @property
    def connection_file(self) -> str:
        return f"{self.directory}/connection.json"

    def channel_path(self, channel: int) -> str:
        return f"{self.directory}/kernel-{PORTS[channel]}"

    def _collect_output(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        for chunk in iter(lambda: os.read(fd, 4096), b""):
            with self._tail_lock:
                self._tail += chunk
                del self._tail[:-TAIL_BYTES]
        self.proc.stdout.close()

    def _wait(self) -> None:
        self.proc.wait()
        self.exited.set()

    def output_tail(self) -> str:
        with self._tail_lock:
            return self._tail.decode(errors="replace")

    def exit_message(self) -> pb.KernelExit:
        code = self.proc.returncode if self.proc.returncode is not None else self.proc.wait()
        return pb.KernelExit(exit_code=code if code >= 0 else -1, signal=-code if code < 0 else 0,
                             output_tail=self.output_tail()[-4000:])

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def stop(self, grace_s: float) -> None:
        if not self.exited.is_set() and grace_s > 0:
            self.signal_group(signal.SIGTERM)
            self.exited.wait(grace_s)
        # The whole group goes: whatever the kernel started must not outlive it.
        self.signal_group(signal.SIGKILL)
        self.exited.wait(5.0)
        with contextlib.suppress(OSError):
            for name in os.listdir(self.directory):
                os.unlink(os.path.join(self.directory, name))
            os.rmdir(self.directory)


_services: list[KernelService] = []


def renew_all() -> None:
    """After a restore: tell every running kernel that its VM is a new machine now."""
    for service in _services:
        for kernel in list(service.kernels.values()):
            if not kernel.exited.is_set():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(kernel.proc.pid, RENEW_SIGNAL)


class StartFailedError(Exception):
    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _connect(kernel: Kernel, channel: int, identity: bytes, deadline: float) -> Peer:
    """Connect one channel, retrying while the kernel is between bind() and listen() on a slow machine."""
    while True:
        try:
            return Peer(kernel.channel_path(channel), SOCKET_TYPES[channel],
                        identity if channel in (pb.SHELL, pb.STDIN) else b"")
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() >= deadline or kernel.exited.is_set():
                raise
            time.sleep(0.01)


class KernelService(pb_grpc.KernelServicer):
    def __init__(self) -> None:
        self.kernels: dict[str, Kernel] = {}
        self.lock = threading.Lock()  # guards the tables, briefly
        self.start_locks: dict[str, threading.Lock] = {}
        self.feeders = ThreadPoolExecutor(max_workers=64, thread_name_prefix="kernel-feeder")
        _services.append(self)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def Start(self, request: pb.KernelStartRequest, context: Any) -> pb.KernelInfo:
        kernel_id = request.kernel_id or "default"
        if not KERNEL_ID.match(kernel_id):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad kernel id {kernel_id!r}: use letters, digits, "
                          "'_', '.' and '-' (at most 64)")
        # One start at a time per kernel id; kernels of other ids start (and stop) meanwhile.
        with self.lock:
            id_lock = self.start_locks.setdefault(kernel_id, threading.Lock())
        with id_lock:
            existing = self.kernels.get(kernel_id)
            if existing is not None and not existing.exited.is_set() and not request.restart:
                return self._info(existing, started=False, start_ms=0.0)
            if existing is not None:
                existing.stop(grace_s=1.0)
                with self.lock:
                    self.kernels.pop(kernel_id, None)
            started = time.monotonic()
            try:
                kernel = self._spawn(kernel_id, request.process)
                self._wait_bound(kernel, seconds(request.start_timeout_s, DEFAULT_START_TIMEOUT_S,
                                                 MAX_START_TIMEOUT_S))
            except StartFailedError as exc:
                context.abort(exc.code, exc.detail)
            with self.lock:
                self.kernels[kernel_id] = kernel
            return self._info(kernel, started=True, start_ms=(time.monotonic() - started) * 1000)

    @staticmethod
    def _info(kernel: Kernel, started: bool, start_ms: float) -> pb.KernelInfo:
        return pb.KernelInfo(kernel_id=kernel.kernel_id, key=kernel.key.encode(), signature_scheme="hmac-sha256",
                             pid=kernel.proc.pid, started=started, start_ms=start_ms,
                             connection_file=kernel.connection_file, cwd=kernel.cwd)

    def _spawn(self, kernel_id: str, process: pb.ExecRequest) -> Kernel:
        try:
            if not process.cwd:
                home = users.resolve("/", process.user).home
                process.cwd = home if os.path.isdir(home) else "/"
            settings = process_settings(process)
        except users.UnknownUser as exc:
            raise StartFailedError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except NotADirectoryError as exc:
            raise StartFailedError(grpc.StatusCode.INVALID_ARGUMENT, exc.strerror or str(exc)) from None
        except ValueError as exc:  # a user "uid" that int() cannot read, a NUL byte in cwd
            raise StartFailedError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        directory = f"{KERNELS_DIR}/{kernel_id}"
        os.makedirs(KERNELS_DIR, mode=0o711, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(directory):
                os.unlink(os.path.join(directory, name))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        uid, gid = settings["user"], settings["group"]
        if uid is not None:
            os.chown(directory, uid, gid)
        key = str(uuid.UUID(bytes=secrets.token_bytes(16)))
        connection = {
            "transport": "ipc", "ip": f"{directory}/kernel", "key": key, "signature_scheme": "hmac-sha256",
            "kernel_name": "python3", "hb_port": HB_PORT,
            **{f"{name}_port": PORTS[ch] for name, ch in
               (("shell", pb.SHELL), ("iopub", pb.IOPUB), ("stdin", pb.STDIN), ("control", pb.CONTROL))},
        }
        path = f"{directory}/connection.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(connection, f)
        if uid is not None:
            os.chown(path, uid, gid)
        argv = [arg.replace("{connection_file}", path) for arg in (process.argv or DEFAULT_ARGV)]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, **settings)
        except FileNotFoundError:
            raise StartFailedError(grpc.StatusCode.NOT_FOUND, f"{argv[0]}: command not found in the image") from None
        except OSError as exc:
            raise StartFailedError(grpc.StatusCode.FAILED_PRECONDITION, f"{argv[0]}: {exc.strerror or exc}") from None
        except (ValueError, OverflowError) as exc:  # a NUL byte in argv or env, '=' in an env name, ...
            raise StartFailedError(grpc.StatusCode.INVALID_ARGUMENT, f"{argv[0]}: {exc}") from None
        release_from_agent_oom_guard(proc.pid)
        return Kernel(kernel_id, directory, key, proc, settings["cwd"])

    @staticmethod
    def _wait_bound(kernel: Kernel, timeout_s: float) -> None:
        """Return once the kernel has bound all its channels (their socket files exist)."""
        deadline = time.monotonic() + timeout_s
        paths = [kernel.channel_path(ch) for ch in PORTS]
        while not all(os.path.exists(p) for p in paths):
            if kernel.exited.wait(0.01):
                exit_msg = kernel.exit_message()
                how = f"signal {exit_msg.signal}" if exit_msg.signal else f"code {exit_msg.exit_code}"
                raise StartFailedError(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"the kernel exited during start-up ({how}):\n{exit_msg.output_tail}")
            if time.monotonic() >= deadline:
                kernel.stop(grace_s=0)
                raise StartFailedError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"the kernel did not open its channels within {timeout_s:g} s; its output:\n"
                                  f"{kernel.output_tail()}")

    def Interrupt(self, request: pb.KernelRef, context: Any) -> pb.KernelReply:
        kernel = self.kernels.get(request.kernel_id or "default")
        if kernel is None or kernel.exited.is_set():
            return pb.KernelReply(found=False)
        kernel.signal_group(signal.SIGINT)
        return pb.KernelReply(found=True)

    def Stop(self, request: pb.KernelStopRequest, context: Any) -> pb.KernelReply:
        with self.lock:
            kernel = self.kernels.pop(request.kernel_id or "default", None)
        if kernel is None:
            return pb.KernelReply(found=False)
        kernel.stop(seconds(request.grace_s, 0.0, MAX_GRACE_S))
        return pb.KernelReply(found=True)

    # -- the relay ------------------------------------------------------------------------------------------
    def Connect(self, request_iterator: Iterator[pb.KernelClientMessage], context: Any
                ) -> Iterator[pb.KernelServerMessage]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "connect":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be `connect`")
            return
        kernel_id = first.connect.kernel_id or "default"
        kernel = self.kernels.get(kernel_id)
        if kernel is None or kernel.exited.is_set():
            context.abort(grpc.StatusCode.NOT_FOUND, f"no kernel {kernel_id!r} is running")
            return
        identity = first.connect.identity or uuid.uuid4().hex.encode()
        peers: dict[int, Peer] = {}
        try:
            deadline = time.monotonic() + 10.0
            for channel in (pb.SHELL, pb.CONTROL, pb.STDIN, pb.IOPUB):
                peers[channel] = _connect(kernel, channel, identity, deadline)
        except (OSError, ZmtpError) as exc:
            for peer in peers.values():
                peer.close()
            if kernel.exited.is_set():
                yield pb.KernelServerMessage(exited=kernel.exit_message())
                return
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot connect to kernel {kernel_id!r}: {exc}")
        yield from self._relay(kernel, peers, request_iterator)

    def _relay(self, kernel: Kernel, peers: dict[int, Peer], request_iterator: Iterator[pb.KernelClientMessage]
               ) -> Iterator[pb.KernelServerMessage]:
        """Three threads per connection: the feeder writes the client's messages to the kernel; the reader
        reads the kernel's into a queue; this generator sends what has queued up, batched (while one reply is
        being sent, the next messages gather)."""
        out: queue.SimpleQueue[pb.KernelFrames | pb.KernelExit | None] = queue.SimpleQueue()
        done_r, done_w = os.pipe()  # the feeder says the client has finished (it owns done_w)
        stop_r, stop_w = os.pipe()  # this generator tells the reader to stop

        def feed() -> None:
            try:
                for msg in request_iterator:
                    if msg.WhichOneof("kind") != "message" or msg.message.channel == pb.IOPUB:
                        continue
                    peer = peers.get(msg.message.channel)
                    if peer is not None and msg.message.frames:
                        peer.send(list(msg.message.frames))
            except Exception:  # the client went away, or the kernel did: either way this relay is over
                pass
            finally:
                with contextlib.suppress(OSError):
                    os.write(done_w, b"x")
                os.close(done_w)

        reader = threading.Thread(target=self._read_kernel, args=(kernel, peers, out, done_r, stop_r), daemon=True,
                                  name=f"kernel-{kernel.kernel_id}-relay")
        fed = False
        try:
            reader.start()
            self.feeders.submit(feed)
            fed = True
            yield pb.KernelServerMessage(info=self._info(kernel, started=False, start_ms=0.0))
            yield pb.KernelServerMessage(connected=True)
            more = object()  # "the queue is empty for now" (or the batch is full)
            while True:
                item: Any = out.get()
                batch: list[pb.KernelFrames] = []
                size = 0
                while isinstance(item, pb.KernelFrames):
                    batch.append(item)
                    size += sum(len(f) for f in item.frames)
                    try:
                        item = out.get_nowait() if size < BATCH_BYTES else more
                    except queue.Empty:
                        item = more
                if len(batch) == 1:
                    yield pb.KernelServerMessage(message=batch[0])
                elif batch:
                    yield pb.KernelServerMessage(batch=pb.KernelBatch(messages=batch))
                if item is more:
                    continue
                if isinstance(item, pb.KernelExit):
                    yield pb.KernelServerMessage(exited=item)
                return  # None: the reader stopped (the client finished, or the connection broke)
        finally:
            with contextlib.suppress(OSError):
                os.write(stop_w, b"x")
            reader.join(10.0)
            for peer in peers.values():
                peer.close()
            for fd in (done_r, stop_r, stop_w, -1 if fed else done_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    @staticmethod
    def _read_kernel(kernel: Kernel, peers: dict[int, Peer], out: queue.SimpleQueue[Any], done_r: int,
                     stop_r: int) -> None:
        """Queue every message the kernel sends; at its end, what it sent last and then how it ended."""
        sel = selectors.DefaultSelector()
        pidfd = -1
        try:
            for channel, peer in peers.items():
                sel.register(peer.fileno(), selectors.EVENT_READ, channel)
            sel.register(done_r, selectors.EVENT_READ, "done")
            sel.register(stop_r, selectors.EVENT_READ, "done")
            with contextlib.suppress(ProcessLookupError):
                pidfd = os.pidfd_open(kernel.proc.pid)
                sel.register(pidfd, selectors.EVENT_READ, "exit")
            while True:
                ended = False
                for key, _ in sel.select(None if pidfd >= 0 else 0.5):
                    if key.data == "done":
                        # The client finished, or the feeder failed to write because the kernel is dying:
                        # then the client still learns how it ended.
                        if not kernel.exited.wait(0.2):
                            return
                        ended = True
                        break
                    if key.data == "exit":
                        ended = True
                        continue
                    messages = peers[key.data].read_available()
                    if messages is None:
                        sel.unregister(key.fd)  # the kernel closed it: it is exiting
                        continue
                    for frames in messages:
                        out.put(pb.KernelFrames(channel=key.data, frames=frames))
                if ended or (pidfd < 0 and kernel.exited.is_set()):
                    break
            # The kernel is gone: deliver what it sent before dying, then say how it ended.
            kernel.exited.wait(5.0)
            for channel, peer in peers.items():
                for frames in peer.read_available() or []:
                    out.put(pb.KernelFrames(channel=channel, frames=frames))  # type: ignore[arg-type]
            out.put(kernel.exit_message())
        except Exception:  # the connection broke: end the relay rather than hang it
            pass
        finally:
            out.put(None)
            sel.close()
            if pidfd >= 0:
                os.close(pidfd)
