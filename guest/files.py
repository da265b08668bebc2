"""The Files service: copy files and directories into and out of the box as streamed tar archives.

The agent has chrooted itself into the image's root, so every path here is a path in the box.

Upload (Box.copy_in): the client streams `start` (destination, overwrite), the archive in chunks, then `finish`.
The archive is read with tarfile's stream mode ("r|") straight off the request stream and extracted member by
member by the code below (Debian bookworm's Python 3.11.2 has no tarfile.data_filter), so nothing is held in
memory beyond one chunk. The rules, checked for every member before anything is written:
  * names are relative, contain no "..", and lie under the archive's first member (the copied item);
  * a member is never written through a symbolic link that leads out of the copied item (the real path of its
    parent directory must stay inside the item; for the item itself, inside the extraction directory), so a link
    to the directory the item is copied into cannot be used to replace the item's siblings (/etc/passwd when a
    directory is copied into /etc); an existing link at a member's own path is replaced, never followed;
  * symbolic links must be relative and point inside the extraction directory; hard links must name an earlier
    member of the same archive, reached without going through a link out of the item;
  * paths holding a NUL byte are INVALID_ARGUMENT (no file can be named so);
  * device nodes and FIFOs are created as they are: the agent is root inside the box and the box is the
    sandbox, so this is what root's `tar -x` would do there;
  * everything created belongs to root (uid 0, gid 0): owners in the archive are ignored. Permission bits
    (setuid/setgid/sticky included) and modification times are kept;
  * an existing directory is merged into; an existing non-directory is replaced (removed first, so a running
    binary or a hard link elsewhere is not written through) unless overwrite is false, then ALREADY_EXISTS.

Download (Box.copy_out): the archive of a path is generated here, header by header (tarfile.TarInfo.tobuf), with
file contents read in 1 MiB pieces as gRPC asks for the next message: streamed without a helper thread. Owner
names are left out: looking them up would go through the box's NSS configuration (see guest/users.py).

Everything this module needs is imported at the top: after the agent's chroot its own files are out of reach.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from guest._portal import portal_pb2 as pb
from guest._portal import portal_pb2_grpc as pb_grpc

CHUNK = 1 << 20
PATH_MAX = 4096
# tarfile's stream buffer: it copies its buffer on every header read, so keep it well below CHUNK.
STREAM_BUFSIZE = 64 * 1024
BLOCKSIZE = tarfile.BLOCKSIZE
RECORDSIZE = tarfile.RECORDSIZE
# Initial metadata key announcing a failed upload before its status (see FilesService.Upload).
UPLOAD_FAILED = "boxlite-upload-failed"


class FileOpError(Exception):
    """A problem to report to the client as a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _os_error(exc: OSError, what: str) -> FileOpError:
    reason = exc.strerror or str(exc)
    code = {
        errno.ENOENT: grpc.StatusCode.NOT_FOUND,
        errno.EEXIST: grpc.StatusCode.ALREADY_EXISTS,
        errno.ENOSPC: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errno.EDQUOT: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errno.EACCES: grpc.StatusCode.PERMISSION_DENIED,
        errno.EPERM: grpc.StatusCode.PERMISSION_DENIED,
        errno.EROFS: grpc.StatusCode.PERMISSION_DENIED,
    }.get(exc.errno or 0, grpc.StatusCode.FAILED_PRECONDITION)
    return FileOpError(code, f"{what}: {reason}")


# -- pure path logic (unit-tested on the host) ---------------------------------------------------------------
def inside(path: str, root: str) -> bool:
    """True when normalized absolute `path` is `root` or lies below it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def member_parts(name: str, top: str) -> list[str]:
    """The components of archive member `name` below the first member `top` ([] for `top` itself).

    Rejects (INVALID_ARGUMENT) absolute names, "..", and names outside `top`."""
    if name.startswith("/"):
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"unsafe archive member {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"unsafe archive member {name!r}: contains '..'")
    if not parts or parts[0] != top:
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unsafe archive member {name!r}: not under the copied item {top!r}")
    return parts[1:]


def check_path(path: str, what: str) -> None:
    """A path from a request: no NUL byte (os functions would raise ValueError: "embedded null byte"), and not
    longer than the kernel's PATH_MAX (the error messages that would repeat it must stay small)."""
    if "\0" in path:
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} contains a NUL byte: {path[:200]!r}")
    if len(path) > PATH_MAX:
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{what} is {len(path)} characters long, more than {PATH_MAX}: {path[:200]!r}...")


