"""Copying files in and out of a box, without a VM: destination rules, safe extraction on both sides, and the
host's archive writer and the agent's extractor (and vice versa) talking to each other in-process."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import boxlite
from boxlite import _files as host
from guest import files as agent
from guest._portal import portal_pb2 as gpb


# -- helpers ---------------------------------------------------------------------------------------------------
class Collect:
    """A Sink that keeps the archive's chunks."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)

    def flush(self) -> None:
        if self.buf:
            self.chunks.append(bytes(self.buf))
            self.buf.clear()


def host_archive(path: Path, name: str | None = None) -> bytes:
    sink = Collect()
    host.write_archive(str(path), name or path.name, sink)
    return b"".join(sink.chunks)


def requests(dest: str, archive: bytes, overwrite: bool = True, finish: bool = True,
             chunk: int = 7000) -> Iterator[gpb.UploadRequest]:
    yield gpb.UploadRequest(start=gpb.UploadStart(dest=dest, overwrite=overwrite))
    for i in range(0, len(archive), chunk):
        yield gpb.UploadRequest(data=archive[i:i + chunk])
    if finish:
        yield gpb.UploadRequest(finish=True)


def upload(dest: Path | str, archive: bytes, **kw: bool) -> gpb.UploadReply:
    return agent.upload(requests(str(dest), archive, **kw))


def download(path: Path | str, name: str = "", follow: bool = False) -> bytes:
    return b"".join(agent.download(gpb.DownloadRequest(path=str(path), name=name, follow_symlinks=follow)))


def extract_on_host(archive: bytes, root: Path, top: str, overwrite: bool = True) -> None:
    host.extract_archive(io.BytesIO(archive), root, top, overwrite)


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
          mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 1_600_000_000
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def status_of(excinfo: pytest.ExceptionInfo[agent.FileOpError]) -> grpc.StatusCode:
    return excinfo.value.code


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """src/ with a nested file, an executable, an empty dir, a relative symlink and a hard link."""
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "deeper" / "b.bin").write_bytes(os.urandom(70_000))
    run = src / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o750)
    (src / "link").symlink_to("sub/deeper/b.bin")
    os.link(src / "a.txt", src / "hard.txt")
    os.utime(src / "a.txt", (1_500_000_000, 1_500_000_000))
    (src / "sub").chmod(0o711)
    os.utime(src / "sub", (1_400_000_000, 1_400_000_000))
    return src


def snapshot(root: Path) -> dict[str, tuple[str, int, object]]:
    """Relative path -> (kind, permission bits, content or link target), and mtimes of files and dirs."""
    out: dict[str, tuple[str, int, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", 0, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), (p.read_bytes(), int(st.st_mtime)))
    return out


# -- host: paths and destinations ------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    ("/tmp/x", "/tmp/x"), ("tmp/x", "/tmp/x"), ("/tmp/x/", "/tmp/x/"), ("/a/../b", "/b"), ("/", "/"),
    ("//etc///hosts", "/etc/hosts"),
])
def test_box_path_is_absolute_from_the_root(given: str, expected: str) -> None:
    assert host.box_path(given) == expected


@pytest.mark.parametrize("path", ["/", "/tmp/..", "."])
def test_source_without_a_name_is_refused(path: str) -> None:
    with pytest.raises(boxlite.ExecutionError, match="no name of its own"):
        host.source_name(path)


def test_host_dest_existing_dir_receives_the_item(tmp_path: Path) -> None:
    assert host.resolve_host_dest(tmp_path, "f.txt") == tmp_path / "f.txt"
    assert host.resolve_host_dest(str(tmp_path) + "/", "f.txt") == tmp_path / "f.txt"


def test_host_dest_new_name(tmp_path: Path) -> None:
    assert host.resolve_host_dest(tmp_path / "new", "f.txt") == tmp_path / "new"
    (tmp_path / "existing").write_text("x")
    assert host.resolve_host_dest(tmp_path / "existing", "f.txt") == tmp_path / "existing"


