"""ImageStore: resolve image references to ready ext4 disks, cached by manifest digest.

Layout under HOME/images:
    disks/<hex>.ext4        merged root filesystem of the manifest sha256:<hex> (read-only base disk)
    manifests/<hex>.json    the Image record for it; written last, so its presence means "ready"
    refs/<key>.json         {"reference": ..., "digest": ...}, key = urlsafe base64 of the reference
    locks/<hex>.lock        flock held while building that digest (so concurrent builders build once)
    layouts/default/        the OCI layout the default image is imported from
    tmp/                    scratch space (names start with the owning pid)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from boxlite._errors import ImageError, StorageError
from boxlite.images._files import (
    clean_stale_scratch,
    file_lock,
    human_size,
    remove_path,
    scratch_name,
    short_digest,
    write_json_atomic,
)
from boxlite.images.default import build_default_layout
from boxlite.images.disk import build_ext4, disk_size_for, measure_tree
from boxlite.images.model import DEFAULT_IMAGE, Image
from boxlite.images.oci import Descriptor, Manifest, OciLayout, check_digest, host_architecture
from boxlite.images.unpack import unpack_layer

Progress = Callable[[str], None]
LAYOUT_SCHEME = "oci-layout:"


def _quiet(_line: str) -> None:
    pass


class ImageStore:
    """Images available to boxes, kept under home / "images"."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "images"
        self.disks_dir = self.root / "disks"
        self.manifests_dir = self.root / "manifests"
        self.refs_dir = self.root / "refs"
        self.locks_dir = self.root / "locks"
        self.tmp_dir = self.root / "tmp"
        self.layouts_dir = self.root / "layouts"

    # -- public API ------------------------------------------------------------------------------

    def get(self, reference: str, progress: Progress | None = None) -> Image:
        """Resolve reference to a ready Image, building the default image on first use."""
        progress = progress or _quiet
        reference = reference.strip()
        if not reference:
            raise ImageError("empty image reference", fix=f"name an image, e.g. {DEFAULT_IMAGE!r}")
        cached = self._lookup(reference)
        if cached is not None:
            return cached
        if reference == DEFAULT_IMAGE:
            return self._get_default(progress)
        if reference.startswith(LAYOUT_SCHEME):
            return self._get_layout_reference(reference, progress)
        raise ImageError(
            f"image {reference!r} is not available locally, and pulling from registries is not supported yet",
            fix="pass rootfs_path=<an OCI image layout directory> (e.g. made with `skopeo copy docker://IMAGE "
            f"oci:DIR`), or use the default image {DEFAULT_IMAGE!r}",
        )

    def import_layout(self, path: Path, progress: Progress | None = None) -> Image:
        """Import an OCI image layout directory (cached by manifest digest) and return its Image."""
        progress = progress or _quiet
        layout = OciLayout(Path(path))
        desc, manifest = layout.resolve_manifest()
        reference = f"{LAYOUT_SCHEME}{layout.path}@{desc.digest}"
        image = self._ensure_built(layout, desc, manifest, reference, progress)
        self._write_ref(reference, image.digest)
        return image

    def list(self) -> list[Image]:
        """Every ready image, once per digest, named by a tag when it has one."""
        refs: dict[str, list[str]] = {}
        for ref_file in _json_files(self.refs_dir):
            try:
                entry = json.loads(ref_file.read_text())
                refs.setdefault(str(entry["digest"]), []).append(str(entry["reference"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        images: list[Image] = []
        for manifest_file in _json_files(self.manifests_dir):
            digest = f"sha256:{manifest_file.stem}"
            names = sorted(refs.get(digest, []), key=lambda r: (r.startswith(LAYOUT_SCHEME), r))
            image = self._load(digest, names[0] if names else None)
            if image is not None:
                images.append(image)
        return sorted(images, key=lambda i: i.reference)

    # -- resolving -------------------------------------------------------------------------------

    def _lookup(self, reference: str) -> Image | None:
        if reference.startswith("sha256:"):
            return self._load(check_digest(reference), None)
        try:
            entry = json.loads(self._ref_path(reference).read_text())
            digest = check_digest(str(entry["digest"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, ImageError):
            return None  # a damaged ref is treated as absent; it is rewritten on the next import
        return self._load(digest, reference)

    def _load(self, digest: str, reference: str | None) -> Image | None:
        """The ready Image for digest, or None if its metadata or disk is missing."""
        hex_digest = digest.split(":", 1)[1]
        try:
            image = Image.model_validate_json(self._manifest_path(hex_digest).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError):
            return None
        disk_path = self._disk_path(hex_digest)
        try:
            if disk_path.stat().st_size != image.disk_bytes:
                return None
        except OSError:
            return None
        update: dict[str, object] = {"disk_path": disk_path}
        if reference is not None:
            update["reference"] = reference
        return image.model_copy(update=update)

    def _get_layout_reference(self, reference: str, progress: Progress) -> Image:
        location = reference[len(LAYOUT_SCHEME) :]
        path, sep, digest = location.rpartition("@")
        if not sep or not digest.startswith(("sha256:", "sha512:")):
            path, digest = location, ""
        image = self.import_layout(Path(path), progress)
        if digest and image.digest != digest:
            raise ImageError(
                f"the OCI layout at {path} now holds manifest {image.digest}, not {digest}",
                fix=f"use {LAYOUT_SCHEME}{path} to take whatever the layout holds now",
            )
        return image

    def _get_default(self, progress: Progress) -> Image:
        with file_lock(self.locks_dir / "default-image.lock"):
            cached = self._lookup(DEFAULT_IMAGE)  # another process may have built it meanwhile
            if cached is not None:
                return cached
            layout_dir = self.layouts_dir / "default"
            reused = (layout_dir / "index.json").is_file()
            if not reused:
                build_default_layout(layout_dir, self.tmp_dir, progress)
            try:
                image = self.import_layout(layout_dir, progress)
            except ImageError:
                if not reused:
                    raise
                progress("the saved default image layout is unusable; building it again")
                build_default_layout(layout_dir, self.tmp_dir, progress)
                image = self.import_layout(layout_dir, progress)
            self._write_ref(DEFAULT_IMAGE, image.digest)
            return image.model_copy(update={"reference": DEFAULT_IMAGE})

    # -- building --------------------------------------------------------------------------------

    def _ensure_built(
        self, layout: OciLayout, desc: Descriptor, manifest: Manifest, reference: str, progress: Progress
    ) -> Image:
        hex_digest = desc.digest.split(":", 1)[1]
        if not desc.digest.startswith("sha256:"):
            raise ImageError(f"manifest digest {desc.digest} is not sha256", fix="export the image with sha256")
        with file_lock(self.locks_dir / f"{hex_digest}.lock"):
            cached = self._load(desc.digest, reference)
            if cached is not None:
                return cached
            return self._build(layout, desc, manifest, reference, progress)

    def _build(
        self, layout: OciLayout, desc: Descriptor, manifest: Manifest, reference: str, progress: Progress
    ) -> Image:
        config = layout.config(manifest)
        arch = host_architecture()
        if config.os and config.os != "linux":
            raise ImageError(f"image {reference} is for {config.os}, not linux", fix="use a linux image")
        if config.architecture and config.architecture != arch:
            raise ImageError(
                f"image {reference} is for {config.architecture}, but this host runs {arch}",
                fix=f"export the linux/{arch} variant of the image",
            )
        diff_ids = config.rootfs.diff_ids
        if len(diff_ids) != len(manifest.layers):
            raise ImageError(
                f"image {reference} lists {len(manifest.layers)} layers but its config has {len(diff_ids)} diff_ids",
                fix="the image is corrupt; export it again",
            )
        hex_digest = desc.digest.split(":", 1)[1]
        disk_path = self._disk_path(hex_digest)
        for directory in (self.tmp_dir, self.disks_dir, self.manifests_dir):
            directory.mkdir(parents=True, exist_ok=True)
        clean_stale_scratch(self.tmp_dir)
        rootfs = scratch_name(self.tmp_dir, f"rootfs-{hex_digest[:12]}")
        disk_tmp = scratch_name(self.tmp_dir, f"disk-{hex_digest[:12]}.ext4")
        published = False
        try:
            rootfs.mkdir()
            os.chmod(rootfs, 0o755)
            total = len(manifest.layers)
            for number, (layer, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True), 1):
                check_digest(diff_id)
                progress(f"unpacking layer {number}/{total} {short_digest(layer.digest)} {human_size(layer.size)}")
                what = f"layer {number}/{total} ({layer.digest})"
                f, reader = layout.open_blob(layer, what)
                with f:
                    unpack_layer(reader, diff_id, str(rootfs), what)
            tree = measure_tree(rootfs)
            disk_bytes = disk_size_for(tree.content_bytes)
            progress(f"building disk {human_size(disk_bytes)} ({human_size(tree.content_bytes)} of files)")
            build_ext4(rootfs, disk_tmp, disk_bytes, tree.inodes)
            remove_path(rootfs)
            run = config.config
            image = Image(
                reference=reference,
                digest=desc.digest,
                disk_path=disk_path,
                disk_bytes=disk_tmp.stat().st_size,
                env=list(run.env or []) if run else [],
                working_dir=(run.working_dir if run and run.working_dir else "/"),
                user=(run.user or "") if run else "",
                entrypoint=list(run.entrypoint or []) if run else [],
                cmd=list(run.cmd or []) if run else [],
            )
            os.replace(disk_tmp, disk_path)
            published = True
            write_json_atomic(self._manifest_path(hex_digest), image.model_dump(mode="json"))
            return image
        except BaseException as e:
            if published:
                disk_path.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise StorageError(f"could not build the disk for {reference}: {e}", fix="check free space") from e
            raise
        finally:
            remove_path(rootfs)
            remove_path(disk_tmp)

    # -- files -----------------------------------------------------------------------------------

    def _write_ref(self, reference: str, digest: str) -> None:
        write_json_atomic(self._ref_path(reference), {"reference": reference, "digest": digest})

    def _ref_path(self, reference: str) -> Path:
        key = base64.urlsafe_b64encode(reference.encode()).decode().rstrip("=")
        if len(key) > 200:  # keep file names well under the 255-byte limit
            key = "h-" + hashlib.sha256(reference.encode()).hexdigest()
        return self.refs_dir / f"{key}.json"

    def _manifest_path(self, hex_digest: str) -> Path:
        return self.manifests_dir / f"{hex_digest}.json"

    def _disk_path(self, hex_digest: str) -> Path:
        return self.disks_dir / f"{hex_digest}.ext4"


def _json_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return []
