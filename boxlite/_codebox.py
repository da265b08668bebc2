"""CodeBox: a box with a live IPython kernel in it, for notebooks and LLM agent loops.

Unlike a `python -c` per call, state persists between runs (variables, imports, open files), and every run
returns what a Jupyter user would see: printed text, rich results (PNG charts, HTML tables, SVG, JSON...), and
a structured error. A timeout interrupts the cell (KeyboardInterrupt) and leaves the kernel usable; a kernel
that dies (segfault, os._exit, out of memory) is restarted for the next run, and the run says so.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import io
import json
import os
import posixpath
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from boxlite._box import Box
from boxlite._code_results import DEFAULT_MAX_OUTPUT_BYTES, Callback, CodeExecution, RunCollector
from boxlite._errors import (
    BoxliteError,
    ConfigError,
    ExecError,
    ExecutionError,
    InvalidStateError,
    NotFoundError,
    ParseError,
    TimeoutError,
)
from boxlite._kernel_client import KernelClient, KernelGone
from boxlite._portal import portal_pb2 as pb
from boxlite._runtime import Boxlite
from boxlite._simplebox import SimpleBox

# How long an interrupted cell may take to stop before the kernel is restarted instead.
INTERRUPT_GRACE_S = 5.0
KERNEL_START_TIMEOUT_S = 120.0
KERNEL_ENV = {
    # Figures become image/png display data, as in any notebook (the image may default to a file backend).
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "PYTHONUNBUFFERED": "1",
}

# How the kernel is started: ipykernel, with five changes made by this launcher (python3 -c):
# - in a VM restored from a template (the kernel was started before the snapshot), the agent signals the kernel
#   (SIGRTMIN+5), which then reseeds its `random` (and numpy's) and takes the clone's hostname.
# - without its debugger unless asked (`--no-debugger`): importing debugpy costs ~2 s of the kernel's start under
#   emulation, and a sandboxed agent loop never attaches one. CodeBox(debugger=True) keeps it (Jupyter's panel).
# - printed output is flushed once a megabyte has gathered, not only every 0.2 s: a cell printing fast would
#   otherwise build one message of tens of MB (and stall on it everywhere); the writer now waits for its flush.
# - history lives in memory (In/Out, %history and history requests work within the kernel's life): the default
#   SQLite file on the box's disk cost ~35 ms per cell under emulation, more than the rest of a `1+1` cell.
# - with an ipykernel older than 6.18 (bookworm's 6.17, in the CodeBox image), which predates the `comm` package,
#   comm.create_comm and comm.get_comm_manager are pointed at ipykernel's comms, as ipykernel 6.18+ does itself:
#   otherwise a library using `comm` gets a DummyComm that never reaches the front end. (ipywidgets 8.1 has its
#   own fallback to ipykernel.comm for these versions; this covers the rest.)
KERNEL_LAUNCHER = """\
import os, random, signal, socket, sys
def _renew(signum, frame):  # this VM was restored from a snapshot: a new machine (guest/kernels.py)
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    os.environ["HOSTNAME"] = socket.gethostname()
signal.signal(signal.SIGRTMIN + 5, _renew)
if "--no-debugger" in sys.argv:
    sys.argv.remove("--no-debugger")
    sys.modules["debugpy"] = None
from ipykernel import iostream, kernelapp
_write = iostream.OutStream.write
def _write_flushing(self, string):
    written = _write(self, string)
    buffer = getattr(self, "_buffer", None)
    if buffer is not None and buffer.tell() >= 1 << 20:
        self.flush()
    return written
iostream.OutStream.write = _write_flushing
from ipykernel import version_info
if version_info < (6, 18):
    try:
        import comm
    except ImportError:
        comm = None
    if comm is not None:
        def _create_comm(*args, **kwargs):
            from ipykernel.comm import Comm
            return Comm(*args, **kwargs)
        def _get_comm_manager():
            from IPython import get_ipython
            return get_ipython().kernel.comm_manager
        comm.create_comm, comm.get_comm_manager = _create_comm, _get_comm_manager
kernelapp.launch_new_instance()
"""


def default_kernel_argv(debugger: bool = False) -> list[str]:
    argv = ["python3", "-c", KERNEL_LAUNCHER, "-f", "{connection_file}", "--HistoryManager.hist_file=:memory:"]
    return argv if debugger else [*argv, "--no-debugger"]


InputHandler = Callable[[str, bool], "str | Awaitable[str]"]


def _default_image() -> str:
    from boxlite.images import CODEBOX_IMAGE

    return CODEBOX_IMAGE


@dataclass(frozen=True)
class FileEntry:
    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: float
    target: str | None = None


def _file_bytes(data: object, mode: object) -> bytes:
    """files.write's content as bytes; its arguments checked (bytes(5) would be five zero bytes)."""
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ConfigError(f"mode must be permission bits such as 0o644, got {mode!r}", fix="pass e.g. mode=0o644")
    if isinstance(data, str):
        try:
            return data.encode()
        except UnicodeEncodeError:
            raise ConfigError("the text holds a lone surrogate and cannot be written as UTF-8",
                              fix="pass bytes, or text that can be encoded as UTF-8") from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ConfigError(f"data must be bytes or str, got {type(data).__name__}", fix="pass e.g. str(value)")
    return bytes(data)


