"""The agent survives whatever arrives on the portal: malformed, oversized and absurd messages, sent straight to its
gRPC services (bypassing the host library), and concurrent abuse. After each, it still answers Ping and runs a
command. Tar streams with "..", absolute paths or link tricks, sent straight to Files.Upload, are refused with
INVALID_ARGUMENT and nothing is written outside the destination.

All on the shared box; every test that writes files works in its own directory.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc
import pytest

import boxlite
from boxlite._portal import portal_pb2 as pb
from boxlite._portal import portal_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.vm, pytest.mark.anyio]

PKG = "/boxlite.portal.v1"
UNARY = [f"{PKG}/Guest/Ping", f"{PKG}/Guest/Metrics", f"{PKG}/Execution/Kill", f"{PKG}/Files/List",
         f"{PKG}/Kernel/Start", f"{PKG}/Kernel/Interrupt", f"{PKG}/Kernel/Stop"]  # never Guest/Shutdown
SERVER_STREAM = [f"{PKG}/Files/Download"]
CLIENT_STREAM = [f"{PKG}/Files/Upload"]
BIDI = [f"{PKG}/Execution/Exec", f"{PKG}/Kernel/Connect"]
GARBAGE = [
    b"\xff" * 64,                      # field 31, wire type 7: no such wire type
    b"\x0a\xff\xff\xff\xff\x0f",       # a length-delimited field claiming 4 GiB
    b"\x0a\x03\xff\xfe\xfd",           # a string field holding invalid UTF-8
    b"\x08",                           # a truncated varint
    bytes(range(256)) * 4,
    os.urandom(4096),
]
MIB = 1024 * 1024
CALL_TIMEOUT = 60.0


@pytest.fixture
async def channel(box: boxlite.SimpleBox) -> AsyncIterator[grpc.aio.Channel]:
    """A channel of our own to the box's portal, allowed to send far more than the agent accepts."""
    path = box.box.socket_dir / "portal.sock"
    options = [("grpc.max_send_message_length", 256 * MIB), ("grpc.max_receive_message_length", 256 * MIB),
               ("grpc.enable_http_proxy", 0)]
    async with grpc.aio.insecure_channel(f"unix:{path}", options=options) as ch:
        yield ch


@pytest.fixture
async def workdir(box: boxlite.SimpleBox) -> AsyncIterator[str]:
    path = f"/tmp/abuse-{uuid.uuid4().hex[:8]}"
    await box.exec("mkdir", "-p", f"{path}/dest", check=True)
    yield path
    await box.exec("rm", "-rf", path)


