"""The runtime: where boxes are created, found, listed and removed. One per home directory."""

from __future__ import annotations

import atexit
import contextlib
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
from boxlite._errors import AlreadyExistsError, BoxliteError, InvalidStateError, NotFoundError, StorageError
from boxlite._metrics import RuntimeMetrics
from boxlite._options import BoxOptions, Options
from boxlite._state import ACTIVE, CONFIGURED, RUNNING, STOPPING, BoxRecord, StateStore, default_home
from boxlite.engine import Accel, detect_accel
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
        self._images = ImageStore(self.home, registries=self.options.image_registries, in_use=self._boxes_by_image)
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

    @property
    def images(self) -> ImageStore:
        """The image cache: get/pull/load/list/remove/prune. Images boxes use cannot be removed."""
        return self._images

    def _boxes_by_image(self) -> dict[str, list[str]]:
        """{manifest digest: [names (or ids) of the boxes whose disks are based on it]}."""
        used: dict[str, list[str]] = {}
        for rec in self._store.all():
            digest = (rec.image or {}).get("digest")
            if digest:
                used.setdefault(str(digest), []).append(rec.name or rec.id)
        return used

    def _resolve_image(self, opts: BoxOptions) -> Image:
        progress = _progress.report
        if opts.rootfs_path:  # an OCI layout directory or an image archive file
            return self._images.import_layout(Path(opts.rootfs_path), progress=progress)
        return self._images.get(opts.image or DEFAULT_IMAGE, progress=progress)

    # -- boxes -------------------------------------------------------------------------------------------------
    async def create(self, options: BoxOptions | None = None, name: str | None = None) -> Box:
        """Create a box and boot it; returns once its agent is ready."""
        self._check_open()
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
        image = await anyio.to_thread.run_sync(self._resolve_image, opts)
        box = await anyio.to_thread.run_sync(self._configure, opts, image)
        try:
            await box.start()
        except BaseException:
            # A box whose first start failed was never usable: leave nothing behind.
            # (The shim has counted the failure.)
            with anyio.CancelScope(shield=True), contextlib.suppress(BoxliteError):
                await self.remove(box.id, force=True)
            raise
        self._store.update(box.id, create_ms=round((time.monotonic() - started) * 1000, 1))
        self._store.bump("boxes_created")
        if not opts.detach:
            self._owned[box.id] = box
        return box

    def _configure(self, opts: BoxOptions, image: Image) -> Box:
        box_id = secrets.token_hex(6)
        box_dir = self.home / "boxes" / box_id
        config: dict[str, Any] = opts.model_dump(mode="json")
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
            size = max(image.disk_bytes, int((opts.disk_size_gb or 0) * 1024**3))
            subprocess.run(
                [str(self._assets().qemu_img), "create", "-q", "-f", "qcow2", "-b", str(image.disk_path),
                 "-F", "raw", str(box_dir / "disk.qcow2"), str(size)],
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
            num_running_boxes=sum(1 for rec in self._store.all() if rec.status == RUNNING),
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