def test_host_dest_missing_parent_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(boxlite.NotFoundError) as info:
        host.resolve_host_dest(tmp_path / "no" / "such", "f")
    assert "host directory not found" in str(info.value) and "mkdir -p" in str(info.value)
    with pytest.raises(boxlite.NotFoundError):
        host.resolve_host_dest(str(tmp_path / "nodir") + "/", "f")
    (tmp_path / "file").write_text("x")
    with pytest.raises(boxlite.ExecutionError, match="not a directory"):
        host.resolve_host_dest(tmp_path / "file" / "x", "f")


def test_host_target_rules(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to("d")
    assert host.check_host_target(tmp_path / "none", False, False) is False
    assert host.check_host_target(tmp_path / "d", True, False) is False  # merge
    assert host.check_host_target(tmp_path / "f", False, True) is True  # replace
    assert host.check_host_target(tmp_path / "l", False, True) is True  # a link is replaced, not followed
    with pytest.raises(boxlite.AlreadyExistsError, match=str(tmp_path / "f")):
        host.check_host_target(tmp_path / "f", False, False)
    with pytest.raises(boxlite.ExecutionError, match="cannot overwrite directory"):
        host.check_host_target(tmp_path / "d", False, True)
    with pytest.raises(boxlite.ExecutionError, match="cannot overwrite non-directory"):
        host.check_host_target(tmp_path / "f", True, True)


@pytest.mark.parametrize("name", ["/etc/passwd", "top/../../x", "other/x", "..", ""])
def test_host_member_outside_the_item_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(boxlite.ExecutionError, match="refusing archive member"):
        host.member_target(name, "top", tmp_path)


def test_host_member_target(tmp_path: Path) -> None:
    assert host.member_target("top", "top", tmp_path) == tmp_path / "top"
    assert host.member_target("top/./a//b", "top", tmp_path) == tmp_path / "top" / "a" / "b"


# -- host: extracting what the box sends -------------------------------------------------------------------------
@pytest.mark.parametrize(("members", "message"), [
    ([entry("top", tarfile.DIRTYPE), entry("top/../evil", data=b"x")], "refusing archive member"),
    ([entry("top", tarfile.DIRTYPE), entry("/abs", data=b"x")], "refusing archive member"),
    ([entry("top", tarfile.DIRTYPE), entry("top/l", tarfile.SYMTYPE, linkname="/etc/passwd")], "refusing"),
    ([entry("top", tarfile.DIRTYPE), entry("top/l", tarfile.SYMTYPE, linkname="../../x")], "refusing"),
    ([entry("top", tarfile.DIRTYPE), entry("top/h", tarfile.LNKTYPE, linkname="../outside")], "refusing"),
    ([entry("top", tarfile.DIRTYPE), entry("top/dev", tarfile.CHRTYPE)], "special files"),
])
def test_host_refuses_unsafe_members(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
                                     message: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").write_text("secret")
    with pytest.raises(boxlite.ExecutionError, match=message):
        extract_on_host(make_tar(*members), root, "top")
    assert (tmp_path / "outside").read_text() == "secret"
    assert not (tmp_path / "evil").exists()


def test_host_refuses_writing_through_a_link_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "top").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "top" / "sneaky").symlink_to(tmp_path / "elsewhere")
    archive = make_tar(entry("top", tarfile.DIRTYPE), entry("top/sneaky/x", data=b"boom"))
    with pytest.raises(boxlite.ExecutionError):
        extract_on_host(archive, root, "top")
    assert not (tmp_path / "elsewhere" / "x").exists()


def test_host_overwrite_false_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "top").write_text("old")
    with pytest.raises(boxlite.AlreadyExistsError, match="top"):
        extract_on_host(make_tar(entry("top", data=b"new")), tmp_path, "top", overwrite=False)
    assert (tmp_path / "top").read_text() == "old"
    extract_on_host(make_tar(entry("top", data=b"new")), tmp_path, "top", overwrite=True)
    assert (tmp_path / "top").read_text() == "new"


