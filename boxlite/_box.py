"""A box: one VM booted from an image, and the commands run in it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel

from boxlite import _files
from boxlite._errors import (
    BoxliteError,
    ConfigError,
    EngineError,
    InvalidStateError,
    NetworkError,
    PortalError,
    TimeoutError,
)
from boxlite._exec_args import check_exec_args, check_tty_size
from boxlite._execution import ExecStatus, Execution
from boxlite._metrics import (
    MIN_CPU_WINDOW_S,
    BoxMetrics,
    CpuSample,
    box_process_ids,
    cpu_percents,
    host_cpu_seconds,
    process_rss_bytes,
)
from boxlite._portal import portal_pb2 as pb
from boxlite._portal_client import PortalClient
from boxlite._state import (
    ACTIVE,
    CONFIGURED,
    FAILED,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    BoxRecord,
    process_alive,
)
from boxlite.engine import Accel, VmSpec, jail
from boxlite.engine.network import CONFIG_PORT, inline_config, launch_entry, plan_from_config
from boxlite.engine.qemu import kernel_cmdline, qcow2_backing_file, qemu_launch, vsock_device_launch

if TYPE_CHECKING:
    from boxlite._runtime import Boxlite
    from boxlite._snapshots import SnapshotInfo

READY_PORT = 2696
RESTORED_TB_SIZE_MIB = 64


@cache
def _shim_path() -> str:
    """Where the shim's imports live: it needs only the standard library and boxlite (no third-party package),
    so it can start without the `site` module (-S)."""
    import boxlite

    return str(Path(boxlite.__file__).resolve().parents[1])


def _shim_env() -> dict[str, str]:
    # -S skips `site` (a good part of the shim's start-up); boxlite's own location is given explicitly.
    extra = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": _shim_path() + (os.pathsep + extra if extra else "")}


def _virtual_size(qcow2: Path) -> int:
    """The disk size the guest sees, from the qcow2 header (bytes 24-31), without running qemu-img."""
    with open(qcow2, "rb") as f:
        header = f.read(32)
    return int.from_bytes(header[24:32], "big") if header[:4] == b"QFI\xfb" else qcow2.stat().st_size


STOP_TIMEOUT_S = 10.0


class BoxInfo(BaseModel):
    id: str
    name: str | None
    status: str
    image: str
    engine: str | None
    engine_reason: str | None
    pid: int | None
    shim_pid: int | None
    cpus: int
    memory_mib: int
    disk_size_gb: float | None
    created_at: datetime
    started_at: datetime | None
    guest_boot_ms: float | None
    box_dir: str
    error: str | None
    # Published ports as bound on the host (host port 0 replaced by the one picked), while running.
    ports: list[dict[str, Any]] = []
    # How the latest start happened: "cold" (booted) or "restored" (from a snapshot or template).
    boot: str | None = None

    @property
    def state(self) -> str:
        return self.status

    def __await__(self) -> Generator[Any, None, BoxInfo]:
        """Box.info() reads local state and needs no I/O wait, so it is synchronous; code written as
        `await box.info()` works too, because awaiting a BoxInfo gives the BoxInfo itself."""
        return self
        yield  # a generator: makes this an awaitable that completes at once


def _when(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Block until process `pid` (not necessarily our child) exits; True if it did within `timeout`."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)


def _run_of(rec: BoxRecord) -> tuple[int | None, float | None]:
    """Which run of the box's VM a record describes: CPU counters start again with each."""
    return rec.shim_pid, rec.started_at


