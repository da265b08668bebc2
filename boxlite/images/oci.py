"""OCI image layout reading: index.json, manifests, configs and digest-verified blobs.

Only what the store needs: pick one image manifest for this host's platform and read its config and
layers. Docker (schema 2) media types are accepted alongside OCI ones since both lay out the same way.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from boxlite._errors import ImageError

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

INDEX_TYPES = {MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST}
MANIFEST_TYPES = {MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST}

_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_CHUNK = 1024 * 1024
_MAX_JSON_BLOB = 16 * 1024 * 1024

M = TypeVar("M", bound=BaseModel)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Platform(_Lenient):
    architecture: str = ""
    os: str = ""
    variant: str = ""


class Descriptor(_Lenient):
    media_type: str = Field("", alias="mediaType")
    digest: str
    size: int = Field(ge=0)
    platform: Platform | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class Index(_Lenient):
    schema_version: int = Field(2, alias="schemaVersion")
    media_type: str = Field("", alias="mediaType")
    manifests: list[Descriptor] = Field(default_factory=list)


class Manifest(_Lenient):
    schema_version: int = Field(2, alias="schemaVersion")
    media_type: str = Field("", alias="mediaType")
    config: Descriptor
    layers: list[Descriptor] = Field(default_factory=list)


class RunConfig(_Lenient):
    env: list[str] | None = Field(None, alias="Env")
    working_dir: str | None = Field(None, alias="WorkingDir")
    user: str | None = Field(None, alias="User")
    entrypoint: list[str] | None = Field(None, alias="Entrypoint")
    cmd: list[str] | None = Field(None, alias="Cmd")


class RootFs(_Lenient):
    type: str = "layers"
    diff_ids: list[str] = Field(default_factory=list)


class ImageConfig(_Lenient):
    architecture: str = ""
    os: str = ""
    config: RunConfig | None = None
    rootfs: RootFs = Field(default_factory=RootFs)


def host_architecture() -> str:
    """This host's CPU in OCI terms (amd64, arm64, ...)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def check_digest(digest: str) -> str:
    """Return digest if it is a well-formed sha256/sha512 digest (so it is safe to use in a path)."""
    if not _DIGEST_RE.match(digest):
        raise ImageError(f"malformed digest {digest!r}", fix="the image's JSON is corrupt; rebuild or re-export it")
    return digest


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class VerifyingReader:
    """A read-only stream over a blob that hashes what passes through; finish() checks digest and size."""

    def __init__(self, f: Readable, digest: str, size: int | None, what: str) -> None:
        self._f = f
        self.digest = digest
        self._size = size
        self._what = what
        self._hash = hashlib.new(digest.split(":", 1)[0])
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._hash.update(data)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """Drain the rest of the blob and raise ImageError if it is not what the descriptor said."""
        while self.read(_CHUNK):
            pass
        actual = f"{self.digest.split(':', 1)[0]}:{self._hash.hexdigest()}"
        if actual != self.digest:
            raise ImageError(
                f"{self._what} {self.digest} failed verification: its content hashes to {actual}",
                fix="the image is corrupt or was modified; re-export or rebuild it",
            )
        if self._size is not None and self.count != self._size:
            raise ImageError(
                f"{self._what} {self.digest} is {self.count} bytes but its descriptor says {self._size}",
                fix="the image is corrupt; re-export or rebuild it",
            )


