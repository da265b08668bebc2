"""Copying files and directories into and out of a box (Box.copy_in / Box.copy_out), `docker cp` style.

Both directions stream a tar archive over the portal (the Files service of proto/portal.proto) in ~1 MiB
messages; neither side ever holds more than a few chunks in memory:

  copy_in:  a worker thread writes the archive with tarfile's stream mode ("w|") into a small bounded channel;
            the client-streaming Upload call sends it as it comes. The agent extracts it as it arrives.
  copy_out: the server-streaming Download call fills the channel; a worker thread extracts with tarfile's stream
            mode ("r|") and the "data" filter, plus the checks below.

The agent's problems arrive as gRPC statuses (NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION)
and become NotFoundError, AlreadyExistsError and ExecutionError. A refused upload is announced at once with
initial metadata, so the client stops sending early (and gets the agent's status, not INTERNAL: grpc#36066).

Rules (both directions): the source is a file, a directory (copied recursively) or, with follow_symlinks=False
(the default), a symbolic link copied as a link. If the destination is an existing directory the source goes
inside it under its own name; otherwise the destination is the new name and its parent must exist. A trailing
"/" on the destination demands an existing directory. Existing directories are merged into; an existing
non-directory is replaced unless overwrite=False (then AlreadyExistsError, naming it). Relative paths in the
box are taken from its root, as `docker cp` does.

Modes and modification times (whole seconds, as `docker cp` keeps them) are kept. Ownership: in the box
everything copied in belongs to root; on the host everything copied out belongs to the calling user. Copied out,
setuid/setgid/sticky bits are dropped (the data filter's rule); group and other write bits are kept.

Safety: the agent refuses archive members that are absolute, contain "..", or would be written through a link
leading out of the destination, and symbolic links that are absolute or point out of it (see guest/files.py).
The host applies tarfile's "data" filter, which refuses the same things plus device nodes and FIFOs, and
checks that every member lies under the copied item. A directory containing such a link cannot be copied out.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio
import grpc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from boxlite._errors import AlreadyExistsError, BoxliteError, ExecutionError, NotFoundError, PortalError
from boxlite._portal import portal_pb2 as pb

if TYPE_CHECKING:
    from boxlite._box import Box

CHUNK = 1 << 20
# tarfile's stream buffer: it copies its whole buffer on every small write or header read, so keep it modest.
STREAM_BUFSIZE = 64 * 1024
# Chunks in flight between the tar thread and the gRPC stream.
QUEUE_CHUNKS = 4
# Initial metadata with which the agent announces a failed upload before its status (guest/files.py, Upload).
UPLOAD_FAILED = "boxlite-upload-failed"


# -- pure path logic (unit-tested) -------------------------------------------------------------------------------
def box_path(path: str) -> str:
    """A path in the box: relative paths are taken from the box's root, as `docker cp` does."""
    if not path:
        raise ExecutionError("no path in the box given", fix="pass an absolute path such as /tmp/file")
    trailing = "/" if path.endswith("/") and path.strip("/") else ""
    return "/" + posixpath.normpath(posixpath.join("/", path)).lstrip("/") + trailing


def source_name(path: str) -> str:
    """The name a copied item keeps: the last component of its path."""
    name = posixpath.basename(posixpath.normpath(path))
    if name in ("", "/", ".", ".."):
        raise ExecutionError(f"cannot copy {path!r} as a whole: it has no name of its own",
                             fix="copy the entries inside it one by one")
    return name


def resolve_host_dest(host_dest: Path | str, name: str) -> Path:
    """Where a copied item named `name` lands on the host for `host_dest` (docker cp rules).

    Only the destination's shape is checked here; whether the item may replace what is there is checked when its
    type is known (check_host_target)."""
    raw = os.fspath(host_dest)
    dest = Path(os.path.abspath(raw))
    if dest.is_dir():
        return dest / name
    if raw.endswith("/"):
        if os.path.lexists(dest):
            raise ExecutionError(f"cannot copy to {raw}: it is not a directory",
                                 fix="name a directory, or drop the trailing '/' to replace the file")
        raise NotFoundError(f"host directory not found: {raw}",
                            fix="create it first, or drop the trailing '/' to copy under that name")
    parent = dest.parent
    if not parent.is_dir():
        if os.path.lexists(parent):
            raise ExecutionError(f"cannot copy to {raw}: {parent} is not a directory", fix="choose another destination")
        raise NotFoundError(f"host directory not found: {parent} (the parent of {raw})",
                            fix=f"create it first (mkdir -p {parent})")
    return dest