def top_name(name: str) -> str:
    """The name of the archive's first member, which must be a single plain component."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or len(parts) != 1 or parts[0] == "..":
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the archive's first member must be a plain name, not {name!r}")
    return parts[0]


def resolve_destination(dest: str, source_name: str, source_is_dir: bool, overwrite: bool) -> str:
    """Where an item named `source_name` copied to `dest` lands, with `docker cp` rules.

    An existing directory (or a link to one) receives the item under its own name; otherwise `dest` is the new
    name, and its parent must be an existing directory. A trailing "/" demands an existing directory.
    """
    if not dest:
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, "no destination path given")
    check_path(dest, "the destination")
    if not dest.startswith("/"):
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"the destination must be an absolute path: {dest[:200]!r}")
    if os.path.isdir(dest):
        final = posixpath.join(posixpath.normpath(dest), source_name)
    elif dest.endswith("/"):
        if os.path.lexists(dest.rstrip("/")):
            raise FileOpError(grpc.StatusCode.FAILED_PRECONDITION, f"destination {dest} is not a directory")
        raise FileOpError(grpc.StatusCode.NOT_FOUND, f"destination directory {dest} does not exist")
    else:
        final = posixpath.normpath(dest)
        parent = posixpath.dirname(final)
        if not os.path.isdir(parent):
            if os.path.lexists(parent):
                raise FileOpError(grpc.StatusCode.FAILED_PRECONDITION,
                                  f"cannot copy to {dest}: {parent} is not a directory")
            raise FileOpError(grpc.StatusCode.NOT_FOUND,
                              f"cannot copy to {dest}: the parent directory {parent} does not exist")
    check_replace(final, source_is_dir, overwrite)
    return final


def check_replace(path: str, is_dir: bool, overwrite: bool) -> os.stat_result | None:
    """Whether an entry (a directory when is_dir) may be put at `path`; its current lstat, None if none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        if not is_dir:
            raise FileOpError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"cannot overwrite directory {path} with a non-directory")
        return st
    if is_dir:
        raise FileOpError(grpc.StatusCode.FAILED_PRECONDITION,
                          f"cannot overwrite non-directory {path} with a directory")
    if not overwrite:
        raise FileOpError(grpc.StatusCode.ALREADY_EXISTS, f"{path} already exists (overwrite=False)")
    return st


def check_symlink(target: str, linkname: str, root_real: str) -> None:
    """A symbolic link to be created at `target` must be relative and resolve inside `root_real`."""
    if not linkname or linkname.startswith("/"):
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unsafe symbolic link {target} -> {linkname}: absolute target")
    resolved = os.path.realpath(posixpath.join(posixpath.dirname(target), linkname))
    if not inside(resolved, root_real):
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unsafe symbolic link {target} -> {linkname}: it points outside {root_real}")


# -- Upload: extracting a streamed archive ---------------------------------------------------------------------
class RequestReader:
    """The `data` of an Upload stream as a file tarfile can read; it notes `finish`."""

    def __init__(self, requests: Iterator[pb.UploadRequest]) -> None:
        self.requests = requests
        self.view = memoryview(b"")
        self.finished = False
        self.received = 0

    def _next_chunk(self) -> bool:
        for msg in self.requests:
            kind = msg.WhichOneof("kind")
            if kind == "data":
                data = msg.data  # each access to a bytes field copies it
                if data:
                    self.view = memoryview(data)
                    self.received += len(data)
                    return True
            elif kind == "finish":
                self.finished = True
                return False
            else:
                raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected {kind!r} in the upload stream")
        return False

    def read(self, n: int = -1) -> bytes:
        if not self.view and (self.finished or not self._next_chunk()):
            return b""
        if n < 0 or n > len(self.view):
            n = len(self.view)
        out = bytes(self.view[:n])
        self.view = self.view[n:]
        return out

    def drain(self) -> None:
        """Read (and drop) whatever follows the archive's end marker, up to the end of the stream: `finish`, and
        the client's half-close right after it (see FilesService.Upload for why the end must be waited for)."""
        self.view = memoryview(b"")
        while not self.finished and self._next_chunk():
            self.view = memoryview(b"")
        for _ in self.requests:
            pass


