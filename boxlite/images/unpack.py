"""Apply OCI layer tarballs, in order, into a root directory.

Safety model: the root directory is private to this process (a fresh temp dir). Every member name is
checked (no absolute paths, no `..`), its parent directory is resolved one component at a time with
lstat, and only real directories inside the root are ever entered. A symlink met on the way is followed
the way the box itself would see it: an absolute target is taken relative to the root (`/run` means
`ROOT/run`), a relative target may not climb above the root, and the directory it names must already
exist. The final component is always created with no-follow calls after removing what was there. So
nothing is ever written outside the root; a layer that tries is rejected with ImageError.

Whiteouts follow the OCI spec: `.wh.NAME` removes NAME from lower layers and `.wh..wh..opq` hides
everything lower layers put in its directory; entries of the same layer are never hidden.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import gzip
import importlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import zlib
from typing import Any

from boxlite._errors import ImageError
from boxlite.images.oci import Readable, VerifyingReader

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MAX_SYMLINK_HOPS = 40
_COPY_CHUNK = 1024 * 1024
_TAR_BUFFER = 64 * 1024  # tarfile re-slices its buffer on every read: bigger is slower for small files


class _Prefixed:
    """A stream that yields some already-read bytes and then the rest of another stream."""

    def __init__(self, prefix: bytes, rest: VerifyingReader) -> None:
        self._prefix = prefix
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n < 0:
                data, self._prefix = self._prefix + self._rest.read(), b""
                return data
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return self._rest.read(n)

    def readable(self) -> bool:
        return True


def detect_compression(head: bytes) -> str:
    """'gzip', 'zstd' or 'none' (a plain tar), from the first bytes of a layer blob."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


