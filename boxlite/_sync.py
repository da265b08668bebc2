"""The synchronous facade: the same API without `await`, for scripts, REPLs and notebooks.

Every call is run on one event loop in a background thread shared by the process (anyio's blocking portal),
so it works both where no loop runs and from inside one (a notebook cell), and objects made through it keep
living on the loop they belong to.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from boxlite._box import Box, BoxInfo
from boxlite._code_results import CodeExecution
from boxlite._execution import ExecResult, ExecStatus, Execution
from boxlite._metrics import BoxMetrics, RuntimeMetrics
from boxlite._options import BoxOptions, Options
from boxlite._runtime import Boxlite
from boxlite._simplebox import SimpleBox

T = TypeVar("T")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_cm: AbstractContextManager[BlockingPortal] | None = None


def _call(func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    global _portal, _portal_cm
    with _lock:
        if _portal is None:
            _portal_cm = start_blocking_portal(backend="asyncio")
            _portal = _portal_cm.__enter__()
            atexit.register(_close_portal)
        portal = _portal

    async def run() -> T:
        return await func(*args, **kwargs)

    return portal.call(run)


def _close_portal() -> None:
    global _portal, _portal_cm
    with _lock:
        if _portal_cm is not None:
            _portal_cm.__exit__(None, None, None)
        _portal = _portal_cm = None


def _iterate(make: Callable[[], Any]) -> Iterator[Any]:
    """Drive an async iterator living on the portal's loop, one item per call."""
    iterator = _call(_identity, make())
    while True:
        try:
            yield _call(iterator.__anext__)
        except StopAsyncIteration:
            return


async def _identity(value: T) -> T:
    return value


class SyncExecution:
    def __init__(self, execution: Execution) -> None:
        self._execution = execution

    @property
    def id(self) -> str:
        return self._execution.id

    def stdout(self) -> Iterator[str]:
        return _iterate(self._execution.stdout)

    def stderr(self) -> Iterator[str]:
        return _iterate(self._execution.stderr)

    def write_stdin(self, data: bytes | str) -> None:
        _call(self._execution.write_stdin, data)

    send_input = write_stdin

    def close_stdin(self) -> None:
        _call(self._execution.close_stdin)

    def wait(self, timeout: float | None = None) -> ExecStatus:
        return _call(self._execution.wait, timeout)

    def resize(self, rows: int, cols: int) -> None:
        _call(self._execution.resize, rows, cols)

    def kill(self, signal: int = 9) -> None:
        _call(self._execution.kill, signal)


class SyncBox:
    def __init__(self, box: Box) -> None:
        self._box = box

    @property
    def id(self) -> str:
        return self._box.id

    @property
    def name(self) -> str | None:
        return self._box.name

    def start(self) -> None:
        _call(self._box.start)

    def stop(self) -> None:
        _call(self._box.stop)

    def info(self) -> BoxInfo:
        return self._box.info()

    def metrics(self) -> BoxMetrics:
        return _call(self._box.metrics)

    def exec(self, cmd: str, args: list[str] | None = None, **kwargs: Any) -> SyncExecution:
        return SyncExecution(_call(self._box.exec, cmd, args, **kwargs))


class SyncBoxlite:
    """`Boxlite` without await: `with SyncBoxlite.default() as rt: box = rt.create(BoxOptions())`."""

    def __init__(self, options: Options | None = None, *, runtime: Boxlite | None = None) -> None:
        self._runtime = runtime or Boxlite(options)

    @classmethod
    def default(cls) -> SyncBoxlite:
        return cls(runtime=Boxlite.default())

    def create(self, options: BoxOptions | None = None, name: str | None = None) -> SyncBox:
        return SyncBox(_call(self._runtime.create, options, name))

    def get(self, id_or_name: str) -> SyncBox | None:
        box = _call(self._runtime.get, id_or_name)
        return SyncBox(box) if box is not None else None

    def list_info(self) -> list[BoxInfo]:
        return _call(self._runtime.list_info)

    def remove(self, id_or_name: str, force: bool = False) -> None:
        _call(self._runtime.remove, id_or_name, force)

    def metrics(self) -> RuntimeMetrics:
        return _call(self._runtime.metrics)

    def close(self) -> None:
        _call(self._runtime.close)

    shutdown = close

    def __enter__(self) -> SyncBoxlite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncSimpleBox:
    """`SimpleBox` without await: `with SyncSimpleBox() as box: print(box.exec("echo", "hi").stdout)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._simple = SimpleBox(*args, **kwargs)

    @property
    def id(self) -> str:
        return self._simple.id

    def start(self) -> SyncSimpleBox:
        _call(self._simple.start)
        return self

    def stop(self) -> None:
        _call(self._simple.stop)

    def __enter__(self) -> SyncSimpleBox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> BoxInfo:
        return self._simple.info()

    def metrics(self) -> BoxMetrics:
        return _call(self._simple.metrics)

    def exec(self, cmd: str, *args: str, **kwargs: Any) -> ExecResult:
        return _call(self._simple.exec, cmd, *args, **kwargs)

    def copy_in(self, host_path: str, container_dest: str, **kwargs: Any) -> None:
        _call(self._simple.copy_in, host_path, container_dest, **kwargs)

    def copy_out(self, container_src: str, host_dest: str, **kwargs: Any) -> None:
        _call(self._simple.copy_out, container_src, host_dest, **kwargs)


class SyncCodeBoxFiles:
    def __init__(self, files: Any) -> None:
        self._files = files

    def write(self, path: str, data: bytes | str, mode: int = 0o644) -> str:
        return _call(self._files.write, path, data, mode)

    def read(self, path: str, *, text: bool = False) -> bytes | str:
        return _call(self._files.read, path, text=text)

    def list(self, path: str = ".") -> list[Any]:
        return _call(self._files.list, path)


class SyncCodeBox(SyncSimpleBox):
    """`CodeBox` without await: `with SyncCodeBox() as cb: print(cb.run("x = 6*7; x"))`.

    Callbacks (on_stdout, ...) are called on the library's background thread.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from boxlite._codebox import CodeBox

        self._simple = self._codebox = CodeBox(*args, **kwargs)
        self.files = SyncCodeBoxFiles(self._codebox.files)

    def start(self) -> SyncCodeBox:
        _call(self._codebox.start)
        return self

    def __enter__(self) -> SyncCodeBox:
        return self.start()

    def run(self, code: str, timeout: float | None = None, **callbacks: Any) -> CodeExecution:
        return _call(self._codebox.run, code, timeout, **callbacks)

    def run_script(self, script_path: str, timeout: float | None = None) -> CodeExecution:
        return _call(self._codebox.run_script, script_path, timeout)

    def restart(self) -> None:
        _call(self._codebox.restart)

    def interrupt(self) -> None:
        _call(self._codebox.interrupt)

    def install_package(self, package: str) -> str:
        return _call(self._codebox.install_package, package)

    def install_packages(self, *packages: str) -> str:
        return _call(self._codebox.install_packages, *packages)