@dataclass
class Extractor:
    """Extracts the members of one archive: the first member becomes `final`, the rest go below it."""

    final: str
    top: str
    overwrite: bool
    entries: int = 0
    bytes_written: int = 0
    root_real: str = ""
    _dirs: list[tuple[str, int, float]] = field(default_factory=list)
    _real_dirs: dict[str, str] = field(default_factory=dict)

    item_real: str = ""

    def __post_init__(self) -> None:
        # Everything stays inside the directory the item is extracted into, as with tarfile's data filter; and
        # below the item itself, everything is written inside the item.
        self.root_real = os.path.realpath(posixpath.dirname(self.final))
        self.item_real = posixpath.join(self.root_real, posixpath.basename(self.final))

    def target_of(self, name: str) -> str:
        return posixpath.join(self.final, *member_parts(name, self.top))

    def _check_parent(self, target: str) -> None:
        """The directory `target` goes in must really (symbolic links resolved) lie inside the item (the root, for
        the item itself)."""
        parent = posixpath.dirname(target)
        real = self._real_dirs.get(parent)
        if real is None:
            real = os.path.realpath(parent)
            limit = self.root_real if target == self.final else self.item_real
            if not inside(real, limit):
                raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"refusing to write {target}: {parent} leads outside {limit}")
            self._real_dirs[parent] = real
        if not os.path.isdir(real):
            raise FileOpError(grpc.StatusCode.FAILED_PRECONDITION,
                              f"cannot create {target}: {parent} is not a directory")

    def extract(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        target = self.target_of(member.name)
        self._check_parent(target)
        existing = check_replace(target, member.isdir(), self.overwrite)
        mode = member.mode & 0o7777
        if member.isdir():
            if existing is None:
                os.mkdir(target, 0o700)
            self._dirs.append((target, mode, member.mtime))
            self.entries += 1
            return
        if member.issym():
            check_symlink(target, member.linkname, self.root_real)
        elif member.islnk():
            source = self.target_of(member.linkname)
            self._check_parent(source)
            if not os.path.lexists(source):
                raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"hard link {target} names {member.linkname!r}, which is not in the archive")
        elif not (member.isreg() or member.ischr() or member.isblk() or member.isfifo()):
            raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"archive member {member.name!r} has an unsupported type {member.type!r}")
        if existing is not None:
            os.unlink(target)
        if member.isreg():
            self._write_file(tf, member, target, mode)
        elif member.issym():
            os.symlink(member.linkname, target)
            self._real_dirs.clear()  # a new link can change where paths already checked lead
        elif member.islnk():
            os.link(source, target, follow_symlinks=False)
        elif member.isfifo():
            os.mkfifo(target, 0o600)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(target, 0o600 | kind, os.makedev(member.devmajor, member.devminor))
        if not member.isreg() and not member.islnk():
            if not member.issym():
                os.chmod(target, mode)
            os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
        self.entries += 1

    def _write_file(self, tf: tarfile.TarFile, member: tarfile.TarInfo, target: str, mode: int) -> None:
        source = tf.extractfile(member)
        assert source is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            remaining = member.size
            while remaining > 0:
                data = source.read(min(CHUNK, remaining))
                if not data:
                    raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"the archive ended in the middle of {member.name!r}")
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                remaining -= len(data)
                self.bytes_written += len(data)
            os.fchmod(fd, mode)
            os.utime(fd, (member.mtime, member.mtime))
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        os.close(fd)

    def finish(self) -> None:
        """Directories' modes and times last (deepest first): creating their contents changed them."""
        for path, mode, mtime in sorted(self._dirs, key=lambda d: d[0], reverse=True):
            os.chmod(path, mode)
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def upload(requests: Iterator[pb.UploadRequest]) -> pb.UploadReply:
    first = next(requests, None)
    if first is None or first.WhichOneof("kind") != "start":
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, "the first message of an upload must be `start`")
    start = first.start
    reader = RequestReader(requests)
    try:
        tf = tarfile.open(fileobj=reader, mode="r|", bufsize=STREAM_BUFSIZE)  # type: ignore[call-overload]  # noqa: SIM115
    except tarfile.ReadError as exc:
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"the upload is not a tar archive: {exc}") from None
    with tf:
        member = tf.next()
        if member is None:
            raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, "the uploaded archive is empty")
        top = top_name(member.name)
        final = resolve_destination(start.dest, top, member.isdir(), start.overwrite)
        extractor = Extractor(final=final, top=top, overwrite=start.overwrite)
        try:
            while member is not None:
                extractor.extract(tf, member)
                tf.members.clear()  # stream mode keeps every header otherwise
                member = tf.next()
        except tarfile.TarError as exc:
            raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"bad archive: {exc}") from None
        except OSError as exc:
            raise _os_error(exc, f"copying to {final}") from None
        reader.drain()
        if not reader.finished:
            raise FileOpError(grpc.StatusCode.ABORTED, f"the upload to {final} was cut short; it may be incomplete")
        extractor.finish()
    return pb.UploadReply(path=final, entries=extractor.entries, bytes=extractor.bytes_written)