class Box:
    def __init__(self, runtime: Boxlite, record: BoxRecord) -> None:
        self._runtime = runtime
        self._record = record
        self._client = PortalClient(self.socket_dir / "portal.sock", record.id)
        self._cpu_sample: CpuSample | None = None  # where the next metrics() call's CPU interval starts

    # -- identity and state -------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._record.id

    @property
    def name(self) -> str | None:
        return self._record.name

    @property
    def box_dir(self) -> Path:
        return Path(self._record.box_dir)

    @property
    def socket_dir(self) -> Path:
        return Path(self._record.config.get("socket_dir") or self._record.box_dir)

    def _refresh(self) -> BoxRecord:
        rec = self._runtime._store.find(self.id)
        if rec is None:
            raise InvalidStateError(f"box {self.id} has been removed", fix="create a new box")
        self._record = rec
        return rec

    def info(self) -> BoxInfo:
        """The box's state now (usable as `box.info()` or `await box.info()`)."""
        rec = self._refresh()
        cfg = rec.config
        return BoxInfo(
            id=rec.id, name=rec.name, status=rec.status, image=rec.image.get("reference", ""),
            engine=rec.engine, engine_reason=rec.engine_reason, pid=rec.vmm_pid, shim_pid=rec.shim_pid,
            cpus=cfg["cpus"], memory_mib=cfg["memory_mib"], disk_size_gb=cfg.get("disk_size_gb"),
            created_at=_when(rec.created_at) or datetime.now(UTC), started_at=_when(rec.started_at),
            guest_boot_ms=rec.guest_boot_ms, box_dir=rec.box_dir, error=rec.error, boot=rec.boot,
            ports=self._published_ports() if rec.status == RUNNING else [],
        )

    def _published_ports(self) -> list[dict[str, Any]]:
        try:
            ports: list[dict[str, Any]] = json.loads((self.box_dir / "ports.json").read_text())
        except (OSError, ValueError):
            return []
        return ports

    def _require_running(self, action: str) -> BoxRecord:
        rec = self._refresh()
        if rec.status == RUNNING:
            return rec
        if rec.status == FAILED:
            raise EngineError(f"cannot {action}: box {self.id} failed: {rec.error}",
                              fix=f"see {rec.box_dir}/console.log; `boxlite start {self.id}` boots it again")
        raise InvalidStateError(f"cannot {action} on {rec.status} box", fix=f"start it first (`await box.start()` "
                                f"or `boxlite start {self.id}`)")

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Boot the box's VM and wait until its agent is ready. Starting a running box does nothing."""
        rec = self._refresh()
        if rec.status == RUNNING:
            return
        if rec.status in (STARTING, STOPPING):
            raise InvalidStateError(f"cannot start a box that is {rec.status}", fix="wait and try again")
        await anyio.to_thread.run_sync(self._start_blocking)

    def _plan(self, rec: BoxRecord) -> tuple[dict[str, Any], Accel]:
        rt = self._runtime
        assets = rt._assets()
        accel = rt._accel()
        sockets = self.socket_dir
        others = [Path(r.box_dir) / "launch.json" for r in rt._store.all() if r.status in ACTIVE and r.id != rec.id]
        user, user_note = jail.vm_user(rec.id, jail.users_of(others), accel.name, bool(rec.config.get("volumes")))
        net = plan_from_config(rec.id, rec.config, (user.uid, user.gid) if user else None,
                               jail.proxy_helper() if user else None)
        transport = rt._transport()
        # Published ports and allow-lists are relayed over vsock: those boxes take the vsock portal (and so
        # cannot be snapshotted). Every other box gets its configuration on the kernel command line.
        if net.rules or net.ports:
            transport = "vsock"
        # A box made from a snapshot is restored on its first start only; later starts boot its own disk.
        restore = rec.config.get("restore") if rec.status == CONFIGURED else None
        if restore:
            transport = "serial"
        vhost_user = transport == "vsock" and assets.vsock_device is not None \
            and not Path("/dev/vhost-vsock").exists()
        config_arg = f"boxlite.config={CONFIG_PORT}" if transport == "vsock" else inline_config(net)
        spec = VmSpec(
            qemu=assets.qemu, kernel=assets.kernel, guest_root=assets.guest_root,
            box_disk=self.box_dir / "disk.qcow2", box_disk_backing=qcow2_backing_file(self.box_dir / "disk.qcow2"),
            box_dir=self.box_dir, accel=accel,
            cpus=rec.config["cpus"], memory_mib=rec.config["memory_mib"], hostname=rec.id[:12],
            ready_port=READY_PORT if vhost_user else 20000 + int(rec.id[:4], 16) % 40000,
            vhost_user_socket=sockets / "vsock" / "vhost.sock" if vhost_user else None,
            guest_cid=3 if vhost_user else 3 + int(rec.id[:6], 16) % 1_000_000,
            tsc_khz=restore["tsc_khz"] if restore else rt._tsc_khz(), socket_dir=sockets,
            devices=net.qemu_args, device_descriptors=net.descriptors, extra_cmdline=[config_arg],
            transport=transport,
            cmdline=restore["cmdline"] if restore else None,
            # A restored VM boots nothing: a smaller translation cache keeps its host memory down.
            tb_size_mib=RESTORED_TB_SIZE_MIB if restore else VmSpec.tb_size_mib,
        )
        qemu = qemu_launch(spec)
        plan: dict[str, Any] = {
            "box_id": rec.id, "db": str(rt._store.path), "qemu_argv": qemu.argv,
            "descriptors": [d.to_json() for d in qemu.descriptors],
            "vm_user": user.to_json() if user else None, "vm_user_note": user_note,
            "ready_port": spec.ready_port, "guest_cid": spec.guest_cid, "boot_timeout": rt.options.boot_timeout_s,
            "auto_remove": rec.config.get("auto_remove", False), "socket_dir": str(sockets),
            "net": launch_entry(net, CONFIG_PORT if transport == "vsock" else 0),
            "transport": transport, "hostname": spec.hostname, "restore": restore,
            # What a snapshot of this VM must record to be restored with the same machine.
            "qmp_socket": str(spec.qmp_socket),
            "cmdline": spec.cmdline or kernel_cmdline(spec), "cpus": spec.cpus, "memory_mib": spec.memory_mib,
            "disk_size_bytes": _virtual_size(spec.box_disk), "accel": accel.name, "kernel": str(spec.kernel),
            "guest_root": str(spec.guest_root), "tsc_khz": spec.tsc_khz,
        }
        if vhost_user:
            assert assets.vsock_device is not None and spec.vhost_user_socket is not None
            # The device runs as the VM's user in a directory of its own, with names relative to it.
            device = vsock_device_launch(assets.vsock_device, Path(spec.vhost_user_socket.name), Path("vsock.sock"))
            plan["vsock_argv"] = device.argv
            plan["vsock_descriptors"] = [d.to_json() for d in device.descriptors]
            plan["vsock_dir"] = str(spec.vhost_user_socket.parent)
            plan["vhost_socket"] = str(spec.vhost_user_socket)
            plan["vsock_uds"] = str(spec.vhost_user_socket.parent / "vsock.sock")
        return plan, accel

    def _start_blocking(self) -> None:
        rec = self._refresh()
        plan, accel = self._plan(rec)
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket_dir.chmod(0o700)
        (self.box_dir / "launch.json").write_text(json.dumps(plan, indent=1))
        for name in ("console.log", "qemu.log"):
            (self.box_dir / name).unlink(missing_ok=True)
        store = self._runtime._store
        store.update(self.id, status=STARTING, engine=accel.label, engine_reason=accel.reason, error=None,
                     started_at=time.time())
        read_fd, write_fd = os.pipe()
        try:
            with open(self.box_dir / "shim.log", "ab") as log:
                launcher = subprocess.Popen(
                    [sys.executable, "-S", "-m", "boxlite._shim", str(self.box_dir), str(write_fd)],
                    pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True, cwd="/", env=_shim_env(),
                )
            os.close(write_fd)
            write_fd = -1
            launcher.wait()  # the launcher forks the real shim and exits at once
            with os.fdopen(read_fd, "rb") as status_pipe:
                read_fd = -1
                line = status_pipe.readline()
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
        event = json.loads(line) if line.strip() else {"event": "failed", "error": "the box supervisor exited: "
                                                       + (self.box_dir / "shim.log").read_text(errors="replace")[-500:]}
        if event["event"] != "ready":
            error = event.get("error", "unknown error")
            with contextlib.suppress(BoxliteError):
                if self._refresh().status in ACTIVE:
                    store.update(self.id, status=FAILED, error=error)
            if event.get("kind") == "network":
                raise NetworkError(f"box {self.id} failed to start: {error}",
                                   fix=event.get("fix") or "check the box's ports and network options")
            if event.get("timeout"):
                raise TimeoutError(f"box {self.id} did not boot: {error}",
                                   fix="raise Options(boot_timeout_s=...) or check the console log in "
                                   f"{self.box_dir}")
            raise EngineError(f"box {self.id} failed to start: {error}",
                              fix=f"see {self.box_dir}/console.log and qemu.log")
        self._refresh()

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Shut the VM down cleanly (the guest syncs its disks); kill it if it does not go in `timeout` s."""
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout < 86400:
            raise ConfigError(f"timeout must be a number of seconds, got {timeout!r}", fix="pass e.g. timeout=10")
        rec = self._refresh()
        if rec.status not in ACTIVE:
            return
        self._runtime._store.update(self.id, status=STOPPING)
        if rec.status == RUNNING:
            with contextlib.suppress(PortalError):
                await self._client.shutdown(timeout=min(timeout, 5.0))
        await self._client.close()
        await anyio.to_thread.run_sync(self._reap, rec, timeout)

    def _reap(self, rec: BoxRecord, timeout: float) -> None:
        pid = rec.shim_pid
        if pid and process_alive(pid, rec.shim_start) and not _wait_for_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_for_exit(pid, 5.0):
                for victim in box_process_ids(pid)[::-1]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim, signal.SIGKILL)
                _wait_for_exit(pid, 5.0)
        # The shim records the end itself; if it was killed, record it here.
        final = self._runtime._store.find(self.id)
        if final is not None and final.status in ACTIVE:
            self._runtime._store.update(self.id, status=STOPPED, stopped_at=time.time(), shim_pid=None,
                                        vmm_pid=None)

    async def remove(self, force: bool = False) -> None:
        await self._runtime.remove(self.id, force=force)

    async def snapshot(self, name: str) -> SnapshotInfo:
        """Save the running box (memory, devices and disk, at one paused moment) as snapshot `name`.

        The box pauses for a moment and then runs on. `BoxOptions(snapshot=name)` starts new boxes from it,
        each with its own copy of the disk and fresh entropy, hostname and machine-id.
        """
        return await self._runtime.snapshots.create(self, name)

    # -- commands -------------------------------------------------------------------------------------------
    async def exec(
        self,
        cmd: str,
        args: list[str] | tuple[str, ...] | None = None,
        env: dict[str, str] | list[tuple[str, str]] | None = None,
        tty: bool = False,
        user: str | None = None,
        timeout_secs: float | None = None,
        cwd: str | None = None,
        *,
        timeout: float | None = None,
        stdin: bool = False,
        tty_size: tuple[int, int] | None = None,
    ) -> Execution:
        """Start `cmd args...` in the box and return at once; the Execution streams its output.

        env adds to the image's environment; user ("name", "uid[:gid]") and cwd default to the image's.
        A timeout kills the command's whole process group. stdin=True lets you write_stdin()/close_stdin().
        tty=True runs it on a pseudo-terminal of tty_size (rows, cols; 24x80 by default): its output all
        arrives as stdout, and Execution.resize() changes the size.
        """
        # Bad arguments fail here, before the box's state is even looked at (see boxlite/_exec_args.py).
        checked = check_exec_args(cmd, args, env, user, cwd, timeout if timeout is not None else timeout_secs)
        rows, cols = check_tty_size(tty_size)
        rec = self._require_running("execute")
        image = rec.image
        cfg = rec.config
        merged_env = dict(e.split("=", 1) for e in image.get("env", []) if "=" in e)
        merged_env.update(cfg.get("env") or {})
        merged_env.update(checked.env)
        request = pb.ExecRequest(
            argv=checked.argv, env=merged_env,
            cwd=checked.cwd or cfg.get("working_dir") or image.get("working_dir") or "/",
            user=checked.user or cfg.get("user") or image.get("user") or "", timeout_s=checked.timeout_s,
            stdin=bool(stdin),
        )
        if tty:
            request.tty.CopyFrom(pb.TtySize(rows=rows, cols=cols))

        def on_exit(status: ExecStatus) -> None:
            if status.exit_code != 0:
                self._count_error()

        execution = Execution(self._client, list(request.argv), on_exit)
        self._count_command()
        try:
            await execution._start(request)
        except PortalError:
            raise self._explain_portal_failure() from None
        return execution

    def _count_command(self) -> None:
        """One more command (an exec, or a code cell) in this box's counters and the home's."""
        self._runtime._store.bump_each(f"box:{self.id}:commands", "commands")

    def _count_error(self) -> None:
        """One more failed command (see BoxMetrics) in this box's counters and the home's."""
        self._runtime._store.bump_each(f"box:{self.id}:exec_errors", "exec_errors")

    def _explain_portal_failure(self) -> BoxliteError:
        """When the agent cannot be reached, say whether the VM died (EngineError) or only the link (PortalError)."""
        rec = self._refresh()
        if rec.status == FAILED or (rec.shim_pid and not process_alive(rec.shim_pid, rec.shim_start)):
            rec = self._refresh()
            return EngineError(f"the VM of box {self.id} is gone: {rec.error or 'it exited'}",
                               fix=f"see {rec.box_dir}/console.log; `boxlite start {self.id}` boots it again")
        return PortalError(f"cannot reach the agent of box {self.id} (status {rec.status})",
                           fix=f"check `boxlite info {self.id}`; stop and start the box if it persists")

    # -- files ----------------------------------------------------------------------------------------------------
    async def copy_in(self, host_path: str | os.PathLike[str], container_dest: str, *, overwrite: bool = True,
                      follow_symlinks: bool = False) -> None:
        """Copy a host file or directory (recursively) into the box, with `docker cp` rules: into
        `container_dest` if that is an existing directory, else as that name (its parent must exist).

        Modes and mtimes are kept; in the box the copies belong to root. overwrite=False refuses to replace an
        existing file (AlreadyExistsError). follow_symlinks: copy what a top-level link points to, not the link.
        """
        await _files.copy_in(self, os.fspath(host_path), container_dest, overwrite=overwrite,
                             follow_symlinks=follow_symlinks)

    async def copy_out(self, container_src: str, host_dest: str | os.PathLike[str], *, overwrite: bool = True,
                       follow_symlinks: bool = False) -> None:
        """Copy a file or directory (recursively) out of the box to the host, with the same rules as copy_in.

        A missing source raises NotFoundError. Symbolic links inside a copied directory must be relative and
        stay inside it (tarfile's "data" filter), else ExecutionError names the link.
        """
        await _files.copy_out(self, container_src, os.fspath(host_dest), overwrite=overwrite,
                              follow_symlinks=follow_symlinks)

    # -- metrics --------------------------------------------------------------------------------------------
    async def metrics(self) -> BoxMetrics:
        """Counters, and resource use now; CPU over the last interval (see BoxMetrics for which)."""
        rec = self._refresh()
        counters = self._runtime._store.counters()
        m = BoxMetrics(
            commands_executed_total=counters.get(f"box:{self.id}:commands", 0),
            exec_errors_total=counters.get(f"box:{self.id}:exec_errors", 0),
            bytes_sent_total=counters.get(f"box:{self.id}:bytes_sent", 0),
            bytes_received_total=counters.get(f"box:{self.id}:bytes_received", 0),
            total_create_duration_ms=rec.create_ms, guest_boot_duration_ms=rec.guest_boot_ms, boot=rec.boot,
        )
        if rec.status != RUNNING:
            return m
        start = self._cpu_sample
        if start is None or start.run != _run_of(rec):
            start, _ = await self._sample_cpu(rec)  # nothing to start from: a window of our own, from now
        wait = start.at + MIN_CPU_WINDOW_S - time.monotonic()
        if wait > 0:  # the previous call was too recent (or there was none) for a figure worth reading
            await anyio.sleep(wait)
        sample, guest = await self._sample_cpu(rec)
        self._cpu_sample = sample
        m.cpu_percent, m.guest_cpu_percent = cpu_percents(start, sample)
        rss = [r for r in (process_rss_bytes(p) for p in box_process_ids(rec.shim_pid)) if r is not None]
        m.memory_bytes = sum(rss) if rss else None
        if guest is not None:
            m.guest_memory_total_bytes = guest.mem_total_bytes
            m.guest_memory_used_bytes = guest.mem_total_bytes - guest.mem_available_bytes
            m.guest_processes = guest.processes
            m.disk_total_bytes, m.disk_used_bytes = guest.disk_total_bytes, guest.disk_used_bytes
        return m

    async def _sample_cpu(self, rec: BoxRecord) -> tuple[CpuSample, pb.GuestMetrics | None]:
        """The CPU counters of the host processes and of the guest, read together (and the guest's reply)."""
        at = time.monotonic()
        host_s = host_cpu_seconds(rec.shim_pid)
        guest: pb.GuestMetrics | None = None
        with contextlib.suppress(PortalError):
            guest = await self._client.metrics(timeout=5.0)
        busy, total = (guest.cpu_busy_s, guest.cpu_total_s) if guest is not None else (None, None)
        return CpuSample(run=_run_of(rec), at=at, host_s=host_s, guest_busy_s=busy,
                         guest_total_s=total), guest

    def __repr__(self) -> str:
        return f"<Box {self.id} name={self.name!r} status={self._record.status}>"
