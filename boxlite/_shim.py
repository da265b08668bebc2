"""The per-box supervisor ("shim"): one small process per running box that owns the VM.

It starts the vsock device and QEMU, waits for the guest agent to say it is ready, serves the box's portal
socket (a unix socket every host process can connect to; each connection is relayed to the agent's vsock
port), records the box's life in the state database, and cleans up when the VM ends. It runs in its own
session, so the VM outlives the Python process that created the box.

Run as: python -m boxlite._shim BOX_DIR STATUS_FD
It reports on STATUS_FD one JSON line, {"event": "ready", ...} or {"event": "failed", "error": ...}.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from boxlite import _wire
from boxlite._errors import NetworkError
from boxlite._relay import NetworkSide
from boxlite._serial_link import READY, HostLink
from boxlite._state import FAILED, RUNNING, STOPPED, STOPPING, StateStore, host_boot_id, process_start_ticks
from boxlite.engine import jail
from boxlite.engine.descriptors import Descriptor, OpenedDescriptors

PORTAL_PORT = 2695
RESTORE_TIMEOUT_S = 30.0
CHUNK = 256 * 1024


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


class GuestLink:
    """How the host reaches vsock ports of the guest: vhost-user's unix socket, or the kernel's AF_VSOCK."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.uds = plan.get("vsock_uds")
        self.cid = int(plan.get("guest_cid", 3))
        self.user = jail.VmUser.from_json(plan.get("vm_user"))

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.uds:
            reader, writer = await asyncio.open_unix_connection(self.uds)
            writer.write(f"CONNECT {port}\n".encode())
            await writer.drain()
            answer = await reader.readline()
            if not answer.startswith(b"OK"):
                writer.close()
                raise ConnectionError(f"vsock device refused port {port}: {answer!r}")
            return reader, writer
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (self.cid, port))
        return await asyncio.open_connection(sock=sock)

    def listen_socket(self, port: int) -> socket.socket:
        """A listening socket for connections the guest makes to host port `port`."""
        if self.uds:
            path = f"{self.uds}_{port}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            if self.user is not None:
                # The vsock device (the VM's user) connects to it, from its directory (0700, that user's).
                os.chown(path, self.user.uid, self.user.gid)
        else:
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            sock.bind((socket.VMADDR_CID_ANY, port))
        sock.listen(8)
        sock.setblocking(False)
        return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Shim:
    def __init__(self, box_dir: Path, status_fd: int) -> None:
        self.box_dir = box_dir
        self.plan: dict[str, Any] = json.loads((box_dir / "launch.json").read_text())
        self.box_id: str = self.plan["box_id"]
        # Unix socket paths are short-lived and length-limited: they may live apart from the box directory.
        self.socket_dir = Path(self.plan.get("socket_dir") or box_dir)
        self.store = StateStore(Path(self.plan["db"]))
        self.status_fd: int | None = status_fd
        self.link = GuestLink(self.plan)
        self.stop_requested = False
        self.procs: list[asyncio.subprocess.Process] = []
        self.user = self.link.user
        self.descriptors = OpenedDescriptors(self.user.uid if self.user else None)
        self.net_filter: asyncio.Task[None] | None = None
        self.passt: asyncio.subprocess.Process | None = None
        self.serial: SerialBoot | None = SerialBoot(self) if self.plan.get("transport") == "serial" else None

    def report(self, event: dict[str, Any]) -> None:
        if self.status_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.status_fd, (json.dumps(event) + "\n").encode())
            os.close(self.status_fd)
        self.status_fd = None

    async def _spawn(self, argv: list[str], log_name: str, pass_fds: tuple[int, ...] = (), as_vm_user: bool = True,
                     cwd: str | None = None) -> asyncio.subprocess.Process:
        """Start one of the box's processes: its descriptor placeholders filled in, only those descriptors (and
        `pass_fds`) open in it, as the VM's user unless `as_vm_user` is False."""
        argv, fds = self.descriptors.spawn_args(argv)
        user: dict[str, Any] = {}
        if as_vm_user and self.user is not None:
            user = {"user": self.user.uid, "group": self.user.gid, "extra_groups": list(self.user.groups)}
        with open(self.box_dir / log_name, "ab") as log:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                                                        stderr=log, preexec_fn=_die_with_parent,
                                                        pass_fds=fds + pass_fds, cwd=cwd, **user)
        self.procs.append(proc)
        return proc

    async def _start_vsock_device(self) -> None:
        argv = self.plan.get("vsock_argv")
        if not argv:
            return
        # Its sockets go in a directory of the VM user's own (made first thing in run()), named relative to it:
        # it may not enter ours. Its binary is run from a descriptor too (it may live under root's home).
        self.descriptors.open([Descriptor.from_json(d) for d in self.plan.get("vsock_descriptors") or []])
        proc = await self._spawn(argv, "vsock.log", cwd=self.plan["vsock_dir"])
        socket_path = Path(self.plan["vhost_socket"])
        deadline = time.monotonic() + 10
        # The device gives no readiness signal but its listening socket; it appears within milliseconds.
        while not socket_path.exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vhost-device-vsock did not start: {_tail(self.box_dir / 'vsock.log')}")
            await asyncio.sleep(0.002)

    async def _start_passt(self) -> None:
        """The user-mode NAT of an `enabled` network (boxlite/engine/network.py), and the frame filter between
        it and QEMU's network device. Frames QEMU sends before passt runs wait in the socket."""
        net = self.plan.get("net") or {}
        if not net.get("passt_argv"):
            return
        self.passt = await self._spawn(net["passt_argv"], "passt.log")
        from boxlite import _netfilter

        self.net_filter = await _netfilter.join(self.descriptors.take_peer("net"), self.descriptors.take_peer("passt"))

    async def _start_volume_helpers(self) -> None:
        """QEMU's 9p proxy helpers, one per shared directory, when QEMU runs as the VM's user. They keep the
        caller's file rights (they serve the directory as the caller would), chrooted into the directory."""
        for argv in (self.plan.get("net") or {}).get("helpers") or []:
            await self._spawn(argv, "volumes.log", as_vm_user=False)

    async def _wait_ready(self, listener: socket.socket, qemu: asyncio.subprocess.Process) -> bytes:
        loop = asyncio.get_running_loop()
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        exited = asyncio.ensure_future(qemu.wait())
        done, _ = await asyncio.wait({accept, exited}, timeout=float(self.plan["boot_timeout"]),
                                     return_when=asyncio.FIRST_COMPLETED)
        if accept not in done:
            accept.cancel()
            if exited in done:
                raise RuntimeError(f"the VM exited during boot (code {qemu.returncode}): "
                                   f"{_tail(self.box_dir / 'qemu.log') or _tail(self.box_dir / 'console.log')}")
            exited.cancel()
            raise TimeoutError(f"the guest agent did not report ready within {self.plan['boot_timeout']} s: "
                               f"{_tail(self.box_dir / 'console.log')}")
        exited.cancel()
        conn, _ = accept.result()
        chunks = []
        with conn:
            while data := await loop.sock_recv(conn, 4096):
                chunks.append(data)
        return b"".join(chunks)

    async def _serve_portal(self) -> asyncio.AbstractServer:
        path = self.socket_dir / "portal.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.serial is not None:
                await self.serial.link.relay(reader, writer)
                return
            try:
                g_reader, g_writer = await self.link.connect(PORTAL_PORT)
            except (OSError, ConnectionError):
                writer.close()
                return
            await asyncio.gather(_pipe(reader, g_writer), _pipe(g_reader, writer))

        return await asyncio.start_unix_server(relay, path=str(path), backlog=1024)

    def _on_sigterm(self) -> None:
        self.stop_requested = True
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        loop.add_signal_handler(signal.SIGINT, self._on_sigterm)
        self.store.update(self.box_id, shim_pid=os.getpid(), shim_start=process_start_ticks(os.getpid()),
                          boot_id=host_boot_id())
        print(f"vm user: {self.plan.get('vm_user_note')}", file=sys.stderr, flush=True)
        # Limits for everything this shim starts (see engine/jail.py).
        jail.apply_rlimits()
        cgroup = jail.enter_cgroup(self.box_id, int(self.plan.get("memory_mib") or 512))
        qemu: asyncio.subprocess.Process | None = None
        server: asyncio.AbstractServer | None = None
        net = NetworkSide(self.plan, self.box_dir, self.link.connect, self.link.listen_socket)
        try:
            if self.plan.get("vsock_dir"):
                jail.private_dir(Path(self.plan["vsock_dir"]), self.user)
            net.bind()  # first: a published port in use fails the start before anything runs
            await net.serve_guest_side()
            await self._start_vsock_device()  # before the descriptors: QEMU's is a connection to its socket
            self.descriptors.open([Descriptor.from_json(d) for d in self.plan["descriptors"]])
            await self._start_passt()
            await self._start_volume_helpers()
            if self.serial is not None:
                qemu, boot = await self.serial.start()
                server = await self._serve_portal()
                boot_ms, boot_info = await self.serial.wait_ready(qemu)
            else:
                listener = self.link.listen_socket(int(self.plan["ready_port"]))
                qemu = await self._spawn(self.plan["qemu_argv"], "qemu.log")
                self.descriptors.close_passed()
                self.store.update(self.box_id, vmm_pid=qemu.pid)
                server = await self._serve_portal()
                ready = await self._wait_ready(listener, qemu)
                listener.close()
                boot_ms, boot, boot_info = _guest_boot_ms(ready), "cold", {}
            await net.serve_ports()
            # passt gives no readiness signal on a socket pair; one that could not start has exited by now.
            if self.passt is not None and self.passt.returncode is not None:
                raise NetworkError(f"passt (the user-mode network) exited: {_tail(self.box_dir / 'passt.log')}",
                                   fix="check that `passt --version` runs, or use network='disabled'")
            self.store.update(self.box_id, status=RUNNING, guest_boot_ms=boot_ms, error=None, boot=boot)
            self.report({"event": "ready", "guest_boot_ms": boot_ms, "vmm_pid": qemu.pid, "boot": boot,
                         "ports": net.published, **boot_info})
            code = await qemu.wait()
            status, error = STOPPED, None
            rec = self.store.find(self.box_id)
            if not self.stop_requested and (rec is None or rec.status != STOPPING):
                status = FAILED
                error = f"the VM exited unexpectedly (code {code}): {_tail(self.box_dir / 'console.log', 3)}"
        except Exception as exc:
            status, error = FAILED, str(exc) or type(exc).__name__
            event = {"event": "failed", "error": error, "timeout": isinstance(exc, TimeoutError)}
            if isinstance(exc, NetworkError):
                error = event["error"] = exc.detail
                event.update(kind="network", fix=exc.fix)
            self.report(event)
        finally:
            net.close()
            self.descriptors.close()
            if self.net_filter is not None:
                self.net_filter.cancel()
            if server is not None:
                server.close()
            if self.serial is not None:
                await self.serial.close()
            for proc in self.procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            self._remove_sockets()
            if cgroup is not None:
                cgroup.leave_and_remove()
        self._record_end(status, error)
        return 0 if status == STOPPED else 1

    def _remove_sockets(self) -> None:
        for pattern in ("*.sock", "*.sock_*"):
            for path in self.socket_dir.glob(pattern):
                with contextlib.suppress(OSError):
                    path.unlink()
        if self.plan.get("vsock_dir"):
            import shutil

            shutil.rmtree(self.plan["vsock_dir"], ignore_errors=True)

    def _record_end(self, status: str, error: str | None) -> None:
        if status == FAILED:
            self.store.bump("boxes_failed")
        # A box that failed is kept, even with auto_remove, so its owner learns why (its next call raises
        # EngineError with the console's last lines); removing it is then the owner's call.
        if self.plan.get("auto_remove") and status == STOPPED:
            import shutil

            self.store.delete(self.box_id)
            shutil.rmtree(self.box_dir, ignore_errors=True)
            return
        self.store.update(self.box_id, status=status, error=error, stopped_at=time.time(), shim_pid=None,
                          shim_start=None, vmm_pid=None)