class CodeBoxFiles:
    """Files in the box, by path (in the box; relative paths are relative to the kernel's working directory)."""

    def __init__(self, codebox: CodeBox) -> None:
        self._codebox = codebox

    def _path(self, path: str) -> str:
        if not isinstance(path, str) or not path or "\0" in path:
            raise ConfigError(f"bad path in the box: {path!r}", fix="pass a non-empty path string")
        return posixpath.normpath(posixpath.join(self._codebox.workdir, path))

    async def write(self, path: str, data: bytes | str, mode: int = 0o644) -> str:
        """Write `data` to `path` (parent directories are created); returns the absolute path."""
        payload = _file_bytes(data, mode)
        target = self._path(path)
        box = self._codebox.box
        parent = posixpath.dirname(target)
        if parent != "/":
            result = await self._codebox.exec("mkdir", "-p", parent)
            if result.exit_code != 0:
                raise ExecutionError(f"cannot create {parent} in box {box.id}: {result.stderr.strip()}",
                                     fix="write somewhere the box's user may create directories")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo(posixpath.basename(target))
            info.size, info.mode, info.mtime = len(payload), mode, int(time.time())
            tf.addfile(info, io.BytesIO(payload))
        from boxlite._files import upload_archive

        await upload_archive(box, buf.getvalue(), target, overwrite=True)
        return target

    async def read(self, path: str, *, text: bool = False) -> bytes | str:
        """The content of file `path` (bytes; str with text=True). NotFoundError when missing."""
        from boxlite._files import download_file

        target = self._path(path)
        data = await download_file(self._codebox.box, target)
        try:
            return data.decode() if text else data
        except UnicodeDecodeError as exc:
            raise ParseError(f"{target} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                             fix="read it as bytes (text=False) and decode it as it is encoded") from None

    async def list(self, path: str = ".") -> list[FileEntry]:
        """The entries of directory `path` (or `path` itself when it is not a directory)."""
        target = self._path(path)
        box = self._codebox.box
        try:
            reply = await box._client.files.List(pb.ListRequest(path=target), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFoundError(f"no such file or directory in box {box.id}: {target}",
                                    fix="check the path (files.list('/') shows the top)") from None
            raise box._explain_portal_failure() from None
        return [FileEntry(e.name, e.path, e.type, e.size, e.mode, e.mtime, e.target or None) for e in reply.entries]


class CodeBox(SimpleBox):
    """A box running a persistent IPython kernel.

    kernel_argv: the kernel's command ("{connection_file}" is replaced), default ipykernel (without its
    debugger unless debugger=True); kernel_env adds to the box's environment; run() keeps at most
    max_output_bytes of printed text per cell.

        async with boxlite.CodeBox() as cb:
            await cb.run("import pandas as pd; df = pd.DataFrame({'a': [1, 2]})")
            result = await cb.run("df")          # result.results[0].html is the table
            print(await cb.run("print(len(df))"))  # prints 2
    """

    def __init__(
        self,
        image: str | None = None,
        memory_mib: int | None = None,
        cpus: int | None = None,
        runtime: Boxlite | None = None,
        *,
        kernel_argv: list[str] | None = None,
        debugger: bool = False,
        kernel_env: dict[str, str] | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(image or _default_image(), memory_mib=memory_mib, cpus=cpus, runtime=runtime, **kwargs)
        self.kernel_argv = list(kernel_argv or default_kernel_argv(debugger))
        self.kernel_env = {**KERNEL_ENV, **(kernel_env or {})}
        if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, int) or max_output_bytes < 0:
            raise ConfigError(f"max_output_bytes must be a whole number of bytes, got {max_output_bytes!r}",
                              fix="pass e.g. max_output_bytes=1_000_000")
        self.max_output_bytes = max_output_bytes
        self._kernel: KernelClient | None = None
        self._run_lock: asyncio.Lock | None = None
        self.files = CodeBoxFiles(self)
        self.kernel_restarts = 0

    @property
    def kernel(self) -> KernelClient:
        """The kernel bridge client (shared with the BoxLite Python Jupyter kernel)."""
        if self._kernel is None:
            raise InvalidStateError("the CodeBox has not been started",
                                    fix="use `async with CodeBox(...)` or `await codebox.start()` first")
        return self._kernel

    @property
    def workdir(self) -> str:
        """The kernel's working directory: relative paths of `files` are taken from there."""
        if self._kernel is not None and self._kernel.info is not None and self._kernel.info.cwd:
            return self._kernel.info.cwd
        return self._configured_workdir() or "/"

    def _configured_workdir(self, box: Box | None = None) -> str:
        rec = (box or self.box)._record
        return str(rec.config.get("working_dir") or rec.image.get("working_dir") or "")

    async def start(self) -> CodeBox:
        await super().start()
        if self._kernel is None or not self._kernel.connected:
            try:
                await self._start_kernel(restart=False)
            except BaseException:
                with contextlib.suppress(BoxliteError):
                    await super().stop()
                raise
        return self

    async def _create(self) -> Box:
        """Create the box with the kernel started in it before its start template is taken: a CodeBox
        restored from that template finds its kernel already running (see docs/snapshots.md)."""
        from boxlite._snapshots import Warmup

        async def start_kernel(box: Box) -> None:
            client = KernelClient(box)
            try:
                await client.start(self._process(box), timeout=KERNEL_START_TIMEOUT_S)
            finally:
                await client.disconnect()  # a template holds no open connection

        return await self.runtime.create(self.options, warmup=Warmup(self._warmup_tag(), start_kernel))

    def _warmup_tag(self) -> str:
        """What the template's kernel depends on beyond the image and resources (which its key has)."""
        opts = self.options
        described = json.dumps([self.kernel_argv, self.kernel_env, opts.env, opts.working_dir, opts.user],
                               sort_keys=True, default=str)
        return "codebox-kernel:" + hashlib.sha256(described.encode()).hexdigest()[:16]

    def _process(self, box: Box | None = None) -> pb.ExecRequest:
        rec = (box or self.box)._record
        env = dict(e.split("=", 1) for e in rec.image.get("env", []) if "=" in e)
        env.update(rec.config.get("env") or {})
        env.update(self.kernel_env)
        return pb.ExecRequest(argv=self.kernel_argv, env=env, cwd=self._configured_workdir(box),
                              user=rec.config.get("user") or rec.image.get("user") or "")

    async def _start_kernel(self, restart: bool) -> None:
        if self._kernel is None:
            self._kernel = KernelClient(self.box)
        if not restart and self.box.info().boot == "restored":
            # Restored from its template: the kernel came with the snapshot. Attaching to it saves the Start
            # call (the first call into a clone is slow under emulation: its code paths run for the first time).
            with contextlib.suppress(ExecutionError):
                await self._kernel.attach(timeout=KERNEL_START_TIMEOUT_S)
                return
        await self._kernel.start(self._process(), restart=restart, timeout=KERNEL_START_TIMEOUT_S)

    async def restart(self) -> None:
        """A fresh interpreter in the same box (files stay, variables go)."""
        await self._start_kernel(restart=True)
        self.kernel_restarts += 1

    async def interrupt(self) -> None:
        """KeyboardInterrupt in the running cell."""
        await self.kernel.interrupt()

    async def stop(self) -> None:
        kernel, self._kernel = self._kernel, None
        if kernel is not None:
            await kernel.disconnect()
        await super().stop()

    # -- running code -----------------------------------------------------------------------------------------
    async def run(
        self,
        code: str,
        timeout: float | None = None,
        *,
        on_stdout: Callback | None = None,
        on_stderr: Callback | None = None,
        on_result: Callback | None = None,
        on_error: Callback | None = None,
        on_input: InputHandler | None = None,
    ) -> CodeExecution:
        """Run `code` as one notebook cell; returns when it finishes (see CodeExecution).

        An exception in the code is returned as `execution.error`, not raised. `timeout` (seconds) interrupts
        the cell and raises TimeoutError (the partial execution is its `.execution`). on_stdout/on_stderr get
        text as it is printed, on_result each Result, on_error the CodeError (plain or async functions).
        on_input(prompt, password) answers input() and getpass(); without it they raise in the cell.
        """
        if not isinstance(code, str):
            raise ConfigError(f"code must be a str, not {type(code).__name__}", fix="pass the source code as text")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}",
                              fix="pass timeout=None for no limit")
        if self._run_lock is None:
            self._run_lock = asyncio.Lock()
        async with self._run_lock:
            kernel = self.kernel
            if not kernel.connected:
                await self.restart()  # the last kernel died; the run that saw it die said so
            collector = RunCollector(on_stdout=on_stdout, on_stderr=on_stderr, on_result=on_result,
                                     on_error=on_error, max_output_bytes=self.max_output_bytes)
            return await self._execute(code, timeout, collector, on_input)

    async def _execute(self, code: str, timeout: float | None, collector: RunCollector,
                       on_input: InputHandler | None) -> CodeExecution:
        kernel = self.kernel
        loop = asyncio.get_running_loop()
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": on_input is not None, "stop_on_error": False}
        if kernel.session is None:
            raise InvalidStateError("the kernel is not started", fix="await codebox.start() first")
        request = kernel.session.msg("execute_request", content)
        waiter = kernel.watch(request["header"]["msg_id"])
        deadline = loop.time() + timeout if timeout is not None else None
        interrupted_at: float | None = None
        try:
            await kernel.send_msg("shell", request)
            while not collector.done:
                wait = None
                if deadline is not None:
                    wait = (interrupted_at + INTERRUPT_GRACE_S if interrupted_at else deadline) - loop.time()
                try:
                    item = await asyncio.wait_for(waiter.queue.get(), max(wait, 0) if wait is not None else None)
                except builtins.TimeoutError:
                    if interrupted_at is None:
                        interrupted_at = loop.time()
                        await kernel.interrupt()
                        continue
                    # The cell ignored KeyboardInterrupt (stuck in C code, say): a new kernel it is.
                    await self.restart()
                    raise self._timeout_error(timeout, collector, restarted=True) from None
                if isinstance(item, KernelGone):
                    if item.error is not None and not isinstance(item.error, ExecutionError):
                        raise item.error
                    await self.restart()
                    await collector.kernel_gone(item, restarted=True)
                    break
                if item.channel == "stdin" and item.msg_type == "input_request":
                    await self._answer_input(item.content, request, on_input)
                    continue
                await collector.handle(item)
        finally:
            kernel.unwatch(request["header"]["msg_id"], waiter)
        if interrupted_at is not None:
            raise self._timeout_error(timeout, collector, restarted=False)
        return collector.execution()

    def _timeout_error(self, timeout: float | None, collector: RunCollector, restarted: bool) -> TimeoutError:
        if restarted:
            how = (f"it did not stop within {INTERRUPT_GRACE_S:g} s of KeyboardInterrupt, so the kernel was "
                   "restarted: variables and imports are lost")
        else:
            how = "it was interrupted (KeyboardInterrupt); the kernel and its state are kept"
        error = TimeoutError(f"code ran longer than {timeout:g} s; {how}",
                             fix="raise the timeout, or make the code finish sooner")
        error.execution = collector.execution()  # type: ignore[attr-defined]
        return error

    async def _answer_input(self, content: dict[str, Any], parent: dict[str, Any],
                            on_input: InputHandler | None) -> None:
        value = ""
        if on_input is not None:
            answer = on_input(str(content.get("prompt", "")), bool(content.get("password", False)))
            value = await answer if isinstance(answer, Awaitable) else answer
        await self.kernel.send("stdin", "input_reply", {"value": str(value)}, parent=parent["header"])

    async def run_script(self, script_path: str | os.PathLike[str], timeout: float | None = None) -> CodeExecution:
        """Run a host Python file's source as one cell."""
        try:
            with open(script_path, encoding="utf-8") as f:
                code = f.read()
        except FileNotFoundError:
            raise NotFoundError(f"script not found: {script_path}", fix="pass the path of a Python file on the "
                                "host") from None
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8 text, or a NUL byte in the path
            raise ConfigError(f"cannot read the script {script_path!r}: {exc}",
                              fix="pass a readable UTF-8 Python file on the host") from None
        return await self.run(code, timeout=timeout)

    # -- packages ---------------------------------------------------------------------------------------------
    async def install_package(self, package: str) -> str:
        """pip install one package into the box's Python; returns pip's output (as upstream BoxLite)."""
        return await self.install_packages(package)

    async def install_packages(self, *packages: str) -> str:
        """pip install packages into the box's Python (the kernel sees them at once); returns pip's output.

        Raises ExecError (with pip's output) when pip fails: no network in the box, a missing package...
        """
        if not packages or not all(isinstance(p, str) and p.strip() for p in packages):
            raise ConfigError(f"install_packages needs package names, got {packages!r}",
                              fix="pass names like install_packages('requests', 'numpy==2.*')")
        result = await self.exec("python3", "-m", "pip", "install", "--disable-pip-version-check",
                                 "--no-input", "--root-user-action=ignore", *packages,
                                 env={"PIP_BREAK_SYSTEM_PACKAGES": "1"})
        output = result.stdout + result.stderr
        if result.exit_code != 0:
            raise ExecError("pip install " + " ".join(packages), result.exit_code, output,
                            fix="check the package names, and that the box has network (pip's output is on stderr)")
        return output
