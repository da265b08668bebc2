"""ImageStore: resolve image references to ready ext4 disks, cached by manifest digest.

Layout under HOME/images:
    disks/<hex>.ext4        merged root filesystem of the manifest sha256:<hex> (read-only base disk)
    manifests/<hex>.json    the Image record for it; written last, so its presence means "ready"
    refs/<key>.json         {"reference": ..., "digest": ...}, key = urlsafe base64 of the reference
    blobs/sha256/<hex>      content-addressed blobs of pulled and loaded images (shared between images)
    locks/<hex>.lock        flock held while building that digest (so concurrent builders build once)
    locks/blob-*.lock       flock held while fetching one blob (so concurrent pulls download it once)
    locks/store.lock        shared by builders and pulls, exclusive for remove/prune (which delete files)
    locks/builtin-<key>.lock  held while making that built-in image (so concurrent processes build it once)
    layouts/<key>/          the OCI layouts built-in images are imported from (layouts/default: the default image);
                            prune deletes those of built-ins that are no longer ready
    tmp/                    scratch space (names start with the owning pid)

References: registry references are kept in their canonical form (`python:slim` is stored as
`docker.io/library/python:slim`); `get` uses a cached image when there is one and pulls otherwise, `pull`
always asks the registry which manifest the tag names now (and downloads only what is missing).
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from boxlite._errors import ConfigError, ImageError, InvalidStateError, NotFoundError, StorageError
from boxlite.images._files import (
    MIB,
    allocated_bytes,
    clean_stale_scratch,
    disk_full_error,
    file_lock,
    human_size,
    is_disk_full,
    remove_path,
    require_free,
    scratch_name,
    short_digest,
    write_json_atomic,
)
from boxlite.images.blobs import BlobStore
from boxlite.images.builtin import (
    BUILTIN_IMAGES,
    BuiltinImage,
    build_layout,
    building_lock,
    layout_is_current,
    prune_layouts,
)
from boxlite.images.config import RegistryEntry, RegistrySettings, load_settings
from boxlite.images.disk import build_ext4, disk_size_for, measure_tree
from boxlite.images.model import DEFAULT_IMAGE, Image, LayerProgress, RemovedImage
from boxlite.images.oci import (
    BlobReader,
    Descriptor,
    ImageConfig,
    Manifest,
    OciLayout,
    check_digest,
    host_architecture,
    parse_json,
    to_model,
)
from boxlite.images.reference import Reference, check_image_option, parse_reference
from boxlite.images.unpack import unpack_layer_file

if TYPE_CHECKING:
    from boxlite.images.registry import RegistryClient, Resolved

Progress = Callable[[str], None]
LayerCallback = Callable[[LayerProgress], None]
InUse = Callable[[], Mapping[str, Sequence[str]]]
# Discards the start templates based on an image (its disk backs theirs); returns their names and the bytes freed.
DiscardTemplates = Callable[[str], tuple[Sequence[str], int]]
LAYOUT_SCHEME = "oci-layout:"
ARCHIVE_SCHEME = "archive:"
LOCAL_SCHEMES = (LAYOUT_SCHEME, ARCHIVE_SCHEME)
PULL_THREADS = 4
_HEX_PREFIX = re.compile(r"^(sha256:)?[a-f0-9]{4,64}$")


class ImageStore:
    """Images available to boxes, kept under home / "images".

    registries: entries as in Options.image_registries (merged with the environment and registries.json).
    in_use: returns {manifest digest: [box names]} for images boxes (or snapshots) are using; those cannot be
        removed.
    discard_templates: discards the runtime's start templates based on an image. Templates are a cache (boxes
        boot cold without one), so they never keep an image: removing it, or pruning it, discards them.
    """

    def __init__(
        self,
        home: Path,
        *,
        registries: Sequence[RegistryEntry | Mapping[str, Any]] | None = None,
        in_use: InUse | None = None,
        discard_templates: DiscardTemplates | None = None,
    ) -> None:
        self.home = Path(home)
        self.root = self.home / "images"
        self.disks_dir = self.root / "disks"
        self.manifests_dir = self.root / "manifests"
        self.refs_dir = self.root / "refs"
        self.locks_dir = self.root / "locks"
        self.tmp_dir = self.root / "tmp"
        self.layouts_dir = self.root / "layouts"
        self.blobs_dir = self.root / "blobs"
        self.blobs = BlobStore(self.blobs_dir, self.locks_dir, self.tmp_dir)
        self.in_use = in_use
        self.discard_templates = discard_templates
        self._registry_entries = list(registries or [])
        self._settings: RegistrySettings | None = None
        self._client: RegistryClient | None = None
        self._client_lock = threading.Lock()

    # -- public API ------------------------------------------------------------------------------

    def get(self, reference: str, progress: Progress | None = None, *, on_layer: LayerCallback | None = None) -> Image:
        """Resolve reference to a ready Image: a cached one, a built-in one (built from Debian packages on first
        use), or pulled from its registry."""
        progress = progress or _quiet
        reference = reference.strip()
        if not reference:
            raise ImageError("empty image reference", fix=f"name an image, e.g. {DEFAULT_IMAGE!r}")
        builtin = BUILTIN_IMAGES.get(reference)
        if builtin is not None:
            return self._get_builtin(builtin, progress)
        cached = self._lookup(reference)
        if cached is not None:
            return cached
        if reference.startswith(LOCAL_SCHEMES):
            return self._get_local_reference(reference, progress)
        if reference.startswith("sha256:"):
            raise NotFoundError(f"image not found: {reference}", fix="`boxlite images ls` lists the local images")
        ref = parse_reference(reference)
        for candidate in self._candidates(ref):
            cached = self._lookup_ref(candidate)
            if cached is not None:
                return cached
        return self.pull(reference, progress, on_layer=on_layer)

    def pull(self, reference: str, progress: Progress | None = None, *, on_layer: LayerCallback | None = None) -> Image:
        """Ask the registry what reference names now and make that image ready (downloading what is missing).

        progress gets text lines; on_layer (called from download threads) gets each layer's LayerProgress.
        Short names are looked up on the configured search registries in order (Docker Hub by default).
        """
        progress = progress or _quiet
        reference = reference.strip()
        if reference in BUILTIN_IMAGES or reference.startswith(LOCAL_SCHEMES):
            return self.get(reference, progress)
        ref = parse_reference(reference)
        candidates = self._candidates(ref)
        failures: list[tuple[Reference, ImageError]] = []
        for candidate in candidates:
            try:
                return self._pull_one(candidate, progress, on_layer)
            except ImageError as e:
                if len(candidates) == 1:
                    raise
                failures.append((candidate, e))
        raise ImageError(
            f"failed to pull image {reference} from any of the search registries: "
            + "; ".join(f"{c.registry}: {e.detail}" for c, e in failures),
            fix=failures[-1][1].fix,
        )

    def import_layout(self, path: Path, progress: Progress | None = None) -> Image:
        """Import an OCI image layout directory, or an image archive file (cached by manifest digest)."""
        progress = progress or _quiet
        path = _local_path(path)
        if path.is_file():
            return self.load(path, progress)[0]
        layout = OciLayout(path)
        desc, manifest = layout.resolve_manifest()
        reference = f"{LAYOUT_SCHEME}{layout.path}@{desc.digest}"
        with self._store_lock(shared=True):
            image = self._ensure_built(layout, desc, manifest, reference, progress)
            self._write_ref(reference, image.digest)
        return image

    def load(self, path: Path, progress: Progress | None = None) -> list[Image]:
        """Load images from an OCI layout directory, a `docker save` tarball or an OCI archive (gzip or not).

        Archive images are named by their tags (RepoTags, or the index's image-name annotations) so that
        `get("alpine:3.19")` finds a loaded alpine:3.19 without pulling; unnamed ones as archive:PATH@DIGEST.
        """
        from boxlite.images.archive import load_archive

        progress = progress or _quiet
        path = _local_path(path).resolve()
        if path.is_dir():
            return [self.import_layout(path, progress)]
        images: list[Image] = []
        with self._store_lock(shared=True):
            progress(f"reading image archive {path}")
            for found in load_archive(path, self.blobs, progress):
                fallback = f"{ARCHIVE_SCHEME}{path}@{found.desc.digest}"
                reference = found.names[0] if found.names else fallback
                image = self._ensure_built(self.blobs, found.desc, found.manifest, reference, progress)
                for name in found.names or [fallback]:
                    self._write_ref(name, image.digest)
                images.append(image.model_copy(update={"reference": reference}))
        return images

    def remove(self, reference: str) -> RemovedImage:
        """Drop a name; when it was the image's last name (or a digest is given), delete the image.

        Deleting an image a box (or a snapshot) uses raises InvalidStateError naming them; the start templates
        based on it are discarded with it. Returns what was done, including the bytes freed (the disk, the
        templates and the blobs no other image needs).
        """
        with self._store_lock(shared=False):
            digest, name = self._find_for_removal(reference.strip())
            names = self._refs_by_digest().get(digest, [])
            if name is not None and len(names) > 1:
                self._ref_path(name).unlink(missing_ok=True)
                return RemovedImage(untagged=[name], deleted=None, bytes_freed=0)
            users = list(self._users().get(digest, []))
            if users:
                raise _in_use_error(name or digest, digest, users)
            templates, freed = self._discard_templates(digest)
            for ref in names:
                self._ref_path(ref).unlink(missing_ok=True)
            freed += self._delete_image(digest)
            freed += self._collect_blobs()
            return RemovedImage(untagged=sorted(names), deleted=digest, bytes_freed=freed,
                                templates_discarded=sorted(templates))

    def prune(self, all: bool = False) -> int:
        """Delete unnamed images (every image no box uses, with all=True), orphaned disks, blobs no image
        needs and scratch files of dead processes. Images boxes use are kept; the start templates of those
        deleted go with them. Returns the bytes freed."""
        with self._store_lock(shared=False):
            users = self._users()
            refs = self._refs_by_digest()
            freed = 0
            for digest in self._image_digests():
                if digest in users:
                    continue
                if all or not refs.get(digest):
                    freed += self._discard_templates(digest)[1]
                    for ref in refs.get(digest, []):
                        self._ref_path(ref).unlink(missing_ok=True)
                    freed += self._delete_image(digest)
            ready = set(self._image_digests())
            for disk in _files_with_suffix(self.disks_dir, ".ext4"):
                digest = f"sha256:{disk.stem}"
                if digest not in ready and digest not in users:
                    freed += self._discard_templates(digest)[1]
                    freed += allocated_bytes(disk)
                    remove_path(disk)
            for digest, ref_names in refs.items():
                if digest not in ready:
                    for ref in ref_names:
                        self._ref_path(ref).unlink(missing_ok=True)
            freed += self._collect_blobs()
            freed += _clean_scratch(self.tmp_dir)
            built = {spec.key for spec in BUILTIN_IMAGES.values() if self._lookup(spec.name) is not None}
            freed += prune_layouts(self.layouts_dir, self.locks_dir, keep=built)  # those of deleted built-ins
            return freed

    def registry_settings(self) -> RegistrySettings:
        """The merged registry settings (options, environment, HOME/registries.json, Docker's config)."""
        if self._settings is None:
            self._settings = load_settings(self._registry_entries, self.home)
        return self._settings

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- resolving -------------------------------------------------------------------------------

    def _lookup(self, reference: str) -> Image | None:
        if reference.startswith("sha256:"):
            try:
                return self._load(check_digest(reference), None)
            except ImageError:
                return None
        try:
            entry = json.loads(self._ref_path(reference).read_text())
            digest = check_digest(str(entry["digest"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, ImageError):
            return None  # a damaged ref is treated as absent; it is rewritten on the next import
        return self._load(digest, reference)

    def _lookup_ref(self, ref: Reference) -> Image | None:
        cached = self._lookup(ref.canonical)
        if cached is None and ref.digest:
            cached = self._load(ref.digest, ref.canonical)  # pinned to a manifest we already have
        return cached

    def _candidates(self, ref: Reference) -> list[Reference]:
        if ref.explicit_registry:
            return [ref]
        return [ref.on_registry(registry) for registry in self.registry_settings().search]

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

    def _get_local_reference(self, reference: str, progress: Progress) -> Image:
        check_image_option(reference)
        scheme = LAYOUT_SCHEME if reference.startswith(LAYOUT_SCHEME) else ARCHIVE_SCHEME
        location = reference[len(scheme) :]
        path, sep, digest = location.rpartition("@")
        if not sep or not digest.startswith(("sha256:", "sha512:")):
            path, digest = location, ""
        if scheme == LAYOUT_SCHEME:
            image = self.import_layout(Path(path), progress)
        else:
            images = self.load(Path(path), progress)
            image = next((i for i in images if i.digest == digest), images[0])
        if digest and image.digest != digest:
            raise ImageError(
                f"{path} now holds manifest {image.digest}, not {digest}",
                fix=f"use {scheme}{path} to take whatever it holds now",
            )
        return image

    def _get_builtin(self, spec: BuiltinImage, progress: Progress) -> Image:
        """Make a built-in image ready: import its saved layout, building that first when missing or outdated."""
        layout_dir = self.layouts_dir / spec.key
        cached = self._lookup(spec.name)
        # A changed recipe (another package list, say) makes the saved image outdated: it is built again.
        if cached is not None and (not layout_dir.exists() or layout_is_current(spec, layout_dir)):
            return cached
        with building_lock(self.locks_dir, spec, progress):
            cached = self._lookup(spec.name)  # another process may have built it meanwhile
            if cached is not None and (not layout_dir.exists() or layout_is_current(spec, layout_dir)):
                return cached
            reused = layout_is_current(spec, layout_dir)
            if not reused:
                build_layout(spec, layout_dir, self.tmp_dir, progress, self.root / "wheels")
            try:
                return self._import_builtin(spec, layout_dir, progress)
            except ImageError:
                if not reused:
                    raise
                progress(f"the saved layout of {spec.name} is unusable; building it again")
                build_layout(spec, layout_dir, self.tmp_dir, progress, self.root / "wheels")
                return self._import_builtin(spec, layout_dir, progress)

    def _import_builtin(self, spec: BuiltinImage, layout_dir: Path, progress: Progress) -> Image:
        layout = OciLayout(layout_dir)
        desc, manifest = layout.resolve_manifest()
        with self._store_lock(shared=True):
            image = self._ensure_built(layout, desc, manifest, spec.name, progress)
            self._write_ref(spec.name, image.digest)  # its only name: no oci-layout: one for the layouts/ path
        return image.model_copy(update={"reference": spec.name})

    # -- pulling ---------------------------------------------------------------------------------

    def _registry_client(self) -> RegistryClient:
        from boxlite.images.registry import RegistryClient

        with self._client_lock:
            if self._client is None:
                self._client = RegistryClient(self.registry_settings())
            return self._client

    def _pull_one(self, ref: Reference, progress: Progress, on_layer: LayerCallback | None) -> Image:
        client = self._registry_client()
        progress(f"pulling {ref.canonical}")
        resolved = client.resolve(ref)
        if not resolved.digest.startswith("sha256:"):
            raise ImageError(f"manifest digest {resolved.digest} is not sha256", fix="pull a sha256-addressed image")
        hex_digest = resolved.digest.split(":", 1)[1]
        with self._store_lock(shared=True), file_lock(self.locks_dir / f"{hex_digest}.lock"):
            image = self._load(resolved.digest, ref.canonical)
            if image is None:
                image = self._download_and_build(client, resolved, progress, on_layer)
            else:
                progress(f"{ref.canonical} is up to date ({short_digest(resolved.digest)})")
            self._write_ref(ref.canonical, resolved.digest)
        return image.model_copy(update={"reference": ref.canonical})

    def _download_and_build(
        self, client: RegistryClient, resolved: Resolved, progress: Progress, on_layer: LayerCallback | None
    ) -> Image:
        ref, manifest = resolved.reference, resolved.manifest
        config_desc = manifest.config
        self.blobs.ensure(config_desc, lambda w: client.fetch_blob(resolved, config_desc, w), "image config")
        config = self.blobs.config(manifest)
        _check_config(config, manifest, ref.canonical)
        missing = [layer for layer in manifest.layers if not self.blobs.has(layer)]
        total = sum(layer.size for layer in manifest.layers)
        progress(
            f"{ref.canonical}: manifest {short_digest(resolved.digest)}, {len(manifest.layers)} layers, "
            f"{human_size(total)} ({len(missing)} to download)"
        )
        require_free(self.blobs_dir, sum(layer.size for layer in missing) + 64 * MIB, f"pulling {ref.canonical}")
        self._download_layers(client, resolved, progress, on_layer)
        desc = Descriptor.model_validate(
            {"mediaType": resolved.media_type, "digest": resolved.digest, "size": len(resolved.manifest_bytes)}
        )
        self.blobs.put_bytes(desc, resolved.manifest_bytes, "manifest")
        return self._build(self.blobs, desc, manifest, ref.canonical, progress)

    def _download_layers(
        self, client: RegistryClient, resolved: Resolved, progress: Progress, on_layer: LayerCallback | None
    ) -> None:
        from boxlite.images.registry import Abort, DownloadCancelledError

        layers = resolved.manifest.layers
        count = len(layers)
        report = on_layer or _layer_lines(progress)
        abort = Abort()
        errors: list[BaseException] = []
        errors_lock = threading.Lock()

        def download(number: int, layer: Descriptor) -> None:
            def event(status: str, done: int) -> None:
                report(LayerProgress(number, count, layer.digest, layer.size, done, status))

            if self.blobs.has(layer):
                event("cached", layer.size)
                return
            event("waiting", 0)
            last = [0.0]

            def on_bytes(done: int) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.1 or done == layer.size:
                    last[0] = now
                    event("downloading", done)

            try:
                fetched = self.blobs.ensure(
                    layer,
                    lambda w: client.fetch_blob(resolved, layer, w, on_bytes, abort),
                    f"layer {number}/{count}",
                    source=f"registry {resolved.endpoint.netloc}",
                )
            except BaseException as e:
                abort.set()
                with errors_lock:
                    errors.append(e)
                event("failed", 0)
                raise
            event("done" if fetched else "cached", layer.size)

        with ThreadPoolExecutor(max_workers=max(1, min(PULL_THREADS, count)), thread_name_prefix="pull") as pool:
            futures = [pool.submit(download, number, layer) for number, layer in enumerate(layers, 1)]
            try:
                for future in futures:
                    with contextlib.suppress(Exception):  # download() has recorded it in `errors`
                        future.result()
            except BaseException:
                # KeyboardInterrupt (or the like): stop every download now; leaving the pool waits for them to
                # remove their partial files, then the interrupt goes on.
                abort.set()
                for future in futures:
                    future.cancel()
                raise
        if errors:
            primary = next((e for e in errors if not isinstance(e, DownloadCancelledError)), errors[0])
            raise primary

    # -- building --------------------------------------------------------------------------------

    def _ensure_built(
        self, source: BlobReader, desc: Descriptor, manifest: Manifest, reference: str, progress: Progress
    ) -> Image:
        hex_digest = desc.digest.split(":", 1)[1]
        if not desc.digest.startswith("sha256:"):
            raise ImageError(f"manifest digest {desc.digest} is not sha256", fix="export the image with sha256")
        with file_lock(self.locks_dir / f"{hex_digest}.lock"):
            cached = self._load(desc.digest, reference)
            if cached is not None:
                return cached
            return self._build(source, desc, manifest, reference, progress)

    def _build(
        self, source: BlobReader, desc: Descriptor, manifest: Manifest, reference: str, progress: Progress
    ) -> Image:
        config = source.config(manifest)
        _check_config(config, manifest, reference)
        diff_ids = config.rootfs.diff_ids
        hex_digest = desc.digest.split(":", 1)[1]
        disk_path = self._disk_path(hex_digest)
        for directory in (self.tmp_dir, self.disks_dir, self.manifests_dir):
            directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.tmp_dir, 0o700)  # unpacked trees (device nodes, set-id files) are not for other users
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
                blob_path = source.blob_path(layer.digest)
                if not blob_path.is_file():
                    source.open_blob(layer, what)  # raises the "missing from" ImageError
                unpack_layer_file(
                    str(blob_path), layer.digest, layer.size, diff_id, str(rootfs), what,
                    verified=isinstance(source, BlobStore),
                )
            tree = measure_tree(rootfs)
            disk_bytes = disk_size_for(tree.content_bytes)
            require_free(self.tmp_dir, tree.content_bytes + 16 * MIB, f"the disk of {reference}")
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
            if is_disk_full(e):
                raise disk_full_error(self.root, f"the disk of {reference}", e) from e
            if isinstance(e, OSError):
                raise StorageError(f"could not build the disk for {reference}: {e}", fix="check free space") from e
            raise
        finally:
            remove_path(rootfs)
            remove_path(disk_tmp)

    # -- removing --------------------------------------------------------------------------------

    def _find_for_removal(self, reference: str) -> tuple[str, str | None]:
        """(digest, the ref name to drop, or None when a digest was given and every name goes)."""
        if not reference:
            raise ImageError("empty image reference", fix="name an image: `boxlite images ls` lists them")
        keys = [reference]
        if reference not in BUILTIN_IMAGES and not reference.startswith((*LOCAL_SCHEMES, "sha256:")):
            with contextlib.suppress(ConfigError):
                keys += [c.canonical for c in self._candidates(parse_reference(reference))]
        for key in keys:
            digest = self._ref_digest(key)
            if digest is not None:
                return digest, key
        if _HEX_PREFIX.match(reference):
            hex_prefix = reference.removeprefix("sha256:")
            matches = [d for d in self._image_digests() if d.split(":", 1)[1].startswith(hex_prefix)]
            if len(matches) == 1:
                return matches[0], None
            if len(matches) > 1:
                raise ImageError(f"{reference} matches {len(matches)} images", fix="give more digits of the digest")
        raise NotFoundError(f"image not found: {reference}", fix="`boxlite images ls` lists the local images")

    def _delete_image(self, digest: str) -> int:
        hex_digest = digest.split(":", 1)[1]
        disk = self._disk_path(hex_digest)
        freed = allocated_bytes(disk) + allocated_bytes(self._manifest_path(hex_digest))
        self._manifest_path(hex_digest).unlink(missing_ok=True)  # first: without it the image is not ready
        disk.unlink(missing_ok=True)
        return freed

    def _collect_blobs(self) -> int:
        """Delete blobs that no ready image's manifest (kept in the blob store) names. Caller holds the store lock."""
        keep: set[str] = set()
        for digest in self._image_digests():
            desc = Descriptor.model_validate({"digest": digest, "size": 0})
            path = self.blobs.blob_path(desc.digest)
            if not path.is_file():
                continue
            keep.add(digest)
            try:
                manifest = to_model(Manifest, parse_json(path.read_bytes(), "manifest"), "manifest")
            except (OSError, ImageError):
                continue
            keep.add(manifest.config.digest)
            keep.update(layer.digest for layer in manifest.layers)
        freed = 0
        for digest in list(self.blobs.digests()):
            if digest not in keep:
                path = self.blobs.blob_path(digest)
                freed += allocated_bytes(path)
                path.unlink(missing_ok=True)
        return freed

    def _users(self) -> Mapping[str, Sequence[str]]:
        return self.in_use() if self.in_use is not None else {}

    def _discard_templates(self, digest: str) -> tuple[Sequence[str], int]:
        """Discard the start templates based on digest: (their names, the bytes freed)."""
        return self.discard_templates(digest) if self.discard_templates is not None else ((), 0)

    def _image_digests(self) -> list[str]:
        return [f"sha256:{p.stem}" for p in _json_files(self.manifests_dir)]

    # -- files -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _store_lock(self, *, shared: bool) -> Iterator[None]:
        with file_lock(self.locks_dir / "store.lock", shared=shared):
            yield

    def _refs_by_digest(self) -> dict[str, list[str]]:
        refs: dict[str, list[str]] = {}
        for ref_file in _json_files(self.refs_dir):
            try:
                entry = json.loads(ref_file.read_text())
                refs.setdefault(str(entry["digest"]), []).append(str(entry["reference"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return refs

    def _ref_digest(self, reference: str) -> str | None:
        try:
            return check_digest(str(json.loads(self._ref_path(reference).read_text())["digest"]))
        except (OSError, ValueError, KeyError, TypeError, ImageError):
            return None

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

    # -- listing (last: `list` shadows the builtin in the class body) -------------------------------

    def list(self) -> builtins.list[Image]:
        """Every ready image, once per digest, named by a tag when it has one."""
        refs = self._refs_by_digest()
        images: builtins.list[Image] = []
        for manifest_file in _json_files(self.manifests_dir):
            digest = f"sha256:{manifest_file.stem}"
            names = sorted(refs.get(digest, []), key=lambda r: (r.startswith(LOCAL_SCHEMES), r))
            image = self._load(digest, names[0] if names else None)
            if image is not None:
                images.append(image)
        return sorted(images, key=lambda i: i.reference)

    @staticmethod
    def builtin_names() -> builtins.list[str]:
        """The names of the built-in images (built from Debian packages on first use), default image first."""
        return builtins.list(BUILTIN_IMAGES)

    def builtin_images(self) -> builtins.list[tuple[BuiltinImage, Image | None]]:
        """The catalog of built-in images, each with its ready Image, or None when it has not been built here."""
        return [(spec, self._lookup(spec.name)) for spec in BUILTIN_IMAGES.values()]

    def references(self) -> builtins.list[tuple[str, Image]]:
        """(reference, image) for every name of every ready image; unnamed images appear under their digest."""
        refs = self._refs_by_digest()
        rows: builtins.list[tuple[str, Image]] = []
        for image in self.list():
            names = refs.get(image.digest) or [image.digest]
            rows.extend((name, image.model_copy(update={"reference": name})) for name in sorted(names))
        return sorted(rows, key=lambda row: row[0])


def _in_use_error(shown: str, digest: str, users: Sequence[str]) -> InvalidStateError:
    """Why an image cannot be removed: the boxes (and snapshots) whose disks are based on it."""
    return InvalidStateError(
        f"image {shown} ({short_digest(digest)}) is used by {len(users)} box(es): " + ", ".join(users),
        fix="remove those boxes first (`boxlite rm -f BOX`; a snapshot: `boxlite snapshot rm NAME`), "
            "then remove the image",
    )


def _check_config(config: ImageConfig, manifest: Manifest, reference: str) -> None:
    arch = host_architecture()
    if config.os and config.os != "linux":
        raise ImageError(f"image {reference} is for {config.os}, not linux", fix="use a linux image")
    if config.architecture and config.architecture != arch:
        raise ImageError(
            f"image {reference} is for {config.architecture}, but this host runs {arch}",
            fix=f"use the linux/{arch} variant of the image",
        )
    if len(config.rootfs.diff_ids) != len(manifest.layers):
        raise ImageError(
            f"image {reference} lists {len(manifest.layers)} layers but its config has "
            f"{len(config.rootfs.diff_ids)} diff_ids",
            fix="the image is corrupt; export or push it again",
        )


def _layer_lines(progress: Progress) -> LayerCallback:
    """LayerProgress events as plain text lines: one when a layer starts, one when it ends."""

    def report(p: LayerProgress) -> None:
        head = f"layer {p.index}/{p.count} {short_digest(p.digest)} {human_size(p.total_bytes)}"
        if p.status == "waiting":
            progress(f"{head}: downloading")
        elif p.status == "done":
            progress(f"{head}: downloaded")
        elif p.status == "cached":
            progress(f"{head}: already present")

    return report


def _clean_scratch(tmp_dir: Path) -> int:
    before = allocated_bytes(tmp_dir)
    clean_stale_scratch(tmp_dir)
    return max(0, before - allocated_bytes(tmp_dir))


def _files_with_suffix(directory: Path, suffix: str) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == suffix and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def _json_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def _local_path(path: Path | str) -> Path:
    """A host path given for an image, with ~ expanded. One that cannot name a file (a NUL byte, text the file
    system cannot encode, ~ of an unknown user) is an ImageError here rather than a ValueError deep inside."""
    text = os.fspath(path)
    try:
        if "\0" in text:
            raise ValueError("it contains a NUL byte")
        os.fsencode(text)
        return Path(text).expanduser()
    except (ValueError, RuntimeError) as exc:
        shown = repr(text) if len(text) <= 100 else repr(text[:100]) + "..."
        raise ImageError(f"{shown} cannot be an image path: {exc}",
                         fix="pass the path of an OCI layout directory or an image archive") from None


def _quiet(_line: str) -> None:
    pass