class SerialBoot:
    """Starting a VM whose portal is the serial link: a cold boot (wait for READY) or a snapshot restore
    (QEMU loads the state from an inherited descriptor; the agent is re-identified with RESTORE)."""

    def __init__(self, shim: Shim) -> None:
        self.shim = shim
        self.plan = shim.plan
        self.link: HostLink = None  # type: ignore[assignment]  # set by start()
        self._ready: asyncio.Future[bytes] | None = None

    async def start(self) -> tuple[asyncio.subprocess.Process, str]:
        # QEMU's portal chardev is one end of a socket pair; this is the other.
        conn = self.shim.descriptors.take_peer("portal")
        argv = list(self.plan["qemu_argv"])
        restore = self.plan.get("restore")
        state_fd = -1
        try:
            if restore:
                state_fd = os.open(restore["state"], os.O_RDONLY)
                argv += ["-incoming", f"fd:{state_fd}"]
            qemu = await self.shim._spawn(argv, "qemu.log", pass_fds=(state_fd,) if state_fd >= 0 else ())
        except BaseException:
            conn.close()
            raise
        finally:
            if state_fd >= 0:
                os.close(state_fd)
            self.shim.descriptors.close_passed()
        self.shim.store.update(self.shim.box_id, vmm_pid=qemu.pid)
        reader, writer = await asyncio.open_connection(sock=conn)
        self.link = HostLink(reader, writer)
        # Whatever streams the agent remembers (a template's, a previous shim's) are gone.
        self.link.reset()
        if restore:
            self._ready = self.link.restore(_restore_request(self.plan))
            return qemu, "restored"
        self._ready = self.link.expect(READY)
        return qemu, "cold"

    async def wait_ready(self, qemu: asyncio.subprocess.Process) -> tuple[float | None, dict[str, Any]]:
        assert self._ready is not None
        exited: asyncio.Future[Any] = asyncio.ensure_future(qemu.wait())
        timeout = float(self.plan["boot_timeout"])
        if self.plan.get("restore"):
            # A restore answers in well under a second; one that does not is broken (the library then boots the
            # box cold instead), and should not hold the caller for a whole boot timeout.
            timeout = min(timeout, RESTORE_TIMEOUT_S)
        done, _ = await asyncio.wait({self._ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if self._ready not in done:
            self._ready.cancel()
            if exited in done:
                raise RuntimeError(f"the VM exited during {'restore' if self.plan.get('restore') else 'boot'} "
                                   f"(code {qemu.returncode}): {_tail(self.shim.box_dir / 'qemu.log')}"
                                   f" {_tail(self.shim.box_dir / 'console.log')}")
            raise TimeoutError(f"the guest agent did not report ready within {timeout} s: "
                               f"{_tail(self.shim.box_dir / 'console.log')}")
        payload = self._ready.result()
        restore = self.plan.get("restore")
        if not restore:
            return _guest_boot_ms(payload), {}
        # The first RESTORE's clock was read before QEMU had loaded the state: send the time again, now. The agent
        # applies it before it serves anything else.
        self.link.restore(_wire.encode_restore_request(b"", "", "", time.time_ns()))
        reply = _wire.decode(payload)  # a RestoreReply: 1 agent_version, 2 kernel, 3 uptime_s, 4 restore_ms
        boot_ms = _restored_boot_ms(_wire.double(reply, 3), restore.get("uptime_s"))
        return boot_ms, {"agent_version": _wire.text(reply, 1), "kernel": _wire.text(reply, 2)}

    async def close(self) -> None:
        if self.link is not None:
            await self.link.aclose()


def _restore_request(plan: dict[str, Any]) -> bytes:
    """Fresh identity for a restored VM, made here (never written to disk): entropy, clock, names."""
    return _wire.encode_restore_request(entropy=os.urandom(64), hostname=plan["hostname"],
                                        machine_id=os.urandom(16).hex(), unix_time_ns=time.time_ns())


# Loaded before any child starts: in the child, after it has become the VM's user, nothing can be imported
# (Python's own files may be out of that user's reach).
_prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec, after it changed user (which clears the setting): if the shim dies (even by
    SIGKILL), the kernel kills the VM with it."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _guest_boot_ms(ready: bytes) -> float | None:
    """A cold boot's kernel start -> agent ready, as the agent measured it (None when it did not say)."""
    try:
        boot_ms = _wire.double(_wire.decode(ready), 2)  # Ready.boot_ms
    except (ValueError, IndexError):
        return None
    return round(boot_ms, 1) if boot_ms > 0 else None


def _restored_boot_ms(ready_uptime_s: float, snapshot_uptime_s: float | None) -> float | None:
    """A restore's guest time from the snapshot's moment to the agent's answer, on the guest's own clock (it
    resumed from where it stood when the snapshot was taken). None when either end is unknown (a snapshot whose
    clock could not be read, an agent that did not say): no stand-in figure."""
    if not snapshot_uptime_s or ready_uptime_s <= 0:
        return None
    boot_ms = (ready_uptime_s - float(snapshot_uptime_s)) * 1000
    return round(boot_ms, 1) if boot_ms > 0 else None


def main() -> None:
    box_dir, status_fd = Path(sys.argv[1]), int(sys.argv[2])
    # Detach completely: a new session, and no parent to reap us but init, so the creator may exit freely.
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    sys.exit(asyncio.run(Shim(box_dir, status_fd).run()))


if __name__ == "__main__":
    main()
