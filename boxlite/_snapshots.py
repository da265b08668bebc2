"""Snapshots of running boxes, and the templates new boxes are restored from.

A snapshot is a directory: `state` (QEMU's migration stream: memory and devices), `disk.qcow2` (the box's
overlay frozen at the same moment, backed by the image's disk) and `meta.json` (what it was made from, and the
exact kernel command line and resources a restore must repeat). Every box restored from it gets its own copy
of the frozen overlay, so removing a snapshot never breaks a box made from it.

    <home>/snapshots/<name>/     box.snapshot(name); BoxOptions(snapshot=name) starts boxes from it
    <home>/templates/<key>/      made by the runtime on a box's first cold boot for that key, used after

A template's key is a digest of everything the restored machine depends on: the image's digest, the kernel and
guest root files (their names carry digests of the kernel config and the agent's sources), QEMU's version,
the accelerator, cpus, memory, disk size, transport, and a tag (e.g. "codebox") for templates whose box was
warmed up before the snapshot. A template whose key no longer matches the present assets is stale: it is
removed and never restored.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from boxlite._errors import AlreadyExistsError, ConfigError, InvalidStateError, NotFoundError, StorageError
from boxlite._netopts import NetworkSpec
from boxlite.provision._common import digest_of

if TYPE_CHECKING:
    from boxlite._box import Box
    from boxlite._options import BoxOptions
    from boxlite._runtime import Boxlite
    from boxlite.images import Image

FORMAT = "1"
# How long a template's guest is left alone before its snapshot, for its threads to go idle.
QUIESCE_S = 0.3
# Options that change only what the host does with a box, never the VM: a template serves them all.
HOST_ONLY_OPTIONS = {"env", "working_dir", "user", "name", "auto_remove", "detach", "entrypoint", "cmd", "snapshot"}
# Options that are part of a template's key.
KEY_OPTIONS = {"image", "rootfs_path", "cpus", "memory_mib", "disk_size_gb"}


@dataclass(frozen=True)
class Warmup:
    """Work done in a freshly booted box before its template snapshot is taken (e.g. starting CodeBox's
    in-box kernel), so every box restored from the template starts warm. `tag` names it in the template key."""

    tag: str
    run: Callable[[Box], Awaitable[None]]


class SnapshotInfo(BaseModel):
    name: str
    kind: str  # "snapshot" or "template"
    path: str
    created_at: float
    source_box: str | None
    image: str
    image_digest: str
    cpus: int
    memory_mib: int
    disk_size_bytes: int
    accel: str
    transport: str
    kernel: str
    guest_root: str
    qemu_version: str
    cmdline: str
    tsc_khz: int | None
    guest_uptime_s: float | None
    image_record: dict[str, Any]
    state_bytes: int
    disk_bytes: int
    paused_ms: float
    key: str = ""
    tag: str = ""
    format: str = FORMAT

    @property
    def dir(self) -> Path:
        return Path(self.path)

    @property
    def size_bytes(self) -> int:
        return self.state_bytes + self.disk_bytes


@cache
def qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def template_key(*, image_digest: str, kernel: str, guest_root: str, qemu: str, accel: str, cpus: int,
                 memory_mib: int, disk_size_bytes: int, transport: str, tsc_khz: int | None, tag: str) -> str:
    from boxlite.engine.qemu import MACHINE_VERSION

    return digest_of(FORMAT, MACHINE_VERSION, image_digest, Path(kernel).name, Path(guest_root).name, qemu, accel,
                     str(cpus), str(memory_mib), str(disk_size_bytes), transport, str(tsc_khz), tag)


def template_allowed(opts: BoxOptions) -> bool:
    """Whether a box with these options may start from a template: only options the key covers, or that
    never reach the VM, may differ from their defaults (a volume or a port forward, say, would not be in
    the template's machine)."""
    for name in opts.model_fields_set - HOST_ONLY_OPTIONS - KEY_OPTIONS:
        field = type(opts).model_fields[name]
        if getattr(opts, name) != field.get_default(call_default_factory=True):
            return False
    return opts.snapshot is None


def stale_reason(info: SnapshotInfo, current_key: str | None = None) -> str | None:
    """Why a snapshot can no longer be restored (None: it can)."""
    if info.format != FORMAT:
        return f"made by another snapshot format ({info.format})"
    for what, path in (("guest kernel", info.kernel), ("guest root (agent)", info.guest_root)):
        if not Path(path).exists():
            return f"its {what} {Path(path).name} has been replaced"
    if current_key is not None and info.key != current_key:
        return "the image, kernel, agent or QEMU changed since it was made"
    return None


def machine_config(info: SnapshotInfo) -> dict[str, Any]:
    """The guest configuration the snapshot's machine was booted with (network kind, volumes, published guest
    ports), read back from its kernel command line: a snapshot-capable box carries it there inline
    (`boxlite.config=b64:...`, boxlite/engine/network.py), and it is exactly what its memory holds."""
    import base64

    for item in info.cmdline.split():
        if item.startswith("boxlite.config=b64:"):
            try:
                decoded = json.loads(base64.urlsafe_b64decode(item.removeprefix("boxlite.config=b64:")))
            except ValueError:
                break
            return decoded if isinstance(decoded, dict) else {}
    return {}


def fit_options(info: SnapshotInfo, opts: BoxOptions) -> BoxOptions:
    """The options of a box restored from `info`, checked before anything is made.

    A restore brings back the snapshot's whole machine: its memory, cpus, devices and disk. An option that
    would need another machine is a ConfigError naming it; an option left unset takes the snapshot's value
    (cpus, memory, network). Published ports, allow-lists and volumes cannot be had on a restored machine:
    ports and allow-lists are relayed over vsock, which a snapshot-capable machine has none of (its portal is
    a virtio-serial port, the one kind QEMU migrates), and a 9p share is a device the snapshot would have to
    hold (QEMU refuses to snapshot a box with one mounted).
    """
    name = info.name
    if opts.image is not None and opts.image != info.image:
        raise ConfigError(f"snapshot {name} is of image {info.image}, not {opts.image}",
                          fix="leave image unset with snapshot=")
    if opts.rootfs_path is not None:
        raise ConfigError(f"snapshot {name} is of image {info.image}: a box restored from it cannot have "
                          f"rootfs_path={opts.rootfs_path}", fix="leave rootfs_path unset with snapshot=")
    for field, value in (("cpus", info.cpus), ("memory_mib", info.memory_mib)):
        if field in opts.model_fields_set and getattr(opts, field) != value:
            raise ConfigError(f"snapshot {name} was taken with {field}={value}; a box restored from it cannot "
                              f"have {field}={getattr(opts, field)}",
                              fix=f"leave {field} unset (or {value}) with snapshot=")
    if opts.disk_size_gb is not None:
        image_bytes = int(info.image_record.get("disk_bytes") or 0)
        if max(image_bytes, int(opts.disk_size_gb * 1024**3)) != info.disk_size_bytes:
            raise ConfigError(f"snapshot {name} holds a disk of {info.disk_size_bytes / 1024**3:g} GiB; a box "
                              f"restored from it cannot have disk_size_gb={opts.disk_size_gb:g} (the guest's "
                              "memory knows the disk's size)", fix="leave disk_size_gb unset with snapshot=")
    if opts.ports:
        raise ConfigError(f"a box restored from snapshot {name} cannot publish ports: published ports are relayed "
                          "over vsock, and a snapshot's machine has none (its portal is a virtio-serial port, the "
                          "only kind QEMU can snapshot)",
                          fix="drop ports= (-p) with snapshot=, or publish the port on a box booted without one")
    if opts.volumes:
        raise ConfigError(f"a box restored from snapshot {name} cannot have volumes: a shared folder is a device "
                          "of the machine, and the snapshot's machine has none",
                          fix="drop volumes= (-v) with snapshot=, or copy files in with box.copy_in() once it runs")
    machine = machine_config(info)
    if machine.get("volumes"):
        raise InvalidStateError(f"snapshot {name} cannot be restored: its machine has shared folders",
                                fix="take the snapshot from a box without volumes")
    kind = (machine.get("network") or {}).get("kind", "nat")
    if opts.network.kind == "allowlist":
        raise ConfigError(f"a box restored from snapshot {name} cannot have an allow_net list: allowed "
                          "destinations are relayed over vsock, and a snapshot's machine has none",
                          fix="drop allow_net with snapshot=, or boot a box with it without one")
    snap_mode: Literal["enabled", "disabled"] = "disabled" if kind == "none" else "enabled"
    if "network" in opts.model_fields_set and opts.network.mode != snap_mode:
        raise ConfigError(f"snapshot {name} was taken with network {snap_mode!r}; a box restored from it cannot "
                          f"have network {opts.network.mode!r} (the network device is part of the machine)",
                          fix=f"leave network unset (or {snap_mode!r}) with snapshot=")
    return opts.model_copy(update={"cpus": info.cpus, "memory_mib": info.memory_mib,
                                   "network": NetworkSpec(mode=snap_mode)})


def _slot(info: SnapshotInfo) -> tuple[str, int, int, int, str, str]:
    return info.image, info.cpus, info.memory_mib, info.disk_size_bytes, info.tag, info.accel


@contextlib.contextmanager
def _try_lock(path: Path) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _valid_name(name: str) -> str:
    if not name or len(name) > 64 or not name.isascii() or not all(c.isalnum() or c in "-_." for c in name) \
            or not name[0].isalnum():
        raise ConfigError(f"invalid snapshot name {name!r}: use 1-64 letters, digits, '-', '_' or '.', "
                          "starting with a letter or digit", fix="choose another name")
    return name


class SnapshotStore:
    """`runtime.snapshots`: list, get, remove the snapshots under the home directory (and the templates)."""

    def __init__(self, runtime: Boxlite) -> None:
        self._rt = runtime
        self.root = runtime.home / "snapshots"
        self.templates_root = runtime.home / "templates"

    # -- reading ---------------------------------------------------------------------------------------------
    @staticmethod
    def _read(path: Path) -> SnapshotInfo | None:
        try:
            return SnapshotInfo.model_validate_json((path / "meta.json").read_text())
        except (OSError, ValueError):
            return None

    def list(self, templates: bool = False) -> builtins.list[SnapshotInfo]:
        root = self.templates_root if templates else self.root
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(root.iterdir()):
                if entry.is_dir() and not entry.name.startswith("."):
                    info = self._read(entry)
                    if info is not None:
                        found.append(info)
        return sorted(found, key=lambda i: i.created_at)

    def templates(self) -> builtins.list[SnapshotInfo]:
        return self.list(templates=True)

    def get(self, name: str) -> SnapshotInfo:
        info = self._read(self.root / _valid_name(name))
        if info is None:
            raise NotFoundError(f"snapshot not found: {name}", fix="`boxlite snapshot ls` lists the snapshots")
        return info

    def remove(self, name: str) -> None:
        """Remove a snapshot. Boxes made from it keep working (each has its own copy of its disk)."""
        path = self.root / _valid_name(name)
        if not (path / "meta.json").exists():
            raise NotFoundError(f"snapshot not found: {name}", fix="`boxlite snapshot ls` lists the snapshots")
        self._discard(path)

    def _discard(self, path: Path) -> None:
        # Renamed away first, so no reader ever sees half a snapshot.
        trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def image_digests(self) -> dict[str, builtins.list[str]]:
        """{image digest: ["snapshot NAME", ...]}: the images snapshots' disks are based on. Not the templates':
        those are a cache, discarded with their image (discard_templates_of)."""
        used: dict[str, builtins.list[str]] = {}
        for info in self.list():
            used.setdefault(info.image_digest, []).append(f"{info.kind} {info.name}")
        return used

    # -- taking ----------------------------------------------------------------------------------------------
    async def create(self, box: Box, name: str) -> SnapshotInfo:
        _valid_name(name)
        target = self.root / name
        if target.exists():
            raise AlreadyExistsError(f"snapshot already exists: {name}",
                                     fix="choose another name, or remove it first (runtime.snapshots.remove)")
        return await self._take(box, target, kind="snapshot", name=name, key="", tag="")

    async def _take(self, box: Box, target: Path, *, kind: str, name: str, key: str, tag: str) -> SnapshotInfo:
        import anyio

        from boxlite._errors import PortalError
        from boxlite._state import RUNNING
        from boxlite.engine.qmp import QmpError
        from boxlite.engine.snapshot import save_vm

        rec = box._refresh()
        if rec.status != RUNNING:
            raise InvalidStateError(f"cannot snapshot a {rec.status} box", fix="start the box first")
        launch = json.loads((box.box_dir / "launch.json").read_text())
        if launch.get("transport") != "serial":
            raise InvalidStateError(f"box {box.id} cannot be snapshotted: its portal is on vhost-user vsock, "
                                    "which QEMU cannot migrate",
                                    fix="create boxes with the serial transport (the default; unset "
                                        "BOXLITE_TRANSPORT)")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".new-{target.name}-", dir=target.parent))
        try:
            uptime: float | None = None
            with contextlib.suppress(PortalError):
                await self._prepare(box)
                uptime = (await box._client.ping(timeout=10.0)).uptime_s
            pinged = time.monotonic()
            if kind == "template":
                await self._exercise(box)
                # A template should hold a quiet guest: no connection of ours open (each clone would first have
                # to tear it down, and under emulation every first-time code path is slow), every thread idle.
                await box._client.close()
                await anyio.sleep(QUIESCE_S)
            try:
                saved = await anyio.to_thread.run_sync(
                    save_vm, Path(launch["qmp_socket"]), staging / "state", box.box_dir / "disk.qcow2",
                    staging / "disk.qcow2")
            except (QmpError, OSError) as exc:
                raise StorageError(f"cannot snapshot box {box.id}: {exc}",
                                   fix=f"see {box.box_dir}/qemu.log; check free space under {self._rt.home}") \
                    from None
            await self._fix_clock(box)
            (staging / "disk.qcow2").chmod(0o444)
            info = SnapshotInfo(
                name=name, kind=kind, path=str(target), created_at=time.time(), source_box=box.id,
                image=rec.image.get("reference", ""), image_digest=str(rec.image.get("digest", "")),
                cpus=launch["cpus"], memory_mib=launch["memory_mib"], disk_size_bytes=launch["disk_size_bytes"],
                accel=launch["accel"], transport="serial", kernel=launch["kernel"],
                guest_root=launch["guest_root"], qemu_version=qemu_version(launch["qemu_argv"][0]),
                cmdline=launch["cmdline"], tsc_khz=launch.get("tsc_khz"),
                # The guest's clock at the moment it stopped: a restored clone's clock resumes from there.
                guest_uptime_s=None if uptime is None else round(uptime + saved.stopped_at - pinged, 3),
                image_record=rec.image,
                state_bytes=saved.state_bytes, disk_bytes=saved.disk_bytes, paused_ms=saved.paused_ms,
                key=key, tag=tag,
            )
            (staging / "meta.json").write_text(info.model_dump_json(indent=1))
            try:
                os.rename(staging, target)
            except OSError:
                raise AlreadyExistsError(f"{kind} already exists: {name}",
                                         fix="choose another name, or remove it first") from None
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    async def _prepare(box: Box) -> None:
        import grpc

        from boxlite._portal import portal_pb2 as pb

        with contextlib.suppress(grpc.aio.AioRpcError):
            await box._client.guest.PrepareSnapshot(pb.PrepareSnapshotRequest(), timeout=30.0)

    @staticmethod
    async def _exercise(box: Box) -> None:
        """Run one command through the agent before a template is taken, so what the agent sets up lazily for
        its first command (threads, imports, caches) is in the template's memory and clones skip it. Straight
        through the portal: it is not one of the box's commands and is not counted as one."""
        from boxlite._errors import PortalError
        from boxlite._execution import Execution
        from boxlite._portal import portal_pb2 as pb

        with contextlib.suppress(PortalError):
            execution = Execution(box._client, ["true"], lambda status: None)
            await execution._start(pb.ExecRequest(argv=["true"], cwd="/"))
            await execution.collect()

    @staticmethod
    async def _fix_clock(box: Box) -> None:
        """The guest's clock stood still while the VM was paused: set it from the host's again."""
        import grpc

        from boxlite._portal import portal_pb2 as pb

        with contextlib.suppress(grpc.aio.AioRpcError):
            await box._client.guest.Restored(pb.RestoreRequest(unix_time_ns=time.time_ns()), timeout=10.0)

    # -- templates -------------------------------------------------------------------------------------------
    def key_for(self, opts: BoxOptions, image: Image, tag: str) -> str | None:
        """The template key for a box with these options, or None when it may not use a template."""
        rt = self._rt
        if not rt.options.templates or rt._transport() != "serial" or not template_allowed(opts):
            return None
        assets = rt._assets()
        return template_key(
            image_digest=image.digest, kernel=str(assets.kernel), guest_root=str(assets.guest_root),
            qemu=qemu_version(str(assets.qemu)), accel=rt._accel().name, cpus=opts.cpus,
            memory_mib=opts.memory_mib, disk_size_bytes=rt._disk_size(opts, image), transport="serial",
            tsc_khz=rt._tsc_khz(), tag=tag,
        )

    def find_template(self, key: str) -> SnapshotInfo | None:
        info = self._read(self.templates_root / key)
        if info is None:
            return None
        if stale_reason(info, key) is not None:
            self._discard(info.dir)
            return None
        return info

    def discard_templates_of(self, image_digest: str) -> tuple[builtins.list[str], int]:
        """Discard every start template whose disk is based on this image (the image is going away): (their
        names, the bytes freed). Boxes restored from them keep working: each has its own copy of the disk."""
        from boxlite.images._files import allocated_bytes

        names, freed = [], 0
        for info in self.templates():
            if info.image_digest == image_digest:
                freed += allocated_bytes(info.dir)
                self._discard(info.dir)
                names.append(info.name)
        return names, freed

    def discard_template(self, info: SnapshotInfo) -> None:
        if info.kind == "template" and info.dir.parent == self.templates_root:
            self._discard(info.dir)

    def prune_stale_templates(self) -> int:
        """Remove templates that can no longer be restored (their kernel or agent is gone, or another format)."""
        removed = 0
        for info in self.templates():
            if stale_reason(info) is not None:
                self._discard(info.dir)
                removed += 1
        return removed

    async def make_template(self, box: Box, key: str, tag: str) -> SnapshotInfo | None:
        """Snapshot a box that has just become ready (and been warmed up) as the template for `key`.

        Only one process makes a given template; others skip. Failing to make one is not the box's failure.
        """
        self.prune_stale_templates()
        target = self.templates_root / key
        with _try_lock(self.templates_root / f".{key}.lock") as mine:
            if not mine or target.exists():
                return None
            try:
                made = await self._take(box, target, kind="template", name=key, key=key, tag=tag)
            except (StorageError, InvalidStateError, AlreadyExistsError) as exc:
                import logging

                logging.getLogger("boxlite").warning("could not make a start template: %s", exc)
                return None
        # Templates this one replaces (same image name and resources, but an older image, kernel, agent or
        # QEMU) would never be restored again: they only kept an old image's disk in use.
        for old in self.templates():
            if old.key != made.key and _slot(old) == _slot(made):
                self._discard(old.dir)
        return made

    def restore_plan(self, info: SnapshotInfo) -> dict[str, Any]:
        return {"state": str(info.dir / "state"), "uptime_s": info.guest_uptime_s, "snapshot": info.name,
                "kind": info.kind}