# -- Download: generating an archive -----------------------------------------------------------------------------
def tarinfo_for(path: str, name: str, st: os.stat_result, hardlinks: dict[tuple[int, int], str]) -> tarfile.TarInfo:
    """The header for `path` (lstat `st`) as archive member `name`, without owner names."""
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)  # whole seconds, as `docker cp`: a fraction costs a pax header per entry
    info.size = 0
    fmt = st.st_mode
    if stat.S_ISREG(fmt):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in hardlinks:
            info.type, info.linkname = tarfile.LNKTYPE, hardlinks[key]
        else:
            if st.st_nlink > 1:
                hardlinks[key] = name
            info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(fmt):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(fmt):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISFIFO(fmt):
        info.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(fmt) or stat.S_ISBLK(fmt):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(fmt) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        raise ValueError("sockets and other special files are not archived")
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _walk(path: str, name: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, member name, lstat) of `path` and, for a directory, everything below it, parents first.

    Entries that vanish while the walk runs are skipped; symbolic links are never followed."""
    stack = [(path, name)]
    while stack:
        p, n = stack.pop()
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        yield p, n, st
        if stat.S_ISDIR(st.st_mode):
            try:
                children = sorted(os.listdir(p), reverse=True)
            except FileNotFoundError:
                continue
            stack.extend((posixpath.join(p, c), f"{n}/{c}") for c in children)


def download(request: pb.DownloadRequest) -> Iterator[bytes]:
    """Check the request (raising before the first chunk) and return the archive's chunks."""
    path = request.path
    if not path or not path.startswith("/"):
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"the source must be an absolute path: {path[:200]!r}")
    check_path(path, "the source")
    check_path(request.name, "the name")
    norm = posixpath.normpath(path)
    name = request.name or posixpath.basename(norm)
    if not name or "/" in name or name in (".", ".."):
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"cannot name the copy of {path} {name!r}" if request.name else
                          "cannot copy the whole root directory; copy its entries one by one")
    # A trailing "/" asks for a directory: a link to one is followed, as `cp` and `docker cp` do.
    follow = request.follow_symlinks or path.endswith("/")
    try:
        st = os.stat(norm) if follow else os.lstat(norm)
    except FileNotFoundError:
        raise FileOpError(grpc.StatusCode.NOT_FOUND, f"no such file or directory in the box: {path}") from None
    except OSError as exc:
        raise _os_error(exc, f"cannot read {path}") from None
    if path.endswith("/") and not stat.S_ISDIR(st.st_mode):
        raise FileOpError(grpc.StatusCode.FAILED_PRECONDITION, f"{path} is not a directory")
    if stat.S_ISSOCK(st.st_mode):
        raise FileOpError(grpc.StatusCode.FAILED_PRECONDITION, f"{path} is a socket; sockets cannot be copied")
    source = os.path.realpath(norm) if follow else norm
    return _archive(source, name)