class BlobReader:
    """Reads digest-verified blobs from some directory; subclasses say where a digest's file is."""

    where = "the image store"

    def blob_path(self, digest: str) -> Path:
        raise NotImplementedError

    def open_blob(self, desc: Descriptor, what: str = "blob") -> tuple[IO[bytes], VerifyingReader]:
        """Open a blob for streaming; the caller must call reader.finish() and close the file."""
        path = self.blob_path(desc.digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        except FileNotFoundError:
            raise ImageError(
                f"{what} {desc.digest} is missing from {self.where}",
                fix="the image is incomplete; export or pull it again with all its layers",
            ) from None
        return f, VerifyingReader(f, desc.digest, desc.size, what)

    def read_json_blob(self, desc: Descriptor, what: str) -> dict[str, Any]:
        if desc.size > _MAX_JSON_BLOB:
            raise ImageError(f"{what} {desc.digest} is implausibly large ({desc.size} bytes)",
                             fix="the image is corrupt or not an image; export or pull it again")
        f, reader = self.open_blob(desc, what)
        with f:
            data = reader.read()
            reader.finish()
        return parse_json(data, f"{what} {desc.digest}")

    def config(self, manifest: Manifest) -> ImageConfig:
        raw = self.read_json_blob(manifest.config, "image config")
        return to_model(ImageConfig, raw, f"image config {manifest.config.digest}")


class OciLayout(BlobReader):
    """An OCI image layout directory: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.where = str(self.path)
        if not self.path.is_dir():
            raise ImageError(
                f"OCI layout directory {self.path} does not exist",
                fix="pass the path of a directory written by e.g. `skopeo copy ... oci:DIR` or `docker save`",
            )
        if not (self.path / "index.json").is_file():
            raise ImageError(
                f"{self.path} is not an OCI image layout (no index.json)",
                fix="export the image as an OCI layout, e.g. `skopeo copy docker://IMAGE oci:DIR`",
            )

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hex_part = check_digest(digest).partition(":")
        return self.path / "blobs" / algorithm / hex_part

    def index(self) -> Index:
        try:
            data = (self.path / "index.json").read_bytes()
        except OSError as e:
            raise ImageError(f"could not read {self.path / 'index.json'}: {e}",
                             fix="pass the directory of an OCI image layout (it holds index.json)") from e
        return to_model(Index, parse_json(data, "index.json"), "index.json")

    def resolve_manifest(self) -> tuple[Descriptor, Manifest]:
        """The image manifest this host should run, following nested image indexes."""
        return resolve_in(self, self.index().manifests, f"index.json in {self.path}")


def resolve_in(source: BlobReader, manifests: list[Descriptor], where: str) -> tuple[Descriptor, Manifest]:
    """Pick this host's manifest among descriptors whose blobs source holds, following nested indexes."""
    desc = pick_manifest(manifests, where)
    for _ in range(8):
        check_digest(desc.digest)
        raw = source.read_json_blob(desc, "manifest")
        media_type = desc.media_type or str(raw.get("mediaType", ""))
        if media_type in INDEX_TYPES or ("manifests" in raw and "layers" not in raw):
            index = to_model(Index, raw, f"image index {desc.digest}")
            desc = pick_manifest(index.manifests, f"image index {desc.digest}")
            continue
        return desc, to_model(Manifest, raw, f"manifest {desc.digest}")
    raise ImageError(f"image indexes in {source.where} nest too deeply",
                     fix="export the image for one platform (an image index of manifests, not of indexes)")


def platform_name(d: Descriptor) -> str:
    if d.platform is None:
        return f"(no platform) {d.digest[:19]}"
    p = d.platform
    return f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")


def pick_manifest(manifests: list[Descriptor], where: str) -> Descriptor:
    """The descriptor for linux on this host's architecture (the only one, if there is only one)."""
    candidates = [d for d in manifests if not _is_attestation(d)]
    if not candidates:
        raise ImageError(f"{where} lists no image manifests", fix="export or push the image again")
    if len(candidates) == 1:
        return candidates[0]
    arch = host_architecture()
    matching = [d for d in candidates if d.platform and d.platform.os == "linux" and d.platform.architecture == arch]
    if matching:
        preferred = {"arm64": "v8"}.get(arch, "")
        return next((d for d in matching if d.platform and d.platform.variant in ("", preferred)), matching[0])
    found = ", ".join(platform_name(d) for d in candidates)
    raise ImageError(
        f"{where} has several manifests and none for linux/{arch}: {found}",
        fix=f"use an image that is built for linux/{arch}",
    )


def _is_attestation(d: Descriptor) -> bool:
    if d.annotations.get("vnd.docker.reference.type") == "attestation-manifest":
        return True
    return d.platform is not None and d.platform.os == "unknown" and d.platform.architecture == "unknown"


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"{what} is not valid JSON: {e}", fix="the image is corrupt; export it again") from e
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object", fix="the image is corrupt; export it again")
    return value


def to_model(cls: type[M], raw: dict[str, Any], what: str) -> M:
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ImageError(
            f"{what} is malformed: {loc}: {first['msg']}", fix="the image is corrupt; export it again"
        ) from e