def test_host_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    (tmp_path / "victim").write_text("keep")
    (tmp_path / "top").symlink_to("victim")
    extract_on_host(make_tar(entry("top", data=b"new")), tmp_path, "top")
    assert not (tmp_path / "top").is_symlink()
    assert (tmp_path / "top").read_text() == "new"
    assert (tmp_path / "victim").read_text() == "keep"


# -- agent: paths and destinations --------------------------------------------------------------------------------
def test_inside() -> None:
    assert agent.inside("/a/b", "/a") and agent.inside("/a", "/a") and agent.inside("/x", "/")
    assert not agent.inside("/ab", "/a") and not agent.inside("/", "/a")


@pytest.mark.parametrize("name", ["/abs", "top/../x", "..", "other", "other/x", "./"])
def test_agent_member_parts_refuses(name: str) -> None:
    with pytest.raises(agent.FileOpError) as info:
        agent.member_parts(name, "top")
    assert status_of(info) == grpc.StatusCode.INVALID_ARGUMENT


def test_agent_member_parts() -> None:
    assert agent.member_parts("top", "top") == []
    assert agent.member_parts("./top/a/./b/", "top") == ["a", "b"]


@pytest.mark.parametrize("name", ["a/b", "/a", "..", "", "."])
def test_agent_top_name_must_be_plain(name: str) -> None:
    with pytest.raises(agent.FileOpError):
        agent.top_name(name)


def test_agent_destination_rules(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "dirlink").symlink_to("dir")
    # An existing directory (or a link to one) receives the item under its own name.
    assert agent.resolve_destination(str(d), "src", False, True) == f"{d}/src"
    assert agent.resolve_destination(f"{d}/", "src", True, True) == f"{d}/src"
    assert agent.resolve_destination(str(tmp_path / "dirlink"), "src", False, True) == f"{tmp_path}/dirlink/src"
    # Otherwise the destination is the new name.
    assert agent.resolve_destination(str(tmp_path / "new"), "src", True, True) == f"{tmp_path}/new"
    assert agent.resolve_destination(str(tmp_path / "file"), "src", False, True) == f"{tmp_path}/file"


