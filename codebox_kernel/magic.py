"""`%load_ext codebox_kernel` in any IPython: the `%%boxlite` cell magic and the `%boxlite` line magics.

    %%boxlite [--name N] [--image I] [--timeout S] [--cpus C] [--memory MIB]
    %boxlite list | stop [NAME | --all] | restart [NAME] | info [NAME]

Each name is one CodeBox (a microVM with an IPython kernel in it), created on the first cell that uses it and
kept until `%boxlite stop` or until this IPython process exits, so variables persist from cell to cell.

Box calls run on an event loop of their own in a background thread (an IPython kernel already runs a loop in
its main thread). What the box prints, displays and asks for comes back to the main thread through a queue and
is written there, so it lands in the cell that ran the code, as it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import getpass
import queue
import re
import shlex
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import publish_display_data

import boxlite
from boxlite import BoxliteError, CodeBox, CodeError, EngineError, PortalError, Result
from codebox_kernel import readable
from codebox_kernel.watchdog import alive

__all__ = ["BoxCellError", "BoxliteMagics", "load_ipython_extension", "unload_ipython_extension"]

T = TypeVar("T")

DEFAULT_NAME = "default"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RED, RESET = "\x1b[0;31m", "\x1b[0m"
INTERRUPT_TIMEOUT_S = 30.0


# -- errors IPython shows briefly --------------------------------------------------------------------------------
class BoxCellError(Exception):
    """The code raised inside the box. IPython shows the box's own traceback (`_render_traceback_`), not the
    magic's; the exception's class is named after the box's exception (so a frontend's `ename` is, say,
    "ZeroDivisionError") and `error` is the box's `CodeError`."""

    def __init__(self, error: CodeError) -> None:
        super().__init__(error.value)
        self.error = error

    def _render_traceback_(self) -> list[str]:
        return list(self.error.traceback_lines) or [f"{RED}{self.error.name}{RESET}: {self.error.value}"]


@functools.lru_cache(maxsize=256)
def _cell_error_class(name: str) -> type[BoxCellError]:
    return type(name, (BoxCellError,), {"__module__": __name__, "__doc__": BoxCellError.__doc__})


def _cell_error(error: CodeError) -> BoxCellError:
    name = error.name if error.name.isidentifier() else "BoxCellError"
    return _cell_error_class(name)(error)


def _brief(exc: BoxliteError, *notes: str) -> BoxliteError:
    """Let IPython show a library error as one colored line (its name, message and fix) plus `notes`."""
    public = next(c for c in type(exc).__mro__ if c.__module__ == "boxlite.errors")  # what users catch
    lines = [f"{RED}boxlite.errors.{public.__name__}{RESET}: {exc}", *notes]
    exc._render_traceback_ = lambda: lines  # type: ignore[attr-defined]
    return exc


class _HelpShown(Exception):  # noqa: N818 - not an error: --help was printed
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as IPython's UsageError instead of exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().strip()}\n(`%boxlite?` shows the full help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if status:
            self.error(message or "bad arguments")
        raise _HelpShown


def _box_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"bad box name {value!r}: use 1-64 letters, digits, '-', '_' or '.', "
                                         "starting with a letter or digit")
    return value


def _positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(value: str) -> T:
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not number > 0:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
        return number

    parse.__name__ = kind.__name__
    return parse


def _cell_parser() -> _Parser:
    parser = _Parser(prog="%%boxlite", description="Run the cell in a persistent CodeBox (a microVM).")
    parser.add_argument("--name", type=_box_name, default=DEFAULT_NAME,
                        help=f"which box (default {DEFAULT_NAME!r}); another name is another box")
    parser.add_argument("--image", help="the image of a new box (default boxlite.CODEBOX_IMAGE)")
    parser.add_argument("--timeout", type=_positive(float), metavar="S",
                        help="interrupt the cell after S seconds (the box keeps its state)")
    parser.add_argument("--cpus", type=_positive(int), metavar="C", help="vCPUs of a new box")
    parser.add_argument("--memory", type=_positive(int), metavar="MIB", help="memory of a new box, in MiB")
    return parser


