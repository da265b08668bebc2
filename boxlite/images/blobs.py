"""The content-addressed blob store under HOME/images/blobs/sha256/<hex>: pulled and loaded layers,
configs and manifests, shared by every image that names them.

A blob file only ever appears (by rename) after its bytes were hashed and matched its digest, so a present
file is a verified blob. Writers hold a per-blob flock, so two processes needing the same blob fetch it once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from boxlite._errors import ImageError
from boxlite.images._files import disk_full_error, file_lock, is_disk_full, remove_path, scratch_name
from boxlite.images.oci import BlobReader, Descriptor, check_digest


class HashingWriter:
    """Writes to a file while hashing and counting; reset() starts over (for a retried download)."""

    def __init__(self, f: BinaryIO, algorithm: str) -> None:
        self._f = f
        self._algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.count = 0

    def write(self, data: bytes) -> None:
        self._f.write(data)
        self._hash.update(data)
        self.count += len(data)

    def reset(self) -> None:
        self._f.seek(0)
        self._f.truncate()
        self._hash = hashlib.new(self._algorithm)
        self.count = 0

    @property
    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"


class BlobStore(BlobReader):
    def __init__(self, root: Path, locks_dir: Path, tmp_dir: Path) -> None:
        self.root = root
        self.locks_dir = locks_dir
        self.tmp_dir = tmp_dir
        self.where = str(root)

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hex_part = check_digest(digest).partition(":")
        return self.root / algorithm / hex_part

    def has(self, desc: Descriptor) -> bool:
        try:
            return self.blob_path(desc.digest).stat().st_size == desc.size
        except OSError:
            return False

    def ensure(
        self, desc: Descriptor, fetch: Callable[[HashingWriter], None], what: str, source: str = "the registry"
    ) -> bool:
        """Make sure blob desc is present, calling fetch(writer) to write its bytes when it is not.

        The bytes go to a temp file that is renamed into place only when they match the digest and size.
        Returns True if the blob was fetched, False if it was already there (or another process fetched it).
        """
        path = self.blob_path(desc.digest)
        if self.has(desc):
            return False
        with file_lock(self.locks_dir / f"blob-{desc.digest.replace(':', '-')}.lock"):
            if self.has(desc):
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = scratch_name(self.tmp_dir, f"blob-{desc.digest.split(':', 1)[1][:16]}")
            try:
                with open(tmp, "wb") as f:
                    writer = HashingWriter(f, desc.digest.split(":", 1)[0])
                    fetch(writer)
                    f.flush()
                    os.fsync(f.fileno())
                if writer.digest != desc.digest:
                    raise ImageError(
                        f"{what} {desc.digest} failed verification: {source} sent {writer.count} bytes that hash "
                        f"to {writer.digest}",
                        fix="the source's copy is corrupt or was tampered with; nothing was kept. Repair or "
                        "re-push the image and pull again",
                    )
                if writer.count != desc.size:
                    raise ImageError(
                        f"{what} {desc.digest} is {writer.count} bytes but its descriptor says {desc.size}",
                        fix="the image is corrupt; nothing was kept",
                    )
                os.replace(tmp, path)
            except OSError as e:
                if is_disk_full(e):
                    raise disk_full_error(self.root, f"{what} {desc.digest}", e) from e
                raise
            finally:
                remove_path(tmp)
        return True

    def put_bytes(self, desc: Descriptor, data: bytes, what: str) -> None:
        """Store a small blob already in memory (a manifest), verified like any other."""
        self.ensure(desc, lambda w: w.write(data), what)

    def digests(self) -> Iterator[str]:
        for algorithm in ("sha256", "sha512"):
            directory = self.root / algorithm
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                continue
            for name in names:
                digest = f"{algorithm}:{name}"
                try:
                    yield check_digest(digest)
                except ImageError:
                    continue