def check_host_target(target: Path, is_dir: bool, overwrite: bool) -> bool:
    """Whether an entry (a directory when is_dir) may be written at `target`: True if something non-directory
    is there that must be removed first; raises if it may not."""
    try:
        st = target.lstat()
    except FileNotFoundError:
        return False
    if target.is_dir() and not target.is_symlink():
        if not is_dir:
            raise ExecutionError(f"cannot overwrite directory {target} with a non-directory",
                                 fix="remove the directory, or copy to another destination")
        return False
    if is_dir:
        raise ExecutionError(f"cannot overwrite non-directory {target} with a directory",
                             fix="remove it, or copy to another destination")
    if not overwrite:
        raise AlreadyExistsError(f"file already exists: {target}",
                                 fix="pass overwrite=True to replace it, or copy to another destination")
    return st is not None


def member_target(name: str, top: str, root: Path) -> Path:
    """The host path of archive member `name` under extraction directory `root`; it must lie under the copied
    item `top` (no absolute names, no "..")."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts or parts[0] != top:
        raise ExecutionError(f"refusing archive member {name!r} from the box: it is not under {top!r}",
                             fix="this is a bug in the box's agent or a tampered box; do not trust its files")
    target = root.joinpath(*parts)
    if os.path.commonpath([os.path.abspath(target), os.path.abspath(root)]) != os.path.abspath(root):
        raise ExecutionError(f"refusing archive member {name!r}: it would land outside {root}",
                             fix="this is a bug in the box's agent or a tampered box; do not trust its files")
    return target


class CopyOutFilter:
    """tarfile's "data" filter, plus: every member lies under `top`, existing files are only replaced with
    overwrite, and permission bits (but for setuid/setgid/sticky) are kept. `writing` is the regular file being
    extracted (None between members), to remove if the copy stops in its middle."""

    def __init__(self, top: str, root: Path, overwrite: bool) -> None:
        self.top, self.root, self.overwrite = top, root, overwrite
        self.writing: Path | None = None

    def __call__(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        self.writing = None
        target = member_target(member.name, self.top, self.root)
        try:
            filtered = tarfile.data_filter(member, path)
        except tarfile.FilterError as exc:
            raise ExecutionError(f"refusing {member.name!r} from the box: {exc}",
                                 fix="links must be relative and stay inside the copied directory, and special "
                                 "files cannot be copied out; copy the other entries one by one") from None
        if member.isreg() or member.isdir():
            filtered = filtered.replace(mode=member.mode & 0o777, deep=False)
        if check_host_target(target, member.isdir(), self.overwrite):
            target.unlink()  # replaced, not written through (it may be a link, or a hard link to elsewhere)
        if member.isreg():
            self.writing = target
        return filtered


# -- streaming adapters ----------------------------------------------------------------------------------------
class Sink(Protocol):
    def write(self, data: bytes) -> int: ...
    def flush(self) -> None: ...


class Source(Protocol):
    def read(self, n: int = -1) -> bytes: ...


class _ChannelWriter:
    """A write-only file for tarfile (in a worker thread): collects ~1 MiB chunks, sends them to the loop."""

    def __init__(self, send: MemoryObjectSendStream[bytes]) -> None:
        self.send = send
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            chunk = bytes(self.buf)
            self.buf.clear()
            anyio.from_thread.run(self.send.send, chunk)


class _ChannelReader:
    """A read-only file for tarfile (in a worker thread) over the chunks the loop receives."""

    def __init__(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        self.receive = receive
        self.view = memoryview(b"")
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        if not self.view:
            if self.eof:
                return b""
            try:
                self.view = memoryview(anyio.from_thread.run(self.receive.receive))
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                self.eof = True
                return b""
        if n < 0 or n > len(self.view):
            n = len(self.view)
        out = bytes(self.view[:n])
        self.view = self.view[n:]
        return out


# -- errors -------------------------------------------------------------------------------------------------------
def _rpc_error(box: Box, exc: grpc.aio.AioRpcError, action: str, fix: str) -> BoxliteError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(f"{action}: {details}", fix=fix)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExistsError(f"{action}: {details}",
                                  fix="pass overwrite=True to replace it, or copy to another destination")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ExecutionError(f"{action}: {details}", fix="free space in the box, or give it a larger disk")
    if code == grpc.StatusCode.INVALID_ARGUMENT and "symbolic link" in details:
        return ExecutionError(f"{action}: {details}", fix="links in a copied directory must be relative and stay "
                              "inside it: make the link relative, or copy the other entries one by one")
    if code == grpc.StatusCode.ABORTED:
        return ExecutionError(f"{action}: {details}", fix="copy it again")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED):
        return ExecutionError(f"{action}: {details}", fix="check the paths in the box and on the host")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return PortalError(f"{action}: the agent in box {box.id} cannot copy files (it runs an older guest)",
                           fix=f"stop and start the box (`boxlite stop {box.id}`, `boxlite start {box.id}`)")
    explained = box._explain_portal_failure()
    if isinstance(explained, PortalError):  # the agent is reachable, or nothing says otherwise: keep the cause
        return PortalError(f"{action}: {code.name}: {details}; {explained.detail}", fix=explained.fix)
    return explained


class _Unimplemented(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNIMPLEMENTED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                         details="Method not found!")


async def _lacks_files_service(box: Box) -> bool:
    try:
        async for _ in box._client.files.Download(pb.DownloadRequest(path="/"), timeout=5.0):
            break
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.UNIMPLEMENTED
    return False


# -- copy_in ------------------------------------------------------------------------------------------------------
def _host_source(host_path: Path | str, follow_symlinks: bool) -> tuple[str, str]:
    """(the path to archive, the name it keeps) for a host source."""
    raw = os.fspath(host_path)
    path = os.path.abspath(raw)
    if not os.path.lexists(path):
        raise NotFoundError(f"host path not found: {raw}", fix="check the path (relative paths are taken from "
                            f"the current directory, {os.getcwd()})")
    name = source_name(path)
    follow = follow_symlinks or (raw.endswith("/") and os.path.isdir(path))
    if follow and os.path.islink(path):
        if not os.path.exists(path):
            raise NotFoundError(f"host path {raw} is a broken symbolic link (to {os.readlink(path)})",
                                fix="pass follow_symlinks=False to copy the link itself")
        path = os.path.realpath(path)
    return path, name


def write_archive(path: str, name: str, writer: Sink) -> None:
    """Write the archive of host `path` (its first member named `name`) to `writer`, streamed."""
    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        # Owners are not carried into the box (everything there belongs to root); keep host names private.
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        # Whole seconds, as `docker cp` sends them: a fractional mtime costs a pax header (1 KiB) per entry.
        info.mtime = int(info.mtime)
        return info

    with tarfile.open(fileobj=writer, mode="w|", bufsize=STREAM_BUFSIZE, format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      copybufsize=STREAM_BUFSIZE) as tf:
        tf.add(path, arcname=name, recursive=True, filter=normalize)
    writer.flush()


async def copy_in(box: Box, host_path: Path | str, container_dest: str, *, overwrite: bool = True,
                  follow_symlinks: bool = False) -> None:
    box._require_running("copy files into the box")
    source, name = _host_source(host_path, follow_symlinks)
    dest = box_path(container_dest)
    send, receive = anyio.create_memory_object_stream[bytes](QUEUE_CHUNKS)
    produced = anyio.Event()  # set when the producer has stopped; `complete` says whether it wrote everything
    complete = False
    failure: list[Exception] = []
    sent = 0

    def produce() -> None:
        with send:
            write_archive(source, name, _ChannelWriter(send))

    async def run_producer() -> None:
        nonlocal complete
        try:
            await anyio.to_thread.run_sync(produce)
            complete = True
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the upload stopped first; its status says why
        except Exception as exc:  # reported after the upload call has ended
            failure.append(exc)
        finally:
            produced.set()

    def stop_sending() -> None:
        nonlocal complete
        complete = False
        send.close()
        receive.close()

    async def requests() -> AsyncIterator[pb.UploadRequest]:
        nonlocal sent
        yield pb.UploadRequest(start=pb.UploadStart(dest=dest, overwrite=overwrite))
        try:
            async for chunk in receive:
                sent += len(chunk)
                yield pb.UploadRequest(data=chunk)
        except (anyio.ClosedResourceError, anyio.EndOfStream):
            return
        await produced.wait()
        if complete:
            yield pb.UploadRequest(finish=True)
        # Otherwise the stream ends without `finish`, and the agent does not report the upload done.

    async def watch(call: grpc.aio.StreamUnaryCall) -> None:
        # The agent announces a failure before its status: stop sending then (see guest/files.py, Upload).
        with contextlib.suppress(Exception):
            metadata = await call.initial_metadata()
            if any(key == UPLOAD_FAILED for key, _ in metadata or ()):
                stop_sending()

    rpc_error: grpc.aio.AioRpcError | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_producer)
            call = box._client.files.Upload(requests())
            tg.start_soon(watch, call)  # returns when the call ends, at the latest (with empty metadata)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                rpc_error = exc
            finally:
                stop_sending()  # stops the producer if the upload ended early
    finally:
        if sent:
            box._runtime._store.bump(f"box:{box.id}:bytes_sent", sent)
    action = f"copy {os.fspath(host_path)} into box {box.id} at {container_dest}"
    if failure:
        problem = failure[0]
        if isinstance(problem, BoxliteError):
            raise problem
        if isinstance(problem, OSError):
            raise ExecutionError(f"{action}: cannot read {problem.filename or source}: {problem.strerror or problem}",
                                 fix="check the host file's permissions") from None
        raise problem
    if rpc_error is not None:
        if rpc_error.code() == grpc.StatusCode.INTERNAL and await _lacks_files_service(box):
            # gRPC may report an early refusal of a client stream as INTERNAL (grpc/grpc#36066); a
            # server-streaming probe gets the real answer from an agent that has no Files service.
            rpc_error = _Unimplemented()
        raise _rpc_error(box, rpc_error, action,
                         fix="create the destination's parent directory in the box first, or check the path")


# -- copy_out -----------------------------------------------------------------------------------------------------
def _members(tf: tarfile.TarFile, flt: CopyOutFilter) -> Iterator[tarfile.TarInfo]:
    """The members one by one, as the stream delivers them (without keeping every header in tf.members)."""
    while (member := tf.next()) is not None:
        yield member
        flt.writing = None  # extracted in full
        tf.members.clear()  # type: ignore[attr-defined]


def extract_archive(reader: Source, root: Path, top: str, overwrite: bool) -> None:
    """Extract the streamed archive of a copied item `top` into host directory `root`, with the checks above.

    If it stops in the middle of a file (an error, a cancellation), that file is removed; what was extracted
    before it stays."""
    flt = CopyOutFilter(top, root, overwrite)
    with tarfile.open(fileobj=reader, mode="r|", bufsize=STREAM_BUFSIZE,  # type: ignore[call-overload]
                      copybufsize=CHUNK) as tf:
        try:
            tf.extractall(root, members=_members(tf, flt), filter=flt)
        except BaseException:
            if flt.writing is not None:
                flt.writing.unlink(missing_ok=True)
            raise


async def copy_out(box: Box, container_src: str, host_dest: Path | str, *, overwrite: bool = True,
                   follow_symlinks: bool = False) -> None:
    box._require_running("copy files out of the box")
    src = box_path(container_src)
    name = source_name(src)
    target = resolve_host_dest(host_dest, name)
    root, top = target.parent, target.name
    send, receive = anyio.create_memory_object_stream[bytes](QUEUE_CHUNKS)
    call = box._client.files.Download(pb.DownloadRequest(path=src, follow_symlinks=follow_symlinks, name=top))
    rpc_error: grpc.aio.AioRpcError | None = None
    extract_error: list[Exception] = []
    received = 0

    async def pump() -> None:
        nonlocal rpc_error, received
        with send:
            try:
                async for msg in call:
                    data = msg.data  # each access to a bytes field copies it
                    received += len(data)
                    await send.send(data)
            except grpc.aio.AioRpcError as exc:
                rpc_error = exc
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                call.cancel()  # the extraction has stopped (it says why, or it is complete)

    async def extract() -> None:
        with receive:
            try:
                await anyio.to_thread.run_sync(extract_archive, _ChannelReader(receive), root, top, overwrite)
            except Exception as exc:
                extract_error.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            tg.start_soon(extract)
    finally:
        if received:
            box._runtime._store.bump(f"box:{box.id}:bytes_received", received)
    action = f"copy {container_src} out of box {box.id}"
    if rpc_error is not None:
        raise _rpc_error(box, rpc_error, action, fix="check the path in the box (e.g. "
                         f"`await box.exec('ls', '-la', {posixpath.dirname(src.rstrip('/')) or '/'!r})`)")
    if extract_error:
        problem = extract_error[0]
        if isinstance(problem, BoxliteError):
            raise problem
        if isinstance(problem, OSError):
            raise ExecutionError(f"{action} to {target}: {problem.strerror or problem}: {problem.filename or target}",
                                 fix="check the host destination (space, permissions)") from None
        if isinstance(problem, tarfile.TarError):
            raise ExecutionError(f"{action}: the archive from the box is damaged: {problem}",
                                 fix="try again; restart the box if it persists") from None
        raise problem


# -- whole files in memory (CodeBox.files) ------------------------------------------------------------------------
async def upload_archive(box: Box, archive: bytes, dest: str, *, overwrite: bool = True) -> None:
    """Send an in-memory archive (a tar whose first member is the item itself) to `dest` in the box."""
    box._require_running("write files into the box")

    async def requests() -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(start=pb.UploadStart(dest=box_path(dest), overwrite=overwrite))
        for start in range(0, len(archive), CHUNK):
            yield pb.UploadRequest(data=archive[start:start + CHUNK])
        yield pb.UploadRequest(finish=True)

    try:
        await box._client.files.Upload(requests(), timeout=300)
    except grpc.aio.AioRpcError as exc:
        raise _rpc_error(box, exc, f"write {dest} in box {box.id}",
                         fix="check that the path's parent exists in the box and is a directory") from None
    box._runtime._store.bump(f"box:{box.id}:bytes_sent", len(archive))


async def download_file(box: Box, path: str) -> bytes:
    """The content of one regular file in the box (following a symbolic link)."""
    box._require_running("read files from the box")
    action = f"read {path} in box {box.id}"
    try:
        listing = await box._client.files.List(pb.ListRequest(path=box_path(path)), timeout=30)
        if len(listing.entries) != 1 or listing.entries[0].path != posixpath.normpath(box_path(path)) \
                or listing.entries[0].type == "dir":
            raise ExecutionError(f"{action}: it is a directory", fix="use files.list() to see its entries, or "
                                 "copy_out() to copy it to the host")
        data = bytearray()
        async for chunk in box._client.files.Download(pb.DownloadRequest(path=box_path(path), follow_symlinks=True),
                                                      timeout=300):
            data += chunk.data
    except grpc.aio.AioRpcError as exc:
        raise _rpc_error(box, exc, action, fix="check the path (files.list() shows a directory's entries)") from None
    box._runtime._store.bump(f"box:{box.id}:bytes_received", len(data))
    with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:") as tf:
        member = tf.next()
        if member is None or not member.isfile():
            raise ExecutionError(f"{action}: it is not a regular file", fix="read regular files only")
        extracted = tf.extractfile(member)
        assert extracted is not None
        return extracted.read()