def _line_parser() -> _Parser:
    parser = _Parser(prog="%boxlite", description="Manage the boxes of %%boxlite cells.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                     metavar="{list,stop,restart,info}")
    commands.add_parser("list", help="this session's boxes and their state")
    stop = commands.add_parser("stop", help="stop and remove a box (its variables and files are gone)")
    which = stop.add_mutually_exclusive_group()
    which.add_argument("name", nargs="?", type=_box_name, help=f"the box (default {DEFAULT_NAME!r})")
    which.add_argument("--all", action="store_true", help="every box of this session")
    restart = commands.add_parser("restart", help="a fresh kernel in a box (files stay, variables go)")
    restart.add_argument("name", nargs="?", type=_box_name, default=DEFAULT_NAME)
    info = commands.add_parser("info", help="a box's details")
    info.add_argument("name", nargs="?", type=_box_name, default=DEFAULT_NAME)
    return parser


def _parse(parser: _Parser, line: str) -> argparse.Namespace:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot split the arguments {line!r}: {exc}") from None
    return parser.parse_args(words)


# -- the loop thread ---------------------------------------------------------------------------------------------
class _Loop:
    """An asyncio event loop on a daemon thread: every box call of the magic runs there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="boxlite-magic", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` there and wait for it; Ctrl-C (KeyboardInterrupt) here cancels it."""
        future = self.submit(coro)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class _Box:
    """One named box of this session."""

    name: str
    codebox: CodeBox
    cells: int = 0

    def check_options(self, args: argparse.Namespace) -> None:
        """A box is made once: options that would make it differently are a mistake, said so."""
        opts = self.codebox.options
        asked = {"--image": (args.image, opts.image), "--cpus": (args.cpus, opts.cpus),
                 "--memory": (args.memory, opts.memory_mib)}
        differ = [f"{flag} {want} (it has {have})" for flag, (want, have) in asked.items()
                  if want is not None and want != have]
        if differ:
            raise UsageError(f"box {self.name!r} already runs and cannot change: {', '.join(differ)}. "
                             f"Run `%boxlite stop {self.name}` first, or use another --name")


# -- the magics --------------------------------------------------------------------------------------------------
@magics_class
class BoxliteMagics(Magics):
    """`%%boxlite` runs a cell in a persistent CodeBox; `%boxlite list|stop|restart|info` manage the boxes."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.boxes: dict[str, _Box] = {}
        self._loop: _Loop | None = None
        self._runtime: boxlite.Boxlite | None = None

    @line_cell_magic
    def boxlite(self, line: str, cell: str | None = None) -> Any:
        """Run a cell in a persistent BoxLite CodeBox (a microVM with an IPython kernel), or manage the boxes.

        %%boxlite [--name N] [--image I] [--timeout S] [--cpus C] [--memory MIB]
            Runs the cell in box N (default "default"), created on first use (--image, --cpus and --memory
            apply then) and kept until stopped or until this IPython exits: variables persist across cells.
            Printed text, plots and other rich output appear as they come; input() asks here; an exception
            in the box fails this cell with the box's traceback. --timeout interrupts the cell after S seconds.

        %boxlite list                   this session's boxes and their state
        %boxlite stop [NAME | --all]    stop and remove a box (default "default"), or all of them
        %boxlite restart [NAME]         a fresh kernel in the box: files stay, variables go
        %boxlite info [NAME]            the box's details
        """
        try:
            return self._line(line) if cell is None else self._cell(line, cell)
        except _HelpShown:
            return None

    # -- %%boxlite ---------------------------------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> Result | None:
        args = _parse(_cell_parser(), line)
        box = self._box(args)
        try:
            return self._run(box, cell, args.timeout)
        except (EngineError, PortalError) as exc:
            raise self._after_failure(box, exc) from None
        except BoxliteError as exc:
            raise _brief(exc) from None

    def _box(self, args: argparse.Namespace) -> _Box:
        box = self.boxes.get(args.name)
        if box is not None:
            box.check_options(args)
            return box
        loop = self._loop_thread()

        async def start() -> CodeBox:
            if self._runtime is None:
                self._runtime = boxlite.Boxlite()
            codebox = CodeBox(args.image, memory_mib=args.memory, cpus=args.cpus, runtime=self._runtime)
            await codebox.start()
            return codebox

        try:
            codebox = loop.call(start())
        except BoxliteError as exc:
            raise _brief(exc) from None
        box = self.boxes[args.name] = _Box(args.name, codebox)
        return box

    def _run(self, box: _Box, code: str, timeout: float | None) -> Result | None:
        """Run `code` in the box, showing its outputs as they come; returns the cell's value (IPython then
        shows it as this cell's result), raises BoxCellError when the code raised."""
        loop = self._loop_thread()
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

        async def on_input(prompt: str, password: bool) -> str:
            answer: concurrent.futures.Future[str] = concurrent.futures.Future()
            events.put(("input", (prompt, password, answer)))
            return await asyncio.wrap_future(answer)

        run = loop.submit(box.codebox.run(
            code, timeout,
            on_stdout=lambda text: events.put(("stdout", text)),
            on_stderr=lambda text: events.put(("stderr", text)),
            on_result=lambda result: events.put(("result", result)),
            on_input=on_input if self._stdin_allowed() else None,
        ))
        run.add_done_callback(lambda _: events.put(("done", None)))
        value: Result | None = None
        done = False
        while not done:
            try:
                kind, payload = events.get()
                if kind == "done":
                    done = True
                elif kind in ("stdout", "stderr"):
                    stream = sys.stdout if kind == "stdout" else sys.stderr
                    stream.write(payload)
                    stream.flush()
                elif kind == "result" and payload.is_main_result:
                    value = payload
                elif kind == "result":
                    publish_display_data(payload.data, payload.metadata)
                elif kind == "input":
                    self._answer(box, *payload)
            except KeyboardInterrupt:
                self._interrupt(box)  # the box's cell gets KeyboardInterrupt and ends; its traceback follows
        execution = run.result()
        box.cells += 1
        if execution.error is not None:
            raise _cell_error(execution.error)
        return value

    def _stdin_allowed(self) -> bool:
        """Whether input() may ask the user: always in a terminal, in a kernel when the frontend allows it."""
        kernel = getattr(self.shell, "kernel", None)
        return kernel is None or bool(getattr(kernel, "_allow_stdin", False))

    def _answer(self, box: _Box, prompt: str, password: bool, answer: concurrent.futures.Future[str]) -> None:
        """input() in the box: ask here. Without an answer (Ctrl-C, end of input) the box's cell is interrupted."""
        try:
            answer.set_result(getpass.getpass(prompt) if password else input(prompt))
        except BaseException:
            self._interrupt(box)
            answer.set_result("")
            raise

    def _interrupt(self, box: _Box) -> None:
        with contextlib.suppress(BoxliteError, concurrent.futures.TimeoutError):
            self._loop_thread().submit(box.codebox.interrupt()).result(timeout=INTERRUPT_TIMEOUT_S)

    def _after_failure(self, box: _Box, exc: BoxliteError) -> BoxliteError:
        """The VM or the link to it failed: when the box is gone, forget it (the next cell starts a new one)."""
        (info,) = self._loop_thread().call(_infos([box.codebox]))
        if _vm_running(info):
            return _brief(exc, f"if this persists, `%boxlite stop {box.name}` ends the box (the next cell starts "
                               "a new one)")
        self.boxes.pop(box.name, None)
        with contextlib.suppress(BoxliteError):
            self._loop_thread().call(box.codebox.stop())
        return _brief(exc, f"box {box.name!r} has ended and its variables are lost; "
                           "the next %%boxlite cell with that name starts a new box")

    # -- %boxlite ----------------------------------------------------------------------------------------------
    def _line(self, line: str) -> None:
        args = _parse(_line_parser(), line)
        try:
            if args.command == "list":
                self._list()
            elif args.command == "stop":
                self._stop(list(self.boxes) if args.all else [args.name or DEFAULT_NAME])
            elif args.command == "restart":
                box = self._named(args.name)
                self._loop_thread().call(box.codebox.restart())
                print(f"restarted the kernel of box {box.name!r}: its variables are gone, its files stay")
            elif args.command == "info":
                self._info(self._named(args.name))
        except BoxliteError as exc:
            raise _brief(exc) from None

    def _named(self, name: str) -> _Box:
        box = self.boxes.get(name)
        if box is None:
            known = ", ".join(repr(n) for n in self.boxes) or "none yet"
            raise UsageError(f"no box named {name!r} in this session (boxes: {known}); a %%boxlite cell "
                             f"with --name {name} starts it")
        return box

    def _list(self) -> None:
        if not self.boxes:
            print("no boxes: a %%boxlite cell starts one")
            return
        infos = self._loop_thread().call(_infos([b.codebox for b in self.boxes.values()]))
        rows = [("NAME", "BOX ID", "STATE", "IMAGE", "CPUS", "MEMORY", "CELLS")]
        for box, info in zip(self.boxes.values(), infos, strict=True):
            rows.append((box.name, info.id if info else "-", _state(info),
                         info.image if info else box.codebox.options.image or "",
                         str(info.cpus) if info else "-", readable.mib(info.memory_mib) if info else "-",
                         str(box.cells)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    def _info(self, box: _Box) -> None:
        (info,) = self._loop_thread().call(_infos([box.codebox]))
        if info is None:
            print(f"box {box.name!r}: gone (its VM ended); `%boxlite stop {box.name}` forgets it")
            return
        fields = {
            "name": box.name, "box id": info.id, "state": _state(info), "image": info.image,
            "cpus": info.cpus, "memory": readable.mib(info.memory_mib),
            "boot": readable.boot(info.boot, info.guest_boot_ms), "started at": readable.moment(info.started_at),
            "cells run": box.cells, "kernel restarts": box.codebox.kernel_restarts,
            "working directory": box.codebox.workdir, "box directory": info.box_dir,
        }
        width = max(len(k) for k in fields)
        for key, value in fields.items():
            print(f"{key + ':':<{width + 1}} {value}")

    def _stop(self, names: list[str]) -> None:
        boxes = [self._named(name) for name in names]
        if not boxes:
            print("no boxes to stop")
        for box in boxes:
            self._loop_thread().call(box.codebox.stop())
            del self.boxes[box.name]
            print(f"stopped box {box.name!r}")

    # -- the loop and the end ----------------------------------------------------------------------------------
    def _loop_thread(self) -> _Loop:
        if self._loop is None:
            self._loop = _Loop()
        return self._loop

    def close(self) -> None:
        """Stop every box of the session and the loop thread (when the extension is unloaded)."""
        if self._loop is None:
            return
        for box in list(self.boxes.values()):
            with contextlib.suppress(BoxliteError):
                self._loop.call(box.codebox.stop())
        self.boxes.clear()
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            with contextlib.suppress(BoxliteError):
                self._loop.call(runtime.close())
        self._loop.close()
        self._loop = None


async def _infos(codeboxes: list[CodeBox]) -> list[Any]:
    """Each box's BoxInfo, None for one whose record is gone."""
    infos: list[Any] = []
    for codebox in codeboxes:
        try:
            infos.append(codebox.box.info())
        except BoxliteError:
            infos.append(None)
    return infos


def _vm_running(info: Any) -> bool:
    """Whether the box runs: its record says so and its VM process lives (the record lags a VM that died)."""
    return info is not None and info.status == "running" and bool(info.pid) and alive(info.pid)


def _state(info: Any) -> str:
    if info is None:
        return "gone"
    return "ended" if info.status == "running" and not _vm_running(info) else str(info.status)


# -- the extension -----------------------------------------------------------------------------------------------
_loaded: dict[int, BoxliteMagics] = {}


def load_ipython_extension(ipython: Any) -> None:
    """Register `%%boxlite` and `%boxlite` in this IPython."""
    magics = BoxliteMagics(ipython)
    ipython.register_magics(magics)
    _loaded[id(ipython)] = magics


def unload_ipython_extension(ipython: Any) -> None:
    """Stop this session's boxes and remove the magics."""
    magics = _loaded.pop(id(ipython), None)
    if magics is not None:
        magics.close()
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("boxlite", None)
    ipython.magics_manager.registry.pop(BoxliteMagics.__name__, None)