def _archive(source: str, name: str) -> Iterator[bytes]:
    buf = bytearray()
    hardlinks: dict[tuple[int, int], str] = {}
    written = 0
    for path, member, st in _walk(source, name):
        try:
            info = tarinfo_for(path, member, st, hardlinks)
        except ValueError:
            continue  # a socket below the copied directory: tar skips those too
        except FileNotFoundError:
            continue
        fd = -1
        if info.isreg() and info.size:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
        header = _header(info)
        buf += header
        written += len(header)
        if fd < 0:
            continue
        try:
            remaining = info.size
            while remaining > 0:
                if len(buf) >= CHUNK:
                    yield bytes(buf)
                    buf.clear()
                data = os.read(fd, min(CHUNK - len(buf), remaining))
                if not data:  # the file shrank since its header: keep the archive well-formed
                    data = bytes(min(CHUNK, remaining))
                buf += data
                remaining -= len(data)
        finally:
            os.close(fd)
        written += info.size
        if info.size % BLOCKSIZE:
            pad = BLOCKSIZE - info.size % BLOCKSIZE
            buf += bytes(pad)
            written += pad
        if len(buf) >= CHUNK:
            yield bytes(buf)
            buf.clear()
    # The end: two empty blocks, the archive padded to a whole record (as tarfile writes it).
    end = 2 * BLOCKSIZE
    end += -(written + end) % RECORDSIZE
    buf += bytes(end)
    yield bytes(buf)


# -- the service -------------------------------------------------------------------------------------------------
class FilesService(pb_grpc.FilesServicer):
    def Upload(self, request_iterator: Iterator[pb.UploadRequest], context: Any) -> pb.UploadReply:
        """An Upload never ends while the client may still be writing: when a grpc.aio client's write fails
        because the RPC has ended, it reports INTERNAL "Internal error from Core" instead of the status sent
        (grpc/grpc#36066). So a failure is announced at once with the initial metadata UPLOAD_FAILED, on which
        the client stops sending and half-closes; the rest of the stream is read and dropped, then the status
        is sent."""
        try:
            return upload(request_iterator)
        except FileOpError as exc:
            error = exc
        except OSError as exc:
            error = _os_error(exc, "copy into the box")
        except (ValueError, OverflowError) as exc:  # a header field no file can have (a time out of range, ...)
            error = FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"bad archive: {exc}")
        except grpc.RpcError:
            context.abort(grpc.StatusCode.CANCELLED, "the client went away during the upload")
        with contextlib.suppress(Exception):
            context.send_initial_metadata(((UPLOAD_FAILED, error.code.name),))
            for _ in request_iterator:
                pass
        context.abort(error.code, error.message)
        raise AssertionError("unreachable")  # context.abort raises

    def Download(self, request: pb.DownloadRequest, context: Any) -> Iterator[pb.DownloadChunk]:
        try:
            chunks = download(request)
            for data in chunks:
                yield pb.DownloadChunk(data=data)
        except FileOpError as exc:
            context.abort(exc.code, exc.message)
        except OSError as exc:
            error = _os_error(exc, f"copying {request.path[:200]} out of the box")
            context.abort(error.code, error.message)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot copy {request.path[:200]!r}: {exc}")

    def List(self, request: pb.ListRequest, context: Any) -> pb.ListReply:
        try:
            return pb.ListReply(entries=list_entries(request.path))
        except FileOpError as exc:
            context.abort(exc.code, exc.message)
        except OSError as exc:
            error = _os_error(exc, f"listing {request.path[:200]}")
            context.abort(error.code, error.message)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot list {request.path[:200]!r}: {exc}")
        raise AssertionError("unreachable")  # context.abort raises


def _entry(path: str, name: str) -> pb.FileEntry:
    st = os.lstat(path)
    kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
            else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
    return pb.FileEntry(name=name, path=path, type=kind, size=st.st_size, mode=stat.S_IMODE(st.st_mode),
                        mtime=st.st_mtime, target=os.readlink(path) if kind == "symlink" else "")


def list_entries(path: str) -> list[pb.FileEntry]:
    """A directory's entries sorted by name (entries that vanish meanwhile are skipped), or the path itself."""
    if not path.startswith("/"):
        raise FileOpError(grpc.StatusCode.INVALID_ARGUMENT, f"{path[:200]!r} is not an absolute path in the box")
    check_path(path, "the path")
    path = os.path.normpath(path)
    if not os.path.isdir(path):
        return [_entry(path, os.path.basename(path) or "/")]
    entries = []
    for name in sorted(os.listdir(path)):
        with contextlib.suppress(FileNotFoundError):
            entries.append(_entry(os.path.join(path, name), name))
    return entries
