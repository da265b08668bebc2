"""The agent's entry point: bring the guest up, serve the portal, tell the host it is ready."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc

import guest
from guest import boxconfig, bridge, restore, serial_link, syscalls, system
from guest._portal import portal_pb2 as pb
from guest._portal import portal_pb2_grpc as pb_grpc
from guest.execution import ExecutionService

PORTAL_PORT = 2695
# Every streaming call (a running command, an upload, a kernel connection) holds a server thread for as long as it
# lasts, and a call finding every thread busy waits in a queue: with 64 threads, 64 long-running commands (or 64
# streams that never send their first message) left Ping and every other call waiting. Threads are only made
# when needed; each costs little memory.
SERVER_THREADS = 512
PORTAL_NAME = "boxlite-portal"
HOST_CID = 2


class GuestService(pb_grpc.GuestServicer):
    def __init__(self, root: str) -> None:
        self.root = root

    def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingReply:
        return pb.PingReply(agent_version=guest.__version__, uptime_s=system.uptime_s())

    def Metrics(self, request: pb.MetricsRequest, context: Any) -> pb.GuestMetrics:
        busy, total = system.cpu_seconds()
        mem_total, mem_avail = system.memory_bytes()
        disk_total, disk_used = system.disk_usage(self.root)
        return pb.GuestMetrics(
            cpu_busy_s=busy, cpu_total_s=total, mem_total_bytes=mem_total, mem_available_bytes=mem_avail,
            processes=system.process_count(), uptime_s=system.uptime_s(),
            disk_total_bytes=disk_total, disk_used_bytes=disk_used,
        )

    def Shutdown(self, request: pb.ShutdownRequest, context: Any) -> pb.ShutdownReply:
        threading.Thread(target=_power_off, daemon=True).start()
        return pb.ShutdownReply()

    def Restored(self, request: pb.RestoreRequest, context: Any) -> pb.RestoreReply:
        return restore.apply(request)

    def PrepareSnapshot(self, request: pb.PrepareSnapshotRequest, context: Any) -> pb.PrepareSnapshotReply:
        return restore.prepare_snapshot()


class LazyFiles(pb_grpc.FilesServicer):
    """The Files service, imported on its first use: tarfile and friends cost boot time under emulation."""

    def __init__(self) -> None:
        self._service: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._service is None:
                from guest.files import FilesService

                self._service = FilesService()
            return self._service

    def Upload(self, request_iterator: Any, context: Any) -> Any:
        return self._get().Upload(request_iterator, context)

    def Download(self, request: Any, context: Any) -> Any:
        return self._get().Download(request, context)

    def List(self, request: Any, context: Any) -> Any:
        return self._get().List(request, context)


class LazyKernels(pb_grpc.KernelServicer):
    """The Kernel service, imported on its first use (most boxes never start a kernel)."""

    def __init__(self) -> None:
        self._service: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._service is None:
                from guest.kernels import KernelService

                self._service = KernelService()
            return self._service

    def Start(self, request: Any, context: Any) -> Any:
        return self._get().Start(request, context)

    def Connect(self, request_iterator: Any, context: Any) -> Any:
        return self._get().Connect(request_iterator, context)

    def Interrupt(self, request: Any, context: Any) -> Any:
        return self._get().Interrupt(request, context)

    def Stop(self, request: Any, context: Any) -> Any:
        return self._get().Stop(request, context)


def _keep_own_modules_importable() -> None:
    """Let the agent import its own (and the standard library's) modules after it chroots into the image.

    Every import path is re-rooted at /proc/self/fd/N, N an open descriptor of the agent's own root: that
    link keeps pointing at the guest root after chroot, while the plain paths would then name the image's
    files (an image with its own Python would otherwise lend the agent its modules).
    """
    root_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    prefix = f"/proc/self/fd/{root_fd}"

    def reroot(paths: list[str]) -> list[str]:
        return [prefix + p if p.startswith("/") else p for p in paths]

    sys.path[:] = reroot(sys.path)
    sys.path_importer_cache.clear()
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if path is not None and not isinstance(path, str):
            with contextlib.suppress(AttributeError, TypeError):
                module.__path__ = reroot(list(path))


def _power_off() -> None:
    time.sleep(0.05)  # let the reply leave before the VM goes away
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)  # every process but init and us: nothing writes after the sync
    syscalls.power_off()


def _ready_message(started_at: float) -> pb.Ready:
    return pb.Ready(
        agent_version=guest.__version__,
        boot_ms=started_at * 1000,
        kernel=system.kernel_release(),
        cpus=os.cpu_count() or 1,
        memory_bytes=system.memory_bytes()[0],
    )


def _signal_ready(port: int, started_at: float) -> None:
    ready = _ready_message(started_at)
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
        s.connect((HOST_CID, port))
        s.sendall(ready.SerializeToString())


def _log(message: str) -> None:
    print(f"boxlite-guest: {message}", file=sys.stderr, flush=True)


def _raise_file_limit() -> None:
    """The soft descriptor limit up to the hard one (1024 -> 4096): each portal connection costs the agent seven
    (see bridge.MAX_CONNECTIONS), each running command four or five. Commands inherit it."""
    with contextlib.suppress(OSError, ValueError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _guard_against_oom() -> None:
    """The guest's OOM killer must pick a runaway command or kernel, never the agent (children are released)."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")


def main() -> None:
    system.mount_guest_filesystems()
    _guard_against_oom()
    _raise_file_limit()
    system.limit_tasks()
    _log(f"agent started at {system.uptime_s():.2f}s")
    with open("/proc/cmdline") as f:
        cmdline = f.read()
    params = system.boot_params(cmdline)
    system.set_hostname(params.hostname)
    root = system.mount_image_root(params.image_device)
    # The serial link's port is opened before the chroot (the image root's /dev is another devtmpfs, but
    # nothing says the image keeps it).
    port = serial_link.find_port() if params.transport == "serial" else None
    port_fd = os.open(port, os.O_RDWR) if port else -1
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_THREADS), options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_GuestServicer_to_server(GuestService("/"), server)
    pb_grpc.add_ExecutionServicer_to_server(ExecutionService(), server)
    pb_grpc.add_FilesServicer_to_server(LazyFiles(), server)
    pb_grpc.add_KernelServicer_to_server(LazyKernels(), server)
    # An abstract socket: no file in the image's root for commands to see or remove.
    server.add_insecure_port(f"unix-abstract:{PORTAL_NAME}")
    server.start()
    # From here on the agent lives in the image's root, as the commands it runs do. Everything it needs is
    # imported by now (grpc imports its server module when the server is made, hence this order). Commands
    # are then spawned with vfork (no chroot between fork and exec): under emulation a fork of this process
    # cost ~35 ms per command, and `python3 -c pass` went from 1060 to 245 ms.
    _keep_own_modules_importable()
    os.chroot(root)
    os.chdir("/")
    boxconfig.setup(cmdline)  # network, published ports, shared folders (inside the image's root)
    with contextlib.suppress(OSError):
        restore.write_machine_id(os.urandom(16).hex())
    if port_fd >= 0:
        link = serial_link.SerialLink(port_fd, "\0" + PORTAL_NAME, restore.apply_serialized)
        threading.Thread(target=link.serve_forever, daemon=True).start()
        link.send(serial_link.READY, 0, _ready_message(system.uptime_s()).SerializeToString())
    else:
        listener = bridge.listen(PORTAL_PORT)
        threading.Thread(target=bridge.serve_forever, args=(listener, "\0" + PORTAL_NAME), daemon=True).start()
        _signal_ready(params.ready_port, system.uptime_s())
    _log(f"ready after {system.uptime_s():.2f}s")
    server.wait_for_termination()


if __name__ == "__main__":
    main()
