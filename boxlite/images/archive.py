"""Image archives: `docker save` tarballs (old and Docker 25+ layouts) and OCI archives (a tarred OCI layout),
plain or gzip-compressed.

The archive is read once, as a stream: blobs go straight into the content-addressed blob store (verified
against their names), `docker save` layer tars are hashed on the way in, and the small JSON files are kept in
memory. Then the image's manifest is found (index.json, or synthesized from manifest.json for old `docker save`
archives) and the store builds its disk from the blob store like a pulled image.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxlite._errors import ConfigError, ImageError
from boxlite.images._files import remove_path, scratch_name
from boxlite.images.blobs import BlobStore, HashingWriter
from boxlite.images.oci import (
    MEDIA_DOCKER_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    check_digest,
    parse_json,
    resolve_in,
    to_model,
)
from boxlite.images.reference import parse_reference

MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
_BLOB_NAME = re.compile(r"^blobs/(sha256|sha512)/([a-f0-9]+)$")
_SMALL_FILE = 16 * 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass
class ArchiveImage:
    """One image found in an archive: its manifest (whose blobs are all in the blob store) and its names."""

    desc: Descriptor
    manifest: Manifest
    names: list[str] = field(default_factory=list)


@dataclass
class _Contents:
    small: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # archive path -> (digest, size)
    links: dict[str, str] = field(default_factory=dict)  # archive path -> archive path it points to


def _norm(name: str) -> str:
    normal = posixpath.normpath(name.lstrip("/"))
    return "" if normal == "." else normal


def load_archive(path: Path, blobs: BlobStore, progress: Callable[[str], None]) -> list[ArchiveImage]:
    """Read an image archive into the blob store and return the images it holds (this host's platform)."""
    if not path.is_file():
        raise ImageError(
            f"image archive {path} does not exist",
            fix="pass an OCI layout directory, a `docker save` tarball or an OCI archive",
        )
    contents = _Contents()
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                _take(tf, member, contents, blobs, path, progress)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ImageError(
            f"{path} is not a readable image archive: {e}",
            fix="pass an OCI layout directory, a `docker save` tarball or an OCI archive (optionally gzipped)",
        ) from e
    if "index.json" in contents.small:
        return _from_index(path, contents, blobs)
    if "manifest.json" in contents.small:
        return _from_docker_manifest(path, contents, blobs)
    raise ImageError(
        f"{path} holds neither index.json nor manifest.json, so it is no image archive",
        fix="make it with `docker save IMAGE -o FILE` or `skopeo copy ... oci-archive:FILE`",
    )


def _take(
    tf: tarfile.TarFile, member: tarfile.TarInfo, contents: _Contents, blobs: BlobStore, path: Path,
    progress: Callable[[str], None],
) -> None:
    name = _norm(member.name)
    if not name:
        return
    if member.issym() or member.islnk():
        target = member.linkname if member.islnk() else posixpath.join(posixpath.dirname(name), member.linkname)
        contents.links[name] = _norm(target)
        return
    if not member.isreg():
        return
    source = tf.extractfile(member)
    if source is None:
        return
    blob = _BLOB_NAME.match(name)
    if blob:
        digest = check_digest(f"{blob.group(1)}:{blob.group(2)}")
        desc = Descriptor.model_validate({"digest": digest, "size": member.size})
        fetched = blobs.ensure(desc, lambda w: _copy(source, w), f"blob {name}", source=f"archive {path}")
        if fetched and member.size > _CHUNK:
            progress(f"loaded {digest[:19]} ({member.size} bytes)")
        contents.files[name] = (digest, member.size)
        if member.size <= _SMALL_FILE and name.endswith(".json"):
            contents.small[name] = blobs.blob_path(digest).read_bytes()
        return
    if member.size <= _SMALL_FILE and (name.endswith(".json") or name in ("oci-layout", "repositories")):
        contents.small[name] = source.read()
        return
    if name.endswith(".tar") or name.endswith("/layer"):
        # an old `docker save` layer: its name is no digest, so it is hashed on the way in
        contents.files[name] = _ingest_unnamed(blobs, source, member.size, name, path)


def _copy(source: Any, writer: HashingWriter) -> None:
    while chunk := source.read(_CHUNK):
        writer.write(chunk)


def _ingest_unnamed(blobs: BlobStore, source: Any, size: int, name: str, path: Path) -> tuple[str, int]:
    """Store a file whose digest is learnt only by reading it: hash it into a scratch file, then add it."""
    blobs.tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = scratch_name(blobs.tmp_dir, "archive-layer")
    try:
        with open(tmp, "wb") as f:
            writer = HashingWriter(f, "sha256")
            _copy(source, writer)
        desc = Descriptor.model_validate({"digest": writer.digest, "size": writer.count})

        def copy_in(w: HashingWriter) -> None:
            with open(tmp, "rb") as src:
                _copy(src, w)

        blobs.ensure(desc, copy_in, f"layer {name}", source=f"archive {path}")
        return desc.digest, desc.size
    finally:
        remove_path(tmp)


def _resolve_name(contents: _Contents, name: str) -> str:
    seen = 0
    name = _norm(name)
    while name in contents.links and seen < 16:
        name = contents.links[name]
        seen += 1
    return name


def _names_from_index(index: Index) -> list[str]:
    names: list[str] = []
    for d in index.manifests:
        for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
            value = d.annotations.get(key, "")
            if key.startswith("org.") and not ("/" in value or ":" in value):
                continue  # a bare tag such as "latest" names nothing by itself
            if value:
                with contextlib.suppress(ConfigError):
                    names.append(parse_reference(value).canonical)
    return list(dict.fromkeys(names))


def _from_index(path: Path, contents: _Contents, blobs: BlobStore) -> list[ArchiveImage]:
    index = to_model(Index, parse_json(contents.small["index.json"], f"index.json of {path}"), "index.json")
    names = _names_from_index(index) + _repo_tags(contents)
    if len(index.manifests) > 1 and all(d.platform is None for d in index.manifests):
        # `docker save A B` (Docker 25+): one entry per image, each named by its annotations
        images = []
        for d in index.manifests:
            desc, manifest = resolve_in(blobs, [d], f"index.json of {path}")
            sub = Index.model_validate({"manifests": [d.model_dump(by_alias=True)]})
            images.append(ArchiveImage(desc, manifest, _names_from_index(sub)))
        return images
    desc, manifest = resolve_in(blobs, index.manifests, f"index.json of {path}")
    return [ArchiveImage(desc, manifest, list(dict.fromkeys(names)))]


def _repo_tags(contents: _Contents) -> list[str]:
    try:
        entries = json.loads(contents.small.get("manifest.json", b"[]"))
    except ValueError:
        return []
    names: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        for tag in (entry.get("RepoTags") or []) if isinstance(entry, dict) else []:
            with contextlib.suppress(ConfigError):
                names.append(parse_reference(str(tag)).canonical)
    return names


def _from_docker_manifest(path: Path, contents: _Contents, blobs: BlobStore) -> list[ArchiveImage]:
    try:
        entries = json.loads(contents.small["manifest.json"])
    except ValueError as e:
        raise ImageError(f"manifest.json in {path} is not valid JSON: {e}", fix="save the image again") from e
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"manifest.json in {path} lists no images", fix="save the image again")
    images: list[ArchiveImage] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ImageError(f"manifest.json in {path} has an entry without Config", fix="save the image again")
        config_name = _resolve_name(contents, entry["Config"])
        if config_name in contents.small:
            config_bytes = contents.small[config_name]
        elif config_name in contents.files:
            config_bytes = blobs.blob_path(contents.files[config_name][0]).read_bytes()
        else:
            raise ImageError(f"{path} lacks the image config {entry['Config']}", fix="save the image again")
        config_desc = Descriptor.model_validate(
            {"mediaType": MEDIA_DOCKER_CONFIG, "digest": _sha256(config_bytes), "size": len(config_bytes)}
        )
        blobs.put_bytes(config_desc, config_bytes, "image config")
        layers: list[dict[str, Any]] = []
        for layer_name in entry.get("Layers") or []:
            resolved = _resolve_name(contents, str(layer_name))
            if resolved not in contents.files:
                raise ImageError(f"{path} lacks layer {layer_name}", fix="save the image again")
            digest, size = contents.files[resolved]
            layers.append({"mediaType": MEDIA_DOCKER_LAYER, "digest": digest, "size": size})
        manifest_raw = {
            "schemaVersion": 2,
            "mediaType": MEDIA_DOCKER_MANIFEST,
            "config": {"mediaType": MEDIA_DOCKER_CONFIG, "digest": config_desc.digest, "size": config_desc.size},
            "layers": layers,
        }
        data = json.dumps(manifest_raw, separators=(",", ":"), sort_keys=True).encode()
        desc = Descriptor.model_validate(
            {"mediaType": MEDIA_DOCKER_MANIFEST, "digest": _sha256(data), "size": len(data)}
        )
        blobs.put_bytes(desc, data, "manifest")
        names: list[str] = []
        for tag in entry.get("RepoTags") or []:
            with contextlib.suppress(ConfigError):
                names.append(parse_reference(str(tag)).canonical)
        images.append(ArchiveImage(desc, to_model(Manifest, manifest_raw, f"manifest of {path}"), names))
    return images


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"
