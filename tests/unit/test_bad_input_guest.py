"""The agent's handling of bad requests, run on the host (the same code the agent runs in every box).

The real-VM versions, over the portal, are in tests/vm/test_portal_abuse.py; these pin the logic down fast.
"""

from __future__ import annotations

import io
import math
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest import execution, files, kernels
from guest._portal import portal_pb2 as pb


class AbortError(Exception):
    pass


class FakeContext:
    """Enough of grpc.ServicerContext for the services' error paths."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.callbacks: list[Any] = []

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise AbortError(details)

    def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def add_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, linkname: str = "",
           **pax: str) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.pax_headers = dict(pax)
    if data is not None:
        info.size = len(data)
    return info, data


def _requests(dest: str, archive: bytes) -> Iterator[pb.UploadRequest]:
    yield pb.UploadRequest(start=pb.UploadStart(dest=dest, overwrite=True))
    yield pb.UploadRequest(data=archive)
    yield pb.UploadRequest(finish=True)


def _upload_status(dest: str, archive: bytes) -> grpc.StatusCode:
    ctx = FakeContext()
    try:
        files.FilesService().Upload(_requests(dest, archive), ctx)
    except AbortError:
        assert ctx.code is not None
        return ctx.code
    return grpc.StatusCode.OK


# -- Files ----------------------------------------------------------------------------------------------------------
def test_a_link_to_the_destination_cannot_be_used_to_replace_a_sibling(tmp_path: Path) -> None:
    """Copying a directory into /etc must not be able to replace /etc/passwd through a link `top/l -> ..`."""
    (tmp_path / "victim").write_text("secret")
    archive = _tar(_entry("top", tarfile.DIRTYPE), _entry("top/l", tarfile.SYMTYPE, linkname=".."),
                   _entry("top/l/victim", data=b"owned"))
    assert _upload_status(str(tmp_path), archive) == grpc.StatusCode.INVALID_ARGUMENT
    assert (tmp_path / "victim").read_text() == "secret"


def test_a_hard_link_cannot_reach_a_sibling_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "victim").write_text("secret")
    archive = _tar(_entry("top", tarfile.DIRTYPE), _entry("top/l", tarfile.SYMTYPE, linkname=".."),
                   _entry("top/h", tarfile.LNKTYPE, linkname="top/l/victim"))
    assert _upload_status(str(tmp_path), archive) == grpc.StatusCode.INVALID_ARGUMENT
    assert not (tmp_path / "top" / "h").exists()
    assert (tmp_path / "victim").stat().st_nlink == 1


def test_links_inside_the_item_still_work(tmp_path: Path) -> None:
    archive = _tar(_entry("top", tarfile.DIRTYPE), _entry("top/sub", tarfile.DIRTYPE),
                   _entry("top/l", tarfile.SYMTYPE, linkname="sub"), _entry("top/l/f", data=b"through"),
                   _entry("top/up", tarfile.SYMTYPE, linkname="../top/sub/f"),
                   _entry("top/h", tarfile.LNKTYPE, linkname="top/l/f"))
    assert _upload_status(str(tmp_path), archive) == grpc.StatusCode.OK
    assert (tmp_path / "top" / "sub" / "f").read_text() == "through"
    assert (tmp_path / "top" / "h").read_text() == (tmp_path / "top" / "up").read_text() == "through"


@pytest.mark.parametrize("pax", [{"mtime": "1e400"}, {"mtime": "-1e400"}, {"mtime": "nan"}])
def test_a_header_no_file_can_have_is_invalid_argument(tmp_path: Path, pax: dict[str, str]) -> None:
    """A pax mtime beyond any clock: os.utime raised OverflowError, which ended the call as UNKNOWN."""
    assert _upload_status(str(tmp_path), _tar(_entry("f", data=b"x", **pax))) == grpc.StatusCode.INVALID_ARGUMENT
    assert not (tmp_path / "f").exists()  # the half-made file is removed


@pytest.mark.parametrize("path", ["/tmp/a\0b", "\0", "/" + "a" * 5000])
def test_bad_paths_are_invalid_argument(tmp_path: Path, path: str) -> None:
    service = files.FilesService()
    ctx = FakeContext()
    with pytest.raises(AbortError):
        service.List(pb.ListRequest(path=path), ctx)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    ctx = FakeContext()
    with pytest.raises(AbortError):
        list(service.Download(pb.DownloadRequest(path=path), ctx))
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    assert _upload_status(path, _tar(_entry("f", data=b"x"))) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_bad_download_name_is_invalid_argument(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    ctx = FakeContext()
    with pytest.raises(AbortError):
        list(files.FilesService().Download(pb.DownloadRequest(path=str(tmp_path / "f"), name="x\0y"), ctx))
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT


# -- Execution -------------------------------------------------------------------------------------------------------
def _exec(*messages: pb.ExecInput) -> list[pb.ExecOutput]:
    return list(execution.ExecutionService().Exec(iter(messages), FakeContext()))


@pytest.mark.parametrize("request_", [
    pb.ExecRequest(argv=["echo", "a\0b"]),
    pb.ExecRequest(argv=["echo"], env={"A=B": "1"}),
    pb.ExecRequest(argv=["echo"], env={"A": "1\0"}),
    pb.ExecRequest(argv=["echo"], user="99999999999999999999"),
    pb.ExecRequest(argv=["echo"], user="\u00b2"),
    pb.ExecRequest(argv=["echo"], user="0:99999999999999999999"),
], ids=["nul-argv", "eq-env", "nul-env", "huge-uid", "superscript-uid", "huge-gid"])
def test_requests_no_command_can_take_end_with_exit_126(request_: pb.ExecRequest) -> None:
    """These raised ValueError or OverflowError out of the handler: the call ended UNKNOWN, with no exit."""
    outputs = _exec(pb.ExecInput(start=request_))
    assert len(outputs) == 1 and outputs[0].exit.exit_code == 126 and outputs[0].exit.error


@pytest.mark.parametrize("timeout", [math.inf, 1e300, 1e12, math.nan, -1.0])
def test_timeouts_beyond_any_clock_are_no_limit(timeout: float) -> None:
    """select() raised OverflowError for a deadline a month or more away."""
    outputs = _exec(pb.ExecInput(start=pb.ExecRequest(argv=["true"], timeout_s=timeout)))
    assert outputs[-1].exit.exit_code == 0 and not outputs[-1].exit.timed_out


def test_unknown_signals_are_dropped_and_later_ones_still_arrive() -> None:
    """The feeder ended at the first signal killpg() refused, so a later SIGTERM never came."""
    messages = [pb.ExecInput(start=pb.ExecRequest(argv=["sleep", "30"], stdin=True))]
    messages += [pb.ExecInput(signal=s) for s in (12345, -1, 0, signal.NSIG)]
    messages.append(pb.ExecInput(signal=signal.SIGTERM))
    outputs = _exec(*messages)
    assert outputs[-1].exit.signal == signal.SIGTERM


@given(st.integers(-(2**31), 2**31 - 1))
@settings(max_examples=200, deadline=None)
def test_kill_refuses_unknown_signals(signum: int) -> None:
    service = execution.ExecutionService()
    ctx = FakeContext()
    try:
        reply = service.Kill(pb.KillRequest(exec_id="nope", signal=signum), ctx)
    except AbortError:
        assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and not execution.valid_signal(signum)
    else:
        assert not reply.found and (signum == 0 or execution.valid_signal(signum))


# -- Kernels ---------------------------------------------------------------------------------------------------------
@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=200, deadline=None)
def test_kernel_durations_are_bounded(requested: float) -> None:
    """A NaN start timeout never came (Start held the service's lock for ever); a huge grace period made
    threading's wait raise OverflowError after the kernel had been dropped from the table, still running."""
    value = kernels.seconds(requested, 60.0, kernels.MAX_START_TIMEOUT_S)
    assert 0 < value <= kernels.MAX_START_TIMEOUT_S
    grace = kernels.seconds(requested, 0.0, kernels.MAX_GRACE_S)
    assert 0 <= grace <= kernels.MAX_GRACE_S