async def assert_alive(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    """The agent answers Ping (on a fresh connection too) and runs a command."""
    reply = await pb_grpc.GuestStub(channel).Ping(pb.PingRequest(), timeout=20)
    assert reply.agent_version
    result = await box.exec("echo", "still here")
    assert (result.exit_code, result.stdout) == (0, "still here\n")


async def count_processes(box: boxlite.SimpleBox, *argv: str) -> int:
    """How many processes in the box run exactly `argv` (from /proc: the image has python3, not procps)."""
    script = ("import os, sys\n"
              "want = '\\0'.join(sys.argv[1:]) + '\\0'\n"
              "n = 0\n"
              "for p in os.listdir('/proc'):\n"
              "    try:\n"
              "        n += p.isdigit() and open(f'/proc/{p}/cmdline').read() == want\n"
              "    except OSError:\n"
              "        pass\n"
              "print(n)\n")
    return int((await box.exec("python3", "-c", script, *argv, check=True)).stdout)


async def agent_descriptors(box: boxlite.SimpleBox) -> int:
    """How many descriptors the agent has open."""
    script = ("import os\n"
              "for p in os.listdir('/proc'):\n"
              "    try:\n"
              "        if not p.isdigit():\n"
              "            continue\n"
              "        argv = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')\n"
              "        if argv[0].endswith(b'python3') and argv[-2].endswith(b'guest/__main__.py'):\n"
              "            print(len(os.listdir(f'/proc/{p}/fd')))\n"
              "    except OSError:\n"
              "        pass\n")
    return int((await box.exec("python3", "-c", script, check=True)).stdout)


def _raw(data: bytes) -> bytes:
    return data


async def _status_of(call: object) -> grpc.StatusCode:
    """Await a call (any shape) and return its status code; OK when it succeeded."""
    try:
        if hasattr(call, "__aiter__"):
            async for _ in call:  # type: ignore[attr-defined]
                pass
        else:
            await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _exec(channel: grpc.aio.Channel, messages: Sequence[pb.ExecInput], timeout: float = CALL_TIMEOUT
                ) -> list[pb.ExecOutput]:
    """One Exec stream: send `messages`, half-close, and read everything until the end."""
    stub = pb_grpc.ExecutionStub(channel)
    return [out async for out in stub.Exec(iter(messages), timeout=timeout)]


def _exit_of(outputs: list[pb.ExecOutput]) -> pb.ExecExit:
    assert outputs and outputs[-1].WhichOneof("kind") == "exit", outputs
    return outputs[-1].exit


def _start(argv: Iterable[str], **kw: object) -> pb.ExecInput:
    return pb.ExecInput(start=pb.ExecRequest(argv=list(argv), **kw))  # type: ignore[arg-type]


# -- malformed messages -----------------------------------------------------------------------------------------------
async def test_garbage_bodies_to_every_method(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    """Bytes that are no valid protobuf (or valid protobuf of nonsense), as the body of every call."""
    codes: dict[str, set[grpc.StatusCode]] = {}
    for method in UNARY + SERVER_STREAM + CLIENT_STREAM + BIDI:
        for body in GARBAGE:
            if method in UNARY:
                call: object = channel.unary_unary(method, _raw, _raw)(body, timeout=CALL_TIMEOUT)
            elif method in SERVER_STREAM:
                call = channel.unary_stream(method, _raw, _raw)(body, timeout=CALL_TIMEOUT)
            elif method in CLIENT_STREAM:
                call = channel.stream_unary(method, _raw, _raw)(iter([body, body]), timeout=CALL_TIMEOUT)
            else:
                call = channel.stream_stream(method, _raw, _raw)(iter([body, body]), timeout=CALL_TIMEOUT)
            codes.setdefault(method.rsplit("/", 1)[1], set()).add(await _status_of(call))
    # Every call ended with a status (none hung until its deadline), and none was the server's crash (UNKNOWN).
    for method, seen in codes.items():
        assert grpc.StatusCode.DEADLINE_EXCEEDED not in seen, method
        assert grpc.StatusCode.UNKNOWN not in seen, (method, seen)
    await assert_alive(box, channel)


async def test_oversized_messages_are_refused(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    huge = "x" * (64 * MIB)
    for request in (_start(["echo", huge]), _start(["echo"], env={"BIG": huge}), _start(["echo"], cwd="/" + huge)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _exec(channel, [request])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await pb_grpc.FilesStub(channel).List(pb.ListRequest(path="/" + huge), timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await assert_alive(box, channel)


async def test_absurd_exec_requests_end_with_an_exit(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    # No start message at all, or something else first: the stream ends with exit 126 and a reason.
    for messages in ([], [pb.ExecInput(stdin=b"x")], [pb.ExecInput(signal=9)], [_start([])]):
        exit_msg = _exit_of(await _exec(channel, messages))
        assert exit_msg.exit_code == 126 and "first message" in exit_msg.error
    # Arguments no command can receive: NUL bytes, '=' in an env name, a user the image does not have, a uid
    # beyond 32 bits, digits int() cannot read, a cwd with a NUL.
    cases = [
        _start(["echo", "a\0b"]),
        _start(["ec\0ho"]),
        _start(["echo"], env={"A=B": "1"}),
        _start(["echo"], env={"A": "1\0"}),
        _start(["echo"], user="nosuchuser"),
        _start(["echo"], user="99999999999999999999"),
        _start(["echo"], user="\u00b2"),  # "²".isdigit() is True, int("²") fails
        _start(["echo"], user="0:99999999999999999999"),
        _start(["echo"], cwd="/tmp\0/x"),
        _start(["echo"], cwd="/no/such/dir"),
        _start(["/no/such/program"]),
        _start(["/etc/passwd"]),
        _start(["echo", "y" * (256 * 1024)]),  # longer than one argument may be (MAX_ARG_STRLEN): E2BIG
    ]
    for request in cases:
        exit_msg = _exit_of(await _exec(channel, [request]))
        assert exit_msg.exit_code in (126, 127) and exit_msg.error, (request.start, exit_msg)
    await assert_alive(box, channel)


async def test_absurd_but_runnable_exec_requests(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    # 100k arguments (within ARG_MAX): they run.
    outputs = await _exec(channel, [_start(["sh", "-c", 'echo "$#"', "sh", *(["a"] * 100_000)])])
    assert _exit_of(outputs).exit_code == 0
    assert b"".join(o.stdout for o in outputs) == b"100000\n"
    # Timeouts that are no limit at all (negative, NaN, infinite, beyond any clock): the command runs to its end.
    for timeout in (-1.0, float("nan"), float("inf"), 1e300, 1e12):
        exit_msg = _exit_of(await _exec(channel, [_start(["true"], timeout_s=timeout)]))
        assert (exit_msg.exit_code, exit_msg.timed_out, exit_msg.error) == (0, False, ""), timeout
    # Terminals of absurd sizes (uint32 on the wire, 16 bits in the kernel): capped, not a failed call.
    for rows, cols in ((70000, 0), (0, 2**32 - 1)):
        request = _start(["stty", "size"], tty=pb.TtySize(rows=rows, cols=cols))
        resize = pb.ExecInput(resize=pb.TtySize(rows=2**32 - 1, cols=70000))
        outputs = await _exec(channel, [request, resize])
        assert _exit_of(outputs).exit_code == 0, outputs
    # A tiny one does time out.
    exit_msg = _exit_of(await _exec(channel, [_start(["sleep", "30"], timeout_s=1e-9)]))
    assert exit_msg.timed_out
    await assert_alive(box, channel)


async def test_unknown_signals_do_not_break_the_stream(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    """Signals the kernel does not know are dropped; a real one sent after them still arrives."""
    stub = pb_grpc.ExecutionStub(channel)
    call = stub.Exec(timeout=CALL_TIMEOUT)
    await call.write(_start(["sleep", "60"], stdin=True))
    started = await call.read()
    assert started.WhichOneof("kind") == "started"
    for bogus in (12345, -1, 0, 65, 2**31 - 1):
        await call.write(pb.ExecInput(signal=bogus))
    # The Kill RPC refuses them by name, and does not take the command down.
    kill = pb_grpc.ExecutionStub(channel).Kill
    for bogus in (12345, -1, 65):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kill(pb.KillRequest(exec_id=started.started.exec_id, signal=bogus), timeout=CALL_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not (await kill(pb.KillRequest(exec_id="no-such-id", signal=9), timeout=CALL_TIMEOUT)).found
    assert not (await kill(pb.KillRequest(exec_id="\0" * 1000), timeout=CALL_TIMEOUT)).found
    t0 = time.monotonic()
    await call.write(pb.ExecInput(signal=15))
    rest = []
    while (msg := await call.read()) is not grpc.aio.EOF:
        rest.append(msg)
    assert _exit_of(rest).signal == 15
    assert time.monotonic() - t0 < 10
    await assert_alive(box, channel)


async def test_bad_file_requests_are_invalid_argument(box: boxlite.SimpleBox, channel: grpc.aio.Channel,
                                                     workdir: str) -> None:
    files = pb_grpc.FilesStub(channel)
    bad_paths = ["", "relative/path", "/tmp/a\0b", "/" + "a" * 5000, "\0"]
    for path in bad_paths:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await files.List(pb.ListRequest(path=path), timeout=CALL_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path[:20]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in files.Download(pb.DownloadRequest(path=path), timeout=CALL_TIMEOUT):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path[:20]
    for name in ("a/b", "..", "x\0y"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in files.Download(pb.DownloadRequest(path="/etc/hostname", name=name), timeout=CALL_TIMEOUT):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    for path in ("/no/such/file", "/proc/self/fd/999999"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await files.List(pb.ListRequest(path=path), timeout=CALL_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, path
    archive = _tar(("f", b"x"))
    for dest in ("", "relative", "/tmp/a\0b", "/" + "d" * 5000):
        code, _ = await _upload(channel, dest, archive)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, dest[:20]
    # Upload streams that are not an upload: no start, start twice, garbage, an empty archive, no finish.
    upload = files.Upload
    start = pb.UploadRequest(start=pb.UploadStart(dest=f"{workdir}/dest"))
    for messages, expected in [
        ([pb.UploadRequest(data=archive), pb.UploadRequest(finish=True)], grpc.StatusCode.INVALID_ARGUMENT),
        ([start, start, pb.UploadRequest(finish=True)], grpc.StatusCode.INVALID_ARGUMENT),
        ([start, pb.UploadRequest(data=os.urandom(10_000)), pb.UploadRequest(finish=True)],
         grpc.StatusCode.INVALID_ARGUMENT),
        ([start, pb.UploadRequest(finish=True)], grpc.StatusCode.INVALID_ARGUMENT),
        ([start, pb.UploadRequest(data=archive)], grpc.StatusCode.ABORTED),
        ([], grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await upload(iter(messages), timeout=CALL_TIMEOUT)
        assert info.value.code() == expected, messages[:2]
    await assert_alive(box, channel)


async def test_bad_kernel_requests(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    kernel = pb_grpc.KernelStub(channel)
    for kernel_id in ("../../etc", "a/b", "x" * 100, "-x", "\0", "k\0"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kernel.Start(pb.KernelStartRequest(kernel_id=kernel_id), timeout=CALL_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kernel_id
    for process, expected in [
        (pb.ExecRequest(argv=["/no/such/kernel"]), grpc.StatusCode.NOT_FOUND),
        (pb.ExecRequest(argv=["true"]), grpc.StatusCode.FAILED_PRECONDITION),  # exits during start-up
        (pb.ExecRequest(argv=["ech\0o"]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ExecRequest(argv=["true"], env={"A=B": "1"}), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ExecRequest(argv=["true"], user="nosuchuser"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ExecRequest(argv=["true"], user="\u00b2"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ExecRequest(argv=["true"], cwd="/no/such/dir"), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        request = pb.KernelStartRequest(kernel_id=f"abuse-{uuid.uuid4().hex[:6]}", process=process,
                                        start_timeout_s=float("nan"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kernel.Start(request, timeout=CALL_TIMEOUT)
        assert info.value.code() == expected, process
    # A "kernel" that never binds its channels, with a tiny timeout: DEADLINE_EXCEEDED, and it is gone.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await kernel.Start(pb.KernelStartRequest(kernel_id="abuse-sleeper", start_timeout_s=0.5,
                                                 process=pb.ExecRequest(argv=["sleep", "601"])), timeout=CALL_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await count_processes(box, "sleep", "601") == 0
    # Interrupt and Stop of kernels that do not exist; absurd grace periods.
    assert not (await kernel.Interrupt(pb.KernelRef(kernel_id="nope"), timeout=CALL_TIMEOUT)).found
    for grace in (float("nan"), float("inf"), -5.0, 1e300):
        assert not (await kernel.Stop(pb.KernelStopRequest(kernel_id="nope", grace_s=grace),
                                      timeout=CALL_TIMEOUT)).found
    # Connect: no connect message, a message first, an unknown kernel, garbage frames to an unknown channel.
    frames = pb.KernelFrames(channel=99, frames=[os.urandom(100)] * 3)  # type: ignore[arg-type]
    for messages, expected in [
        ([], grpc.StatusCode.INVALID_ARGUMENT),
        ([pb.KernelClientMessage(message=frames)], grpc.StatusCode.INVALID_ARGUMENT),
        ([pb.KernelClientMessage(connect=pb.KernelConnect(kernel_id="nope")), pb.KernelClientMessage(message=frames)],
         grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in kernel.Connect(iter(messages), timeout=CALL_TIMEOUT):
                pass
        assert info.value.code() == expected
    await assert_alive(box, channel)


# -- concurrent abuse ------------------------------------------------------------------------------------------------
async def test_many_long_commands_do_not_starve_ping(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    """More concurrent commands than the agent had server threads (64): Ping must still be answered."""
    stub = pb_grpc.ExecutionStub(channel)
    calls = []
    try:
        for _ in range(80):
            call = stub.Exec(timeout=300)
            await call.write(_start(["sleep", "121"]))
            calls.append(call)
        # Each running command holds a server thread: with 64 threads the 65th waited for a sleep to end.
        firsts = await asyncio.wait_for(asyncio.gather(*(call.read() for call in calls)), timeout=60)
        assert all(first.WhichOneof("kind") == "started" for first in firsts)
        t0 = time.monotonic()
        await pb_grpc.GuestStub(channel).Ping(pb.PingRequest(), timeout=20)
        result = await box.exec("echo", "beside 80 sleeps")
        assert result.stdout == "beside 80 sleeps\n"
        print(f"\nPing and a command beside 80 running ones: {time.monotonic() - t0:.2f} s")
    finally:
        for call in calls:
            call.cancel()
    await asyncio.sleep(1.0)  # the agent kills the cancelled commands' groups
    assert await count_processes(box, "sleep", "121") == 0
    await assert_alive(box, channel)


FLOODER = """
import asyncio, sys, grpc
from boxlite._portal import portal_pb2 as pb, portal_pb2_grpc as pb_grpc
GARBAGE = [b"\\xff" * 64, b"\\x0a\\xff\\xff\\xff\\xff\\x0f", b"\\x08"]

async def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    channels = [grpc.aio.insecure_channel(f"unix:{path}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(count)]
    pings = [pb_grpc.GuestStub(ch).Ping(pb.PingRequest(), timeout=60) for ch in channels]
    idle = [pb_grpc.ExecutionStub(ch).Exec(timeout=600) for ch in channels[:100]]  # opened, never written to
    raw = channels[0].unary_unary("/boxlite.portal.v1.Files/List")
    garbage = [raw(body, timeout=60) for body in GARBAGE * 20]
    results = await asyncio.gather(*pings, *garbage, return_exceptions=True)
    print(sum(isinstance(r, pb.PingReply) for r in results[:count]), flush=True)
    sys.stdin.read()  # hold everything open until told to go
    for call in idle:
        call.cancel()

asyncio.run(main())
"""


async def test_flood_of_connections_from_another_process(box: boxlite.SimpleBox, channel: grpc.aio.Channel) -> None:
    """Another host process opens 300 connections at once (each costs the agent descriptors and threads), streams
    that never send their first message, and garbage, and holds them all open. Meanwhile the agent still runs
    commands (before, its 1024 descriptors were gone and every command failed with EMFILE, for as long as that
    process lived, and a failed accept() would have ended the bridge's accept loop for good); once the process
    is gone, nothing of the flood is left in the agent."""
    await assert_alive(box, channel)  # our connection exists before the flood
    descriptors = await agent_descriptors(box)
    path = box.box.socket_dir / "portal.sock"
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOODER, str(path), "300", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    try:
        assert flooder.stdout is not None and flooder.stdin is not None
        answered = int(await asyncio.wait_for(flooder.stdout.readline(), timeout=120))
        print(f"\n{answered} of 300 pings answered during the flood")
        await assert_alive(box, channel)
        during = await agent_descriptors(box)
        print(f"agent descriptors: {descriptors} before, {during} during the flood")
        assert during < 3000, during  # bounded (bridge.MAX_CONNECTIONS) below the agent's 4096
        flooder.stdin.close()
        await asyncio.wait_for(flooder.wait(), timeout=60)
    finally:
        if flooder.returncode is None:
            flooder.kill()
            await flooder.wait()
    await asyncio.sleep(2.0)
    after = await agent_descriptors(box)
    assert after <= descriptors + 16, (descriptors, during, after)
    path = box.box.socket_dir / "portal.sock"
    async with grpc.aio.insecure_channel(f"unix:{path}") as fresh:  # a new connection is accepted again
        await assert_alive(box, fresh)


# -- tar streams straight to Files.Upload ------------------------------------------------------------------------
def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, linkname: str = "",
            mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 1_600_000_000
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    if data is not None:
        info.size = len(data)
    return info, data


def _tar(*members: tuple[str, bytes] | tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for item, data in members:
            info = _member(item, data=data)[0] if isinstance(item, str) else item
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


async def _upload(channel: grpc.aio.Channel, dest: str, archive: bytes) -> tuple[grpc.StatusCode, str]:
    messages = [pb.UploadRequest(start=pb.UploadStart(dest=dest, overwrite=True))]
    messages += [pb.UploadRequest(data=archive[i:i + MIB]) for i in range(0, len(archive), MIB)]
    messages.append(pb.UploadRequest(finish=True))
    try:
        await pb_grpc.FilesStub(channel).Upload(iter(messages), timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _d(name: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return _member(name, tarfile.DIRTYPE)


def _f(name: str, data: bytes = b"evil\n") -> tuple[tarfile.TarInfo, bytes | None]:
    return _member(name, data=data)


def _sym(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return _member(name, tarfile.SYMTYPE, linkname=target)


def _hard(name: str, target: str) -> tuple[tarfile.TarInfo, bytes | None]:
    return _member(name, tarfile.LNKTYPE, linkname=target)


UNSAFE_ARCHIVES = {
    "dotdot first member": [_f("../evil")],
    "dotdot below the item": [_d("top"), _f("top/../../evil")],
    "dotdot deep": [_d("top"), _d("top/a"), _f("top/a/../../../evil")],
    "absolute first member": [_f("/tmp/evil")],
    "absolute below": [_d("top"), _f("/evil")],
    "member outside the item": [_d("top"), _f("other/evil")],
    "absolute symlink": [_d("top"), _sym("top/l", "/")],
    "symlink out then a file through it": [_d("top"), _sym("top/l", "../.."), _f("top/l/evil")],
    "symlink to the destination then a file over a sibling": [_d("top"), _sym("top/l", ".."), _f("top/l/victim")],
    "dangling symlink made to lead out by a later one": [
        _d("top"), _sym("top/a", "b/../.."), _sym("top/b", ".."), _f("top/a/evil")],
    "hard link out of the tree": [_d("top"), _hard("top/h", "../victim")],
    "hard link to an absolute path": [_d("top"), _hard("top/h", "/etc/shadow")],
    "hard link to a member that does not exist": [_d("top"), _hard("top/h", "top/missing")],
    "hard link through a symlink to a sibling": [_d("top"), _sym("top/l", ".."), _hard("top/h", "top/l/victim")],
    "directory made through a symlink to the destination": [_d("top"), _sym("top/l", ".."), _d("top/l/newdir")],
}


@pytest.mark.parametrize("members", list(UNSAFE_ARCHIVES.values()), ids=list(UNSAFE_ARCHIVES))
async def test_unsafe_archives_sent_straight_to_upload(box: boxlite.SimpleBox, channel: grpc.aio.Channel,
                                                       workdir: str, members: list[tuple[tarfile.TarInfo, bytes]]
                                                       ) -> None:
    # workdir/victim: a sibling of the destination; workdir/dest/victim: a sibling of the copied item.
    await box.exec("sh", "-c", f"echo secret > {workdir}/victim && echo secret > {workdir}/dest/victim", check=True)
    before = (await box.exec("sh", "-c", "find /tmp /etc /evil -newer /proc/1 2>/dev/null | sort")).stdout
    code, detail = await _upload(channel, f"{workdir}/dest", _tar(*members))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, detail)
    assert detail
    check = await box.exec("sh", "-c", f"cat {workdir}/victim {workdir}/dest/victim; "
                           f"ls {workdir}/evil {workdir}/dest/evil /evil /tmp/evil 2>&1 | grep -v 'No such' || true; "
                           f"find {workdir} -samefile {workdir}/victim; find {workdir} -samefile {workdir}/dest/victim")
    assert check.stdout == (f"secret\nsecret\n{workdir}/victim\n{workdir}/dest/victim\n"), check.stdout
    after = (await box.exec("sh", "-c", "find /tmp /etc /evil -newer /proc/1 2>/dev/null | sort")).stdout
    new = set(after.split()) - set(before.split())
    assert all(p.startswith(f"{workdir}/dest/top") or p == f"{workdir}/dest" for p in new), new


async def test_safe_tricky_archive_lands_inside(box: boxlite.SimpleBox, channel: grpc.aio.Channel,
                                                workdir: str) -> None:
    """What is allowed stays inside the item: links within it, a hard link to an earlier member, a device node
    and a FIFO (the agent is root in the box, as `tar -x` by root would make them; they are made only inside)."""
    null = tarfile.TarInfo("top/null")
    null.type, null.devmajor, null.devminor, null.mode = tarfile.CHRTYPE, 1, 3, 0o666
    archive = _tar(_d("top"), _d("top/sub"), _f("top/sub/f", b"data\n"), _sym("top/l", "sub"),
                   _sym("top/up", "../top/sub/f"), _hard("top/h", "top/sub/f"), (null, None),
                   _member("top/fifo", tarfile.FIFOTYPE))
    code, detail = await _upload(channel, f"{workdir}/dest", archive)
    assert code == grpc.StatusCode.OK, detail
    r = await box.exec("sh", "-c", f"cd {workdir}/dest/top && cat l/f up h && stat -c '%F %t:%T' null fifo",
                       check=True)
    assert r.stdout == "data\ndata\ndata\ncharacter special file 1:3\nfifo 0:0\n"
    await assert_alive(box, channel)


# -- a real kernel, fed garbage ----------------------------------------------------------------------------------------
async def test_garbage_frames_to_a_running_kernel(runtime: boxlite.Boxlite) -> None:
    """Kernel.Connect relays whatever frames arrive, unread: garbage on every channel (and on channels that do not
    exist), empty and oversized frames, an identity ZeroMQ cannot carry. The kernel and the agent carry on."""
    async with boxlite.CodeBox(runtime=runtime, memory_mib=768) as cb:
        assert "42" in str(await cb.run("6 * 7"))
        path = cb.box.socket_dir / "portal.sock"
        async with grpc.aio.insecure_channel(f"unix:{path}", options=[("grpc.max_send_message_length", 8 * MIB)]
                                             ) as ch:
            kernel = pb_grpc.KernelStub(ch)
            garbage = [os.urandom(64), b"", b"<IDS|MSG>", b"{not json", os.urandom(3 * MIB)]
            channels = [pb.SHELL, pb.IOPUB, pb.STDIN, pb.CONTROL, 99, -1]
            messages = [pb.KernelClientMessage(message=pb.KernelFrames(channel=c, frames=frames))  # type: ignore[arg-type]
                        for c in channels for frames in ([g] for g in garbage)]
            messages += [pb.KernelClientMessage(message=pb.KernelFrames(channel=pb.SHELL, frames=[b""] * 1000)),
                         pb.KernelClientMessage(message=pb.KernelFrames(channel=pb.SHELL, frames=[])),
                         pb.KernelClientMessage(connect=pb.KernelConnect(kernel_id="default"))]
            for identity in (b"", b"x" * 1000, os.urandom(16)):
                first = pb.KernelClientMessage(connect=pb.KernelConnect(kernel_id="default", identity=identity))
                call = kernel.Connect(iter([first, *messages]), timeout=CALL_TIMEOUT)
                try:
                    async for _ in call:
                        pass
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED), exc
        # The kernel keeps its state and answers; the agent answers too.
        assert "43" in str(await cb.run("6 * 7 + 1"))
        await cb.box._client.ping()
        assert (await cb.exec("echo", "ok")).stdout == "ok\n"