@pytest.mark.parametrize(("dest", "is_dir", "overwrite", "code", "text"), [
    ("missing/child", False, True, grpc.StatusCode.NOT_FOUND, "parent directory"),
    ("missing/", False, True, grpc.StatusCode.NOT_FOUND, "does not exist"),
    ("file/", False, True, grpc.StatusCode.FAILED_PRECONDITION, "not a directory"),
    ("file/child", False, True, grpc.StatusCode.FAILED_PRECONDITION, "not a directory"),
    ("file", True, True, grpc.StatusCode.FAILED_PRECONDITION, "cannot overwrite non-directory"),
    ("file", False, False, grpc.StatusCode.ALREADY_EXISTS, "already exists"),
    ("relative", False, True, grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
    ("", False, True, grpc.StatusCode.INVALID_ARGUMENT, "no destination"),
])
def test_agent_destination_errors(tmp_path: Path, dest: str, is_dir: bool, overwrite: bool,
                                  code: grpc.StatusCode, text: str) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir" / "src").mkdir(parents=True)
    path = dest if dest in ("relative", "") else f"{tmp_path}/{dest}"
    with pytest.raises(agent.FileOpError) as info:
        agent.resolve_destination(path, "src", is_dir, overwrite)
    assert status_of(info) == code
    assert text in info.value.message


def test_agent_file_into_dir_where_a_dir_of_that_name_exists(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(agent.FileOpError, match="cannot overwrite directory"):
        agent.resolve_destination(str(tmp_path), "src", False, True)


@pytest.mark.parametrize("linkname", ["/etc/passwd", "../../outside", "a/../../../x"])
def test_agent_symlink_escaping_is_refused(tmp_path: Path, linkname: str) -> None:
    (tmp_path / "top").mkdir()
    with pytest.raises(agent.FileOpError) as info:
        agent.check_symlink(f"{tmp_path}/top/l", linkname, str(tmp_path))
    assert status_of(info) == grpc.StatusCode.INVALID_ARGUMENT


def test_agent_symlink_inside_is_fine(tmp_path: Path) -> None:
    (tmp_path / "top").mkdir()
    agent.check_symlink(f"{tmp_path}/top/l", "../top/x", str(tmp_path))
    agent.check_symlink(f"{tmp_path}/top/l", "sub/deeper", str(tmp_path))


# -- agent: extracting what the host sends -------------------------------------------------------------------------
@pytest.mark.parametrize("members", [
    [entry("top", tarfile.DIRTYPE), entry("top/../evil", data=b"x")],
    [entry("top", tarfile.DIRTYPE), entry("/evil", data=b"x")],
    [entry("top", tarfile.DIRTYPE), entry("elsewhere/evil", data=b"x")],
    [entry("top", tarfile.DIRTYPE), entry("top/l", tarfile.SYMTYPE, linkname="/")],
    [entry("top", tarfile.DIRTYPE), entry("top/l", tarfile.SYMTYPE, linkname="../.."), entry("top/l/evil", data=b"x")],
    [entry("top", tarfile.DIRTYPE), entry("top/h", tarfile.LNKTYPE, linkname="../victim")],
    [entry("top", tarfile.DIRTYPE), entry("top/h", tarfile.LNKTYPE, linkname="top/missing")],
    [entry("a/b", data=b"x")],
])
def test_agent_refuses_unsafe_archives(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "victim").write_text("secret")
    with pytest.raises(agent.FileOpError) as info:
        upload(dest, make_tar(*members))
    assert status_of(info) == grpc.StatusCode.INVALID_ARGUMENT
    assert not (tmp_path / "evil").exists() and not (dest / "evil").exists()
    assert (tmp_path / "victim").read_text() == "secret"


def test_agent_refuses_writing_through_a_link_chain(tmp_path: Path) -> None:
    """A link created dangling (inside), made to lead out by a later link, must not be written through."""
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = make_tar(
        entry("top", tarfile.DIRTYPE),
        entry("top/a", tarfile.SYMTYPE, linkname="b/../.."),  # resolves inside while b does not exist
        entry("top/b", tarfile.SYMTYPE, linkname=".."),       # inside (dest itself)
        entry("top/a/evil", data=b"x"),                       # top/a now means dest/.. = tmp_path
    )
    with pytest.raises(agent.FileOpError):
        upload(dest, archive)
    assert not (tmp_path / "evil").exists()


def test_agent_existing_link_at_a_member_is_replaced_not_followed(tmp_path: Path) -> None:
    (tmp_path / "victim").write_text("keep")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "top").symlink_to(tmp_path / "victim")
    upload(dest, make_tar(entry("top", data=b"new")))
    assert (dest / "top").read_bytes() == b"new" and not (dest / "top").is_symlink()
    assert (tmp_path / "victim").read_text() == "keep"


def test_agent_overwrite_false(tmp_path: Path) -> None:
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "f").write_text("old")
    archive = make_tar(entry("top", tarfile.DIRTYPE), entry("top/new", data=b"n"), entry("top/f", data=b"new"))
    with pytest.raises(agent.FileOpError) as info:
        upload(tmp_path, archive, overwrite=False)
    assert status_of(info) == grpc.StatusCode.ALREADY_EXISTS
    assert f"{tmp_path}/top/f" in info.value.message
    assert (tmp_path / "top" / "f").read_text() == "old"


def test_agent_upload_without_finish_is_aborted(tmp_path: Path) -> None:
    with pytest.raises(agent.FileOpError) as info:
        upload(tmp_path / "x", make_tar(entry("x", data=b"1")), finish=False)
    assert status_of(info) == grpc.StatusCode.ABORTED


def test_agent_empty_or_garbage_upload(tmp_path: Path) -> None:
    with pytest.raises(agent.FileOpError, match=r"empty|not a tar"):
        upload(tmp_path / "x", b"")
    with pytest.raises(agent.FileOpError, match="not a tar"):
        upload(tmp_path / "x", b"not a tar archive" * 100)


