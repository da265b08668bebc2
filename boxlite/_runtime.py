"""The runtime: where boxes are created, found, listed and removed. One per home directory."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import anyio

from boxlite import _progress
from boxlite._box import Box, BoxInfo
from boxlite._errors import (
    AlreadyExistsError,
    BoxliteError,
    ConfigError,
    EngineError,
    InvalidStateError,
    NotFoundError,
    StorageError,
    TimeoutError,
)
from boxlite._metrics import RuntimeMetrics, vm_is_up
from boxlite._options import BoxOptions, Options
from boxlite._snapshots import SnapshotInfo, SnapshotStore, Warmup, fit_options, stale_reason
from boxlite._state import (
    ACTIVE,
    CONFIGURED,
    STOPPING,
    BoxRecord,
    StateStore,
    default_home,
)
from boxlite.engine import Accel, detect_accel
from boxlite.engine.snapshot import copy_sparse
from boxlite.images import DEFAULT_IMAGE, Image, ImageStore
from boxlite.provision import Assets, find_assets

# Unix socket paths must fit in 108 bytes; deeper homes put the sockets in a short private directory.
_MAX_SOCKET_DIR = 80


@cache
def _host_tsc_khz() -> int | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


class Boxlite:
    """The runtime. `Boxlite.default()` uses ~/.boxlite (or $BOXLITE_HOME)."""

    _default: ClassVar[Boxlite | None] = None

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.home = self.options.home_dir or default_home()
        self._store = StateStore(self.home / "boxlite.db")
        self._snapshots = SnapshotStore(self)
        self._images = ImageStore(self.home, registries=self.options.image_registries, in_use=self._boxes_by_image,
                                  discard_templates=self._snapshots.discard_templates_of)
        # Boxes created here without detach=True: they end with this runtime (close(), or at interpreter exit).
        self._owned: dict[str, Box] = {}
        self._closed = False
        atexit.register(self._stop_owned_at_exit)

    @classmethod
    def default(cls) -> Boxlite:
        if cls._default is None or cls._default._closed:
            cls._default = cls()
        return cls._default

    # -- what boxes need --------------------------------------------------------------------------------------
    def _assets(self) -> Assets:
        return find_assets(self.home)

    def _accel(self) -> Accel:
        return detect_accel(self.options.accel)

    @staticmethod
    def _tsc_khz() -> int | None:
        return _host_tsc_khz()

    @staticmethod
    def _transport() -> str:
        """How the host reaches the agent: "serial" (a virtio-serial port; VMs can be snapshotted) or "vsock"
        (vhost-user or kernel vsock; cannot be snapshotted with vhost-user). $BOXLITE_TRANSPORT overrides."""
        value = os.environ.get("BOXLITE_TRANSPORT", "serial")
        if value not in ("serial", "vsock"):
            raise ConfigError(f"BOXLITE_TRANSPORT must be serial or vsock, got {value!r}", fix="unset it")
        return value

    @staticmethod
    def _disk_size(opts: BoxOptions, image: Image) -> int:
        return max(image.disk_bytes, int((opts.disk_size_gb or 0) * 1024**3))

    @property
    def snapshots(self) -> SnapshotStore:
        """Snapshots of boxes (`box.snapshot(name)`): list, get, remove; `BoxOptions(snapshot=name)` starts one."""
        return self._snapshots

    @property
    def images(self) -> ImageStore:
        """The image cache: get/pull/load/list/remove/prune. Images boxes use cannot be removed."""
        return self._images

    def _boxes_by_image(self) -> dict[str, list[str]]:
        """{manifest digest: [names (or ids) of the boxes, and the snapshots, whose disks are based on it]}; the
        start templates are not in it: removing an image discards them."""
        used: dict[str, list[str]] = {}
        for rec in self._store.all():
            digest = (rec.image or {}).get("digest")
            if digest:
                used.setdefault(str(digest), []).append(rec.name or rec.id)
        for digest, names in self._snapshots.image_digests().items():
            used.setdefault(digest, []).extend(names)
        return used

    def _resolve_image(self, opts: BoxOptions) -> Image:
        progress = _progress.report
        if opts.rootfs_path:  # an OCI layout directory or an image archive file
            return self._images.import_layout(Path(opts.rootfs_path), progress=progress)
        return self._images.get(opts.image or DEFAULT_IMAGE, progress=progress)

    # -- boxes -------------------------------------------------------------------------------------------------
    async def create(self, options: BoxOptions | None = None, name: str | None = None, *,
                     warmup: Warmup | None = None) -> Box:
        """Create a box and start it; returns once its agent is ready.

        The box is restored from a snapshot when `options.snapshot` names one, else from the runtime's template
        for its image and resources when there is a fresh one (see boxlite/_snapshots.py), else booted cold
        (and, when its options allow, snapshotted as that template). `warmup` runs in a cold-booted box before
        it is returned and before its template is taken; restored boxes have its effect already.
        """
        self._check_open()
        if options is not None and not isinstance(options, BoxOptions):
            raise ConfigError(f"options must be a BoxOptions, got {type(options).__name__}",
                              fix="pass BoxOptions(...), e.g. create(BoxOptions(image='alpine:latest'))")
        opts = options or BoxOptions()
        if name is not None:
            opts = opts.model_copy(update={"name": BoxOptions(name=name).name})
        started = time.monotonic()
        # Fail before any slow work (an image pull, say): setup not run, no engine, or a taken name. The
        # insert in _configure checks the name again, atomically.
        self._assets()
        self._accel()
        if opts.name and self._store.name_taken(opts.name):
            raise AlreadyExistsError(f"box already exists: {opts.name}",
                                     fix="choose another name, or remove the existing box first")
        source: SnapshotInfo | None = None
        key: str | None = None
        if opts.snapshot is not None:
            source = self._snapshot_source(opts)
            image = Image.model_validate(source.image_record)
            # Checked before anything is made: an option the snapshot's machine cannot have is a ConfigError.
            opts = fit_options(source, opts)
        else:
            image = await anyio.to_thread.run_sync(self._resolve_image, opts)
            key = await anyio.to_thread.run_sync(self._snapshots.key_for, opts, image, warmup.tag if warmup else "")
            source = self._snapshots.find_template(key) if key else None
        try:
            box = await self._configure_and_start(opts, image, source, warmup)
        except (EngineError, TimeoutError, StorageError) as exc:
            if source is None or source.kind != "template":
                raise
            # A template that does not restore (its machine no longer matches this QEMU, say) is discarded;
            # the box boots cold instead and leaves a new template.
            logging.getLogger("boxlite").warning("discarding start template %s: %s", source.name, exc)
            self._snapshots.discard_template(source)
            source = None
            box = await self._configure_and_start(opts, image, None, warmup)
        if source is None and key is not None:
            # The first box of its kind leaves a template behind for the next ones (a pause of a few hundred ms).
            await self._snapshots.make_template(box, key, warmup.tag if warmup else "")
        self._store.update(box.id, create_ms=round((time.monotonic() - started) * 1000, 1))
        self._store.bump("boxes_created")
        if not opts.detach:
            self._owned[box.id] = box
        return box

    async def _configure_and_start(self, opts: BoxOptions, image: Image, source: SnapshotInfo | None,
                                   warmup: Warmup | None) -> Box:
        box = await anyio.to_thread.run_sync(self._configure, opts, image, source)
        try:
            await box.start()
            if source is None and warmup is not None:
                await warmup.run(box)
        except BaseException:
            # A box whose first start failed was never usable: leave nothing behind.
            # (The shim has counted the failure.)
            with anyio.CancelScope(shield=True), contextlib.suppress(BoxliteError):
                await self.remove(box.id, force=True)
            raise
        return box

    def _snapshot_source(self, opts: BoxOptions) -> SnapshotInfo:
        assert opts.snapshot is not None
        source = self._snapshots.get(opts.snapshot)
        why = stale_reason(source)
        if why is None and not Path(source.image_record.get("disk_path", "")).exists():
            why = f"its image's disk {source.image_record.get('disk_path')} is gone"
        if why is None and source.accel != self._accel().name:
            why = f"it was taken under {source.accel}, this runtime uses {self._accel().name}"
        if why is not None:
            raise InvalidStateError(f"snapshot {source.name} cannot be restored: {why}",
                                    fix="take a new snapshot from a box started now, and remove this one")
        return source

    def _configure(self, opts: BoxOptions, image: Image, source: SnapshotInfo | None = None) -> Box:
        box_id = secrets.token_hex(6)
        box_dir = self.home / "boxes" / box_id
        config: dict[str, Any] = opts.model_dump(mode="json")
        if source is not None:
            config["restore"] = {**self._snapshots.restore_plan(source), "cmdline": source.cmdline,
                                 "tsc_khz": source.tsc_khz}
        if len(str(box_dir)) > _MAX_SOCKET_DIR:
            config["socket_dir"] = str(Path(tempfile.gettempdir()) / f"boxlite-{os.getuid()}" / box_id)
        record = BoxRecord(
            id=box_id, name=opts.name, status=CONFIGURED, config=config,
            image=image.model_dump(mode="json"), box_dir=str(box_dir), created_at=time.time(),
        )
        self._store.insert(record)  # raises AlreadyExistsError for a taken name, before anything is made
        try:
            box_dir.mkdir(parents=True, mode=0o700)  # its sockets reach the VM: for this user only
            box_dir.chmod(0o700)
            if source is not None:
                # Its own copy of the frozen overlay (backed by the image's disk), byte-identical to the disk the
                # snapshot's memory saw.
                copy_sparse(source.dir / "disk.qcow2", box_dir / "disk.qcow2")
                (box_dir / "disk.qcow2").chmod(0o644)
            else:
                subprocess.run(
                    [str(self._assets().qemu_img), "create", "-q", "-f", "qcow2", "-b", str(image.disk_path),
                     "-F", "raw", str(box_dir / "disk.qcow2"), str(self._disk_size(opts, image))],
                    check=True, capture_output=True, text=True,
                )
        except (OSError, subprocess.CalledProcessError) as exc:
            self._store.delete(box_id)
            shutil.rmtree(box_dir, ignore_errors=True)
            detail = getattr(exc, "stderr", "") or str(exc)
            raise StorageError(f"cannot create the disk of box {box_id}: {detail.strip()}",
                               fix=f"check free space and permissions under {self.home}") from None
        return Box(self, record)

    async def get(self, id_or_name: str) -> Box | None:
        """The box with this id (or unique id prefix) or name, or None when there is none."""
        rec = self._store.find(id_or_name)
        if rec is None:
            return None
        return self._owned.get(rec.id) or Box(self, rec)

    async def get_or_raise(self, id_or_name: str) -> Box:
        box = await self.get(id_or_name)
        if box is None:
            raise NotFoundError(f"box not found: {id_or_name}", fix="`boxlite ls -a` lists the boxes that exist")
        return box

    async def list_info(self) -> list[BoxInfo]:
        return [Box(self, rec).info() for rec in self._store.all()]

    async def list(self) -> list[BoxInfo]:
        return await self.list_info()

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        """Remove a box and its disk. A running box needs force=True (it is stopped first)."""
        box = await self.get_or_raise(id_or_name)
        rec = box._refresh()
        if rec.status in ACTIVE:
            if not force:
                raise InvalidStateError(f"cannot remove {rec.status} box {rec.id}",
                                        fix="stop it first, or remove with force=True (`boxlite rm -f`)")
            await box.stop(timeout=3.0)
        self._store.delete(rec.id)
        self._store.delete_counters(f"box:{rec.id}:")
        shutil.rmtree(rec.box_dir, ignore_errors=True)
        if rec.config.get("socket_dir"):
            shutil.rmtree(rec.config["socket_dir"], ignore_errors=True)
        self._owned.pop(rec.id, None)

    async def metrics(self) -> RuntimeMetrics:
        counters = self._store.counters()
        return RuntimeMetrics(
            boxes_created_total=counters.get("boxes_created", 0),
            boxes_failed_total=counters.get("boxes_failed", 0),
            num_running_boxes=sum(1 for rec in self._store.all() if vm_is_up(rec)),
            total_commands_executed=counters.get("commands", 0),
            total_exec_errors=counters.get("exec_errors", 0),
        )

    # -- closing -----------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError("this runtime is closed", fix="create a new Boxlite()")

    async def close(self) -> None:
        """Stop the boxes this runtime created without detach=True (auto_remove ones are then removed)."""
        if self._closed:
            return
        owned, self._owned = list(self._owned.values()), {}
        for box in owned:
            with contextlib.suppress(BoxliteError):
                await box.stop()
                if box._record.config.get("auto_remove"):
                    await self.remove(box.id, force=True)
        self._closed = True

    shutdown = close

    def _stop_owned_at_exit(self) -> None:
        """The interpreter is exiting without close(): ask each owned box's shim to end its VM. Synchronous
        and quick; the shims finish the job (and remove auto_remove boxes) on their own."""
        for box_id in list(self._owned):
            rec = self._store.find(box_id)
            if rec is None or rec.status not in ACTIVE or not rec.shim_pid:
                continue
            self._store.update(box_id, status=STOPPING)
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.shim_pid, signal.SIGTERM)
        self._owned.clear()

    async def __aenter__(self) -> Boxlite:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