def _decompressed(blob: VerifyingReader, what: str) -> tuple[Readable, str]:
    head = blob.read(4)
    source = _Prefixed(head, blob)
    kind = detect_compression(head)
    if kind == "gzip":
        # GzipFile only reads forward here; the typeshed protocol also asks for seek()
        return gzip.GzipFile(fileobj=source, mode="rb"), kind  # type: ignore[call-overload]
    if kind == "zstd":
        try:
            zstandard: Any = importlib.import_module("zstandard")  # optional dependency
        except ImportError:
            raise ImageError(
                f"{what} is zstd-compressed and the zstandard module is not installed",
                fix="pip install zstandard",
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(source, closefd=False), kind
    return source, kind


def unpack_layer(blob: VerifyingReader, diff_id: str | None, root: str, what: str) -> None:
    """Decompress and apply one layer blob onto root, then verify the blob digest and the diff_id."""
    stream, kind = _decompressed(blob, what)
    plain = VerifyingReader(stream, diff_id, None, f"{what} (uncompressed)") if diff_id and kind != "none" else None
    try:
        with tarfile.open(fileobj=plain or stream, mode="r|", bufsize=_TAR_BUFFER) as tf:  # type: ignore[call-overload]
            LayerApplier(root, what).apply(tf)
        if plain is not None:
            plain.finish()
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        blob.finish()  # a damaged blob is best reported as such
        raise ImageError(f"{what} is not a readable tar archive ({kind}): {e}", fix="the image is corrupt") from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the store reports a full disk as a StorageError with the free space
        raise ImageError(f"could not unpack {what}: {e}", fix="check free space under the boxlite home") from e
    except Exception as e:
        if not _is_zstd_error(e):
            raise
        blob.finish()
        raise ImageError(f"{what} is not a readable zstd stream: {e}", fix="the image is corrupt") from e
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    blob.finish()
    if diff_id and kind == "none" and diff_id != blob.digest:
        raise ImageError(
            f"{what} is uncompressed but its digest differs from the config's diff_id {diff_id}",
            fix="the image config does not match its layers; rebuild the image",
        )


class _PipeReader:
    """Reads a pipe returning whatever is there (up to n bytes) instead of waiting for n bytes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            chunks = []
            while chunk := os.read(self._fd, _COPY_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        return os.read(self._fd, n)

    def readable(self) -> bool:
        return True


def unpack_layer_file(
    path: str, digest: str, size: int, diff_id: str | None, root: str, what: str, *, verified: bool = False
) -> None:
    """Apply a layer blob stored in a file. gzip layers are decompressed by a `gzip -dc` child process, so
    decompression runs on another core while this thread creates files; the blob's own digest is checked
    by a hashing thread (or skipped when verified says the blob store already checked it on the way in).
    Other layers, or no gzip binary, take the in-process path of unpack_layer."""
    gzip_bin = shutil.which("gzip")
    with open(path, "rb") as f:
        kind = detect_compression(f.read(4))
    if kind != "gzip" or gzip_bin is None:
        with open(path, "rb") as f:
            unpack_layer(VerifyingReader(f, digest, size, what), diff_id, root, what)
        return
    problems: list[ImageError] = []

    def check_blob() -> None:
        try:
            with open(path, "rb") as f:
                VerifyingReader(f, digest, size, what).finish()
        except ImageError as e:
            problems.append(e)

    checker = threading.Thread(target=check_blob, name="layer-digest", daemon=True)
    if not verified:
        checker.start()
    proc = subprocess.Popen(
        [gzip_bin, "-dc", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(proc.stdout.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), _COPY_CHUNK)  # gzip may run ahead
    failure: BaseException | None = None
    try:
        pipe = _PipeReader(proc.stdout.fileno())
        plain = VerifyingReader(pipe, diff_id, None, f"{what} (uncompressed)") if diff_id else None
        try:
            source = plain or pipe
            with tarfile.open(fileobj=source, mode="r|", bufsize=_TAR_BUFFER) as tf:  # type: ignore[call-overload]
                LayerApplier(root, what).apply(tf)
            if plain is not None:
                plain.finish()
        except (tarfile.TarError, EOFError) as e:
            failure = ImageError(f"{what} is not a readable tar archive (gzip): {e}", fix="the image is corrupt")
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ImageError(f"could not unpack {what}: {e}", fix="check free space under the boxlite home") from e
        except BaseException as e:
            failure = e
    finally:
        if failure is None:
            with contextlib.suppress(OSError):
                while proc.stdout.read(_COPY_CHUNK):  # a tar's trailing padding: let gzip finish writing
                    pass
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        stderr = proc.stderr.read().decode("utf-8", "replace").strip()
        returncode = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        if checker.is_alive() or checker.ident is not None:
            checker.join()
    if problems:
        raise problems[0]  # a blob that is not what its digest says is the root cause of anything else
    if failure is not None:
        raise failure
    if returncode not in (0, 2):  # 2: gzip's warning exit, e.g. for trailing zeros after the stream
        raise ImageError(
            f"{what} is not a readable gzip stream: {stderr.splitlines()[-1] if stderr else returncode}",
            fix="the image is corrupt",
        )


def member_xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    """Extended attributes a tar member carries: GNU/star SCHILY.xattr.* and libarchive LIBARCHIVE.xattr.*
    PAX records (e.g. security.capability on /usr/bin/ping). mke2fs -d copies them onto the disk."""
    found: list[tuple[str, bytes]] = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            found.append((key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            encoded = key[len("LIBARCHIVE.xattr.") :]
            try:
                name = urllib.parse.unquote(encoded, errors="strict")
                data = base64.b64decode(value + "=" * (-len(value) % 4))
            except (ValueError, binascii.Error, UnicodeDecodeError):
                continue
            found.append((name, data))
    return found


def _is_zstd_error(e: BaseException) -> bool:
    zstandard = sys.modules.get("zstandard")
    return zstandard is not None and isinstance(e, getattr(zstandard, "ZstdError", ()))


def split_member_name(name: str, what: str) -> list[str]:
    """'./usr/bin/x' -> ['usr', 'bin', 'x']; absolute names and `..` are refused."""
    if name.startswith("/"):
        raise ImageError(f"{what} contains an absolute path {name!r}", fix="the layer is unsafe; do not use this image")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(
            f"{what} contains a path with '..': {name!r}", fix="the layer is unsafe; do not use this image"
        )
    return parts


class LayerApplier:
    """Applies the members of one layer tar onto a root directory."""

    def __init__(self, root: str, what: str) -> None:
        self.root = os.path.realpath(root)
        self.what = what
        self.is_root_user = os.geteuid() == 0
        self._written: set[str] = set()  # root-relative paths this layer created
        self._ancestors: set[str] = set()  # their parent directories
        self._dir_times: list[tuple[str, float]] = []
        # member directory parts -> the real directory they resolved to in this layer; cleared whenever a
        # directory or symlink that a cached resolution may have gone through is removed or replaced
        self._dir_cache: dict[tuple[str, ...], str] = {}

    # -- member dispatch -------------------------------------------------------------------------

    def apply(self, tf: tarfile.TarFile) -> None:
        for member in tf:
            self._apply_member(tf, member)
        for path, mtime in reversed(self._dir_times):
            with contextlib.suppress(OSError):
                os.utime(path, (mtime, mtime), follow_symlinks=False)

    def _apply_member(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = split_member_name(member.name, self.what)
        if not parts:  # the root directory itself
            if member.isdir():
                os.chmod(self.root, member.mode & 0o7777)
            return
        name = parts[-1]
        if name == OPAQUE_MARKER:
            parent = self._resolve_dir(parts[:-1], create=True, member=member.name)
            assert parent is not None
            self._record(parent)
            self._make_opaque(parent)
            return
        if name.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts[:-1], name[len(WHITEOUT_PREFIX) :], member.name)
            return
        parent = self._resolve_dir(parts[:-1], create=True, member=member.name)
        assert parent is not None
        path = os.path.join(parent, name)
        if member.islnk():
            self._hardlink(member, path)
        elif member.isdir():
            self._directory(member, path)
        elif member.isreg():
            self._regular(tf, member, path)
        elif member.issym():
            self._replace(path, is_dir=False)
            os.symlink(member.linkname, path)
            self._set_attrs(path, member, symlink=True)
        elif member.ischr() or member.isblk():
            if parts[0] != "dev":
                raise ImageError(
                    f"{self.what} contains a device node outside /dev: {member.name!r} "
                    f"({'char' if member.ischr() else 'block'} {member.devmajor}:{member.devminor})",
                    fix="the layer is unsafe; do not use this image",
                )
            self._device(member, path)
        elif member.isfifo():
            self._replace(path, is_dir=False)
            os.mkfifo(path, 0o600)
            self._set_attrs(path, member)
        else:
            return  # unknown member types carry nothing a root filesystem needs
        self._record(path)

    # -- creating entries ------------------------------------------------------------------------

    def _directory(self, member: tarfile.TarInfo, path: str) -> None:
        if not self._replace(path, is_dir=True):
            os.mkdir(path, 0o700)
        self._set_attrs(path, member, defer_times=True)

    def _regular(self, tf: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> None:
        self._replace(path, is_dir=False)
        source = tf.extractfile(member)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            if source is not None:
                while chunk := source.read(_COPY_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            # the same as _set_attrs, through the descriptor (no path lookups)
            if self.is_root_user:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears set-id bits
            for name, data in member_xattrs(member):
                with contextlib.suppress(OSError):
                    os.setxattr(fd, name, data)
            with contextlib.suppress(OSError):
                os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target_parts = split_member_name(member.linkname, self.what)
        if not target_parts:
            raise ImageError(f"{self.what}: hard link {member.name!r} points at the root directory",
                             fix="the layer is corrupt; export the image again")
        target_parent = self._resolve_dir(target_parts[:-1], create=False, member=member.name)
        target = os.path.join(target_parent, target_parts[-1]) if target_parent else None
        try:
            target_stat = os.lstat(target) if target else None
        except FileNotFoundError:
            target_stat = None
        if target is None or target_stat is None:
            raise ImageError(
                f"{self.what}: hard link {member.name!r} points at {member.linkname!r}, which does not exist",
                fix="the layer is corrupt; export the image again",
            )
        if stat.S_ISDIR(target_stat.st_mode):
            raise ImageError(f"{self.what}: hard link {member.name!r} points at a directory {member.linkname!r}",
                             fix="the layer is corrupt; export the image again")
        if target == path:
            return
        self._replace(path, is_dir=False)
        os.link(target, path, follow_symlinks=False)

    def _device(self, member: tarfile.TarInfo, path: str) -> None:
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        self._replace(path, is_dir=False)
        try:
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        except PermissionError:
            return  # not root: device nodes are optional (the guest mounts devtmpfs on /dev)
        self._set_attrs(path, member)

    def _replace(self, path: str, *, is_dir: bool) -> bool:
        """Clear the way for a new entry at path. Returns True if an existing directory is kept."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True
            shutil.rmtree(path)
            self._dir_cache.clear()
        else:
            if stat.S_ISLNK(st.st_mode):
                self._dir_cache.clear()
            os.unlink(path)
        return False

    def _set_attrs(
        self, path: str, member: tarfile.TarInfo, *, symlink: bool = False, defer_times: bool = False
    ) -> None:
        if self.is_root_user:
            os.chown(path, member.uid, member.gid, follow_symlinks=False)
        if not symlink:
            os.chmod(path, member.mode & 0o7777)  # after chown, which clears set-id bits
        for name, data in member_xattrs(member):
            # best effort: the host filesystem may refuse a namespace; not fatal for a root filesystem
            with contextlib.suppress(OSError):
                os.setxattr(path, name, data, follow_symlinks=False)
        if defer_times:
            self._dir_times.append((path, float(member.mtime)))
        else:
            with contextlib.suppress(OSError):
                os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    # -- whiteouts -------------------------------------------------------------------------------

    def _whiteout(self, parent_parts: list[str], name: str, member_name: str) -> None:
        if name in ("", ".", ".."):
            raise ImageError(f"{self.what} contains an invalid whiteout {member_name!r}",
                             fix="the layer is corrupt; export the image again")
        parent = self._resolve_dir(parent_parts, create=False, member=member_name)
        if parent is None:
            return  # nothing below to hide
        path = os.path.join(parent, name)
        rel = self._rel(path)
        if rel in self._written or rel in self._ancestors:
            return  # whiteouts only hide lower layers
        _remove(path)
        self._dir_cache.clear()

    def _make_opaque(self, directory: str) -> None:
        """Remove everything lower layers put below directory, keeping this layer's entries."""
        self._dir_cache.clear()
        with os.scandir(directory) as it:
            entries = list(it)
        for entry in entries:
            rel = self._rel(entry.path)
            is_real_dir = entry.is_dir(follow_symlinks=False)
            if rel in self._written or rel in self._ancestors:
                if is_real_dir:
                    self._make_opaque(entry.path)
            else:
                _remove(entry.path)

    # -- path handling ---------------------------------------------------------------------------

    def _rel(self, path: str) -> str:
        prefix = self.root + os.sep
        if path.startswith(prefix):
            return path[len(prefix) :]
        return os.path.relpath(path, self.root)

    def _record(self, path: str) -> None:
        rel = self._rel(path)
        if rel == ".":
            return
        self._written.add(rel)
        parent = os.path.dirname(rel)
        while parent and parent not in self._ancestors:
            self._ancestors.add(parent)
            parent = os.path.dirname(parent)

    def _resolve_dir(self, parts: list[str], *, create: bool, member: str) -> str | None:
        """The real directory inside root that parts name, following symlinks within the root only.

        Missing components named by the member are created (as tar does) if create is set; returns None
        if one is missing and create is not set.
        """
        key = tuple(parts)
        cached = self._dir_cache.get(key)
        if cached is not None:
            return cached
        found = self._walk_dir(parts, create=create, member=member)
        if found is not None:
            self._dir_cache[key] = found
        return found

    def _walk_dir(self, parts: list[str], *, create: bool, member: str) -> str | None:
        current: list[str] = []
        pending: list[tuple[str, bool]] = [(p, False) for p in reversed(parts)]
        hops = 0
        while pending:
            component, via_link = pending.pop()
            if component in ("", "."):
                continue
            if component == "..":
                if not current:
                    raise self._escape(member, "a symlink on its path climbs above the image root")
                current.pop()
                continue
            host = os.path.join(self.root, *current, component)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                if via_link:
                    raise self._escape(
                        member,
                        f"it goes through a symlink to /{'/'.join([*current, component])}, "
                        "which does not exist in the image",
                    ) from None
                if not create:
                    return None
                os.mkdir(host, 0o755)
                current.append(component)
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise self._escape(member, "too many levels of symlinks")
                target = os.readlink(host)
                if target.startswith("/"):
                    current = []
                pending.extend((p, True) for p in reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise ImageError(
                    f"{self.what}: cannot create {member!r}: /{'/'.join([*current, component])} is not a directory",
                    fix="the layer is corrupt; export the image again",
                )
            current.append(component)
        return os.path.join(self.root, *current)

    def _escape(self, member: str, why: str) -> ImageError:
        return ImageError(
            f"{self.what} writes {member!r} outside the image root: {why}",
            fix="the layer is unsafe or corrupt; do not use this image",
        )


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