def test_agent_device_nodes_and_fifos(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating device nodes needs root (as the agent is in the box)")
    null = tarfile.TarInfo("top/null")
    null.type, null.devmajor, null.devminor, null.mode = tarfile.CHRTYPE, 1, 3, 0o666
    archive = make_tar(entry("top", tarfile.DIRTYPE), (null, None), entry("top/pipe", tarfile.FIFOTYPE))
    upload(tmp_path, archive)
    st = (tmp_path / "top" / "null").lstat()
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_ISFIFO((tmp_path / "top" / "pipe").lstat().st_mode)


# -- both ends in-process --------------------------------------------------------------------------------------------
def test_tree_round_trip_in_process(tree: Path, tmp_path: Path) -> None:
    box_dir = tmp_path / "box"
    box_dir.mkdir()
    reply = upload(box_dir, host_archive(tree))
    assert reply.path == f"{box_dir}/src"
    assert reply.entries == len(snapshot(tree)) + 1
    assert snapshot(box_dir / "src") == snapshot(tree)
    assert os.stat(box_dir / "src" / "hard.txt").st_ino == os.stat(box_dir / "src" / "a.txt").st_ino

    back = tmp_path / "back"
    back.mkdir()
    extract_on_host(download(box_dir / "src", name="copy"), back, "copy")
    assert snapshot(back / "copy") == snapshot(tree)


def test_file_gets_new_name_and_big_files_stream(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * agent.CHUNK + 123))
    box_dir = tmp_path / "box"
    box_dir.mkdir()
    upload(box_dir / "renamed", host_archive(big))
    assert (box_dir / "renamed").read_bytes() == big.read_bytes()
    chunks = list(agent.download(gpb.DownloadRequest(path=str(box_dir / "renamed"))))
    assert max(len(c) for c in chunks) <= agent.CHUNK + 2 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE
    assert len(chunks) >= 3
    out = tmp_path / "out"
    out.mkdir()
    extract_on_host(b"".join(chunks), out, "renamed")
    assert (out / "renamed").read_bytes() == big.read_bytes()


def test_download_follow_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("content")
    (tmp_path / "ln").symlink_to("real")
    with tarfile.open(fileobj=io.BytesIO(download(tmp_path / "ln")), mode="r|") as tf:
        [member] = list(tf)
        assert member.issym() and member.linkname == "real"
    with tarfile.open(fileobj=io.BytesIO(download(tmp_path / "ln", follow=True)), mode="r|") as tf:
        member = tf.next()
        assert member is not None and member.isreg() and member.name == "ln"


def test_download_missing_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(agent.FileOpError) as info:
        agent.download(gpb.DownloadRequest(path=str(tmp_path / "nope")))
    assert status_of(info) == grpc.StatusCode.NOT_FOUND
    assert str(tmp_path / "nope") in info.value.message
    with pytest.raises(agent.FileOpError) as info:
        agent.download(gpb.DownloadRequest(path="/"))
    assert status_of(info) == grpc.StatusCode.INVALID_ARGUMENT


def test_host_removes_a_file_cut_off_in_the_middle(tmp_path: Path) -> None:
    archive = make_tar(entry("top", tarfile.DIRTYPE), entry("top/whole", data=b"w" * 5000),
                       entry("top/cut", data=b"c" * 50_000))
    cut = archive.index(b"c" * 100) + 10_000  # inside the second file's data
    with pytest.raises(tarfile.ReadError):
        extract_on_host(archive[:cut], tmp_path, "top")
    assert (tmp_path / "top" / "whole").read_bytes() == b"w" * 5000
    assert not (tmp_path / "top" / "cut").exists()


def test_agent_removes_a_file_cut_off_in_the_middle(tmp_path: Path) -> None:
    archive = make_tar(entry("top", tarfile.DIRTYPE), entry("top/whole", data=b"w" * 5000),
                       entry("top/cut", data=b"c" * 50_000))
    cut = archive.index(b"c" * 100) + 10_000
    with pytest.raises(agent.FileOpError):
        upload(tmp_path, archive[:cut], finish=False)
    assert (tmp_path / "top" / "whole").read_bytes() == b"w" * 5000
    assert not (tmp_path / "top" / "cut").exists()


# -- the host library against the agent's service over real gRPC (a unix socket, no VM) -------------------------------
class _Store:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def bump(self, name: str, by: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + by


class FakeBox:
    """What boxlite._files needs of a Box, talking to an in-process agent service."""

    def __init__(self, socket: Path) -> None:
        from types import SimpleNamespace

        from boxlite._portal_client import PortalClient

        self.id = "fakebox"
        self._client = PortalClient(socket, self.id)
        self._runtime = SimpleNamespace(_store=_Store())

    def _require_running(self, action: str) -> None:
        pass

    def _explain_portal_failure(self) -> boxlite.BoxliteError:
        return boxlite.PortalError("cannot reach the agent of the fake box")


@pytest.fixture
def agent_socket(tmp_path: Path) -> Iterator[Path]:
    from concurrent import futures

    from guest._portal import portal_pb2_grpc as gpb_grpc

    socket = tmp_path / "agent.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    gpb_grpc.add_FilesServicer_to_server(agent.FilesService(), server)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    yield socket
    server.stop(0)


@pytest.mark.anyio
async def test_grpc_round_trip_and_byte_counts(agent_socket: Path, tree: Path, tmp_path: Path) -> None:
    fake = FakeBox(agent_socket)
    box_dir = tmp_path / "box"
    box_dir.mkdir()
    await host.copy_in(fake, tree, str(box_dir))  # type: ignore[arg-type]
    assert snapshot(box_dir / "src") == snapshot(tree)
    out = tmp_path / "out"
    out.mkdir()
    await host.copy_out(fake, str(box_dir / "src"), out / "again")  # type: ignore[arg-type]
    assert snapshot(out / "again") == snapshot(tree)
    counters = fake._runtime._store.counters
    assert counters["box:fakebox:bytes_sent"] > 70_000
    assert counters["box:fakebox:bytes_received"] > 70_000
    await fake._client.close()


@pytest.mark.anyio
async def test_grpc_early_refusal_reports_the_agents_status(agent_socket: Path, tmp_path: Path) -> None:
    """The agent refuses while the client is still streaming: the client must get the agent's status (not
    INTERNAL, grpc/grpc#36066), and promptly."""
    fake = FakeBox(agent_socket)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(16 * 1024 * 1024))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "up").symlink_to("../../..")
    (src / "z").write_bytes(os.urandom(8 * 1024 * 1024))
    for _ in range(15):
        with pytest.raises(boxlite.NotFoundError, match="does not exist"):
            await host.copy_in(fake, big, str(tmp_path / "missing" / "x"))  # type: ignore[arg-type]
        with pytest.raises(boxlite.ExecutionError, match="symbolic link"):
            await host.copy_in(fake, src, str(tmp_path / "dest"))  # type: ignore[arg-type]
    await fake._client.close()


@pytest.mark.anyio
@pytest.mark.ci_may_skip("root reads any file: only a caller who is not root can meet an unreadable one")
async def test_grpc_host_read_error_is_reported(agent_socket: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads unreadable files")
    fake = FakeBox(agent_socket)
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    with pytest.raises(boxlite.ExecutionError, match="cannot read"):
        await host.copy_in(fake, secret, str(tmp_path / "copy"))  # type: ignore[arg-type]
    assert not (tmp_path / "copy").exists()
    await fake._client.close()


@pytest.mark.anyio
async def test_grpc_old_agent_without_the_service(tmp_path: Path) -> None:
    from concurrent import futures

    socket = tmp_path / "old.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    try:
        fake = FakeBox(socket)
        (tmp_path / "f").write_text("x")
        with pytest.raises(boxlite.PortalError, match="older guest"):
            await host.copy_in(fake, tmp_path / "f", "/tmp/f")  # type: ignore[arg-type]
        with pytest.raises(boxlite.PortalError, match="older guest"):
            await host.copy_out(fake, "/etc/hostname", tmp_path / "h")  # type: ignore[arg-type]
        await fake._client.close()
    finally:
        server.stop(0)
