"""The BoxLite Python kernel: a Jupyter kernel process on the host that relays every message to an IPython kernel
running inside a box.

Requests from the frontend are checked with the frontend's key and passed on unchanged (same header, so the
replies' parent headers are the frontend's own); the box kernel's replies and iopub messages come back through
the portal and are re-signed for the frontend, in the order they came. The host answers only what is about the
box itself: `%boxlite ...` cells, interrupts, shutdown, its metrics panel's comm, and failures (the box, the
portal, the engine, a timeout), which come back as ordinary error replies named by their BoxliteError class.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxlite import (
    BoxliteError,
    BoxMetrics,
    CodeBox,
    ExecutionError,
    KernelGone,
    KernelMessage,
    TimeoutError,
)
from codebox_kernel import commands, watchdog
from codebox_kernel.aborts import StopOnError, Tries
from codebox_kernel.errors import error_content, reply_type
from codebox_kernel.frontend import Frontend, Incoming
from codebox_kernel.history import History, default_path
from codebox_kernel.metrics import MetricsPanel, host_comm, install_host_comms
from codebox_kernel.notebook_box import NotebookBox
from codebox_kernel.settings import KernelSettings

log = logging.getLogger("codebox_kernel")

# After an interrupt for a timeout, how long the cell gets to stop before its kernel is replaced.
INTERRUPT_GRACE_S = 5.0
PARENT_POLL_S = 1.0
# How long a kernel_info_request waits for the first box before the host answers it.
KERNEL_INFO_WAIT_S = 20.0
RECOVER = "To carry on: `%boxlite restart` (a fresh interpreter; a new box if this one is gone)."
FALLBACK_LANGUAGE_INFO = {
    "name": "python", "version": "", "mimetype": "text/x-python", "file_extension": ".py",
    "pygments_lexer": "ipython3", "codemirror_mode": {"name": "ipython", "version": 3},
    "nbconvert_exporter": "python",
}


@dataclass
class Pending:
    """A request passed to the box whose reply has not come back yet."""

    request: Incoming
    timed_out: bool = False
    watchdog: asyncio.Task[None] | None = None
    result: str | None = None  # an execute_request's result as text (kept with the cell in the history)
    epoch: int = 0  # the error epoch in which the host received it (codebox_kernel/aborts.py)


@dataclass
class BoxKernel:
    frontend: Frontend
    settings: KernelSettings
    box: NotebookBox
    pending: dict[str, Pending] = field(default_factory=dict)
    execution_count: int = 0
    panels: list[MetricsPanel] = field(default_factory=list)
    history: History = field(default_factory=History)
    stop_on_error: StopOnError = field(default_factory=StopOnError)

    def __post_init__(self) -> None:
        self._ready = asyncio.Event()
        self._start_error: BaseException | None = None
        self._broken: BoxliteError | None = None  # the box died under us: say so until `%boxlite restart`
        # Shell requests with the error epoch in which they arrived.
        self._shell_queue: asyncio.Queue[tuple[Incoming, int]] = asyncio.Queue()
        self._tries: dict[str, Tries] = {}  # execute_requests whose status messages are filtered
        self._probe: str | None = None  # the first execute_request after an error, while it is not answered
        self._probe_answered = asyncio.Event()
        self._probe_answered.set()
        self._idle = asyncio.Event()  # no execute_request is running in the box
        self._idle.set()
        self._stopped = asyncio.Event()
        self._restart_requested = False
        self._parent: dict[str, Any] = {}  # header of the request being handled (widget output goes there)
        self._comm_info_requests: set[str] = set()
        self._first_execute = True
        self._box_session = ""  # the box kernel's own session id: a new one means a new interpreter
        self._tasks: set[asyncio.Task[Any]] = set()
        self._start_lock = asyncio.Lock()
        install_host_comms(self._publish_comm)

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def serve(self) -> bool:
        """Serve until shutdown; returns whether the frontend asked for a restart."""
        self.frontend.bind()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGINT, lambda: self._spawn(self._interrupt_box()))
            loop.add_signal_handler(signal.SIGTERM, self._stopped.set)
        workers = [loop.create_task(self.frontend.run_sender()), loop.create_task(self._serve_shell()),
                   loop.create_task(self.frontend.watch_subscriptions()), loop.create_task(self._watch_parent())]
        workers += [loop.create_task(self._receive(channel)) for channel in ("shell", "control", "stdin")]
        self._publish_status("starting")
        self._spawn(self._start_box())
        try:
            await self._stopped.wait()
        finally:
            for panel in self.panels:
                await panel.detach()
            await self.frontend.drain()
            for task in [*workers, *self._tasks]:
                task.cancel()
            await asyncio.gather(*workers, *self._tasks, return_exceptions=True)
            with contextlib.suppress(BoxliteError):
                await self.box.shutdown(restart=self._restart_requested)
            self.frontend.close()
        return self._restart_requested

    async def _watch_parent(self) -> None:
        """End (removing the box) when the process that started this kernel is gone, as ipykernel does: a
        notebook server that crashed must not leave VMs behind."""
        parent = os.getppid()
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_POLL_S)
        log.warning("the process that started this kernel (pid %d) is gone: shutting down", parent)
        self._stopped.set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_box(self) -> None:
        async with self._start_lock:  # one box at a time, whoever asks (the first requests after a stop, say)
            if self.box.started:
                return
            try:
                codebox = await self.box.start()
                codebox.kernel.add_listener(self._from_box)
                self._start_error = self._broken = None
            except Exception as exc:  # reported to every request until `%boxlite restart`
                log.error("the box could not be started: %s", exc)
                self._start_error = exc
            finally:
                self._ready.set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def _failure(self) -> BaseException | None:
        return self._start_error or self._broken

    # -- from the frontend ----------------------------------------------------------------------------------
    async def _receive(self, channel: str) -> None:
        while True:
            incoming = await self.frontend.recv(channel)
            if incoming is None:
                continue
            if channel == "shell":
                self._shell_queue.put_nowait((incoming, self.stop_on_error.epoch))
            elif channel == "control":
                self._spawn(self._on_control(incoming))
            else:
                self._spawn(self._forward(incoming))

    async def _serve_shell(self) -> None:
        """Shell requests in order: a `%boxlite` cell waits for the cells before it to finish in the box."""
        while True:
            incoming, epoch = await self._shell_queue.get()
            try:
                await self._on_shell(incoming, epoch)
            except Exception as exc:  # never let one request end the kernel
                log.exception("handling %s failed", incoming.msg_type)
                self._reply_error(incoming, exc)

    async def _on_shell(self, incoming: Incoming, epoch: int) -> None:
        content = incoming.content
        msg_type = incoming.msg_type
        if msg_type == "execute_request":
            argvs = commands.parse(str(content.get("code", "")))
            if argvs is not None:
                await self._idle.wait()
                await self._run_host_cell(incoming, argvs)
                return
            if self._first_execute and self.settings.metrics:
                self._first_execute = False
                await self._ready.wait()
                self._show_panel(incoming.msg["header"])
        elif msg_type in ("comm_msg", "comm_close"):
            comm = host_comm(str(content.get("comm_id", "")))
            if comm is not None:
                self._parent = incoming.msg["header"]
                (comm.handle_msg if msg_type == "comm_msg" else comm.handle_close)(incoming.msg)
                return
        elif msg_type == "comm_info_request":
            self._comm_info_requests.add(incoming.msg_id)
        elif msg_type == "history_request":
            await self._idle.wait()  # after the cells before it, as a kernel answers its shell requests in order
            self._answer_history(incoming)
            return
        elif msg_type == "kernel_info_request" and not self._ready.is_set():
            # A first box can take a while (a cold boot under emulation, an image build); frontends give up on
            # kernel_info after a minute (JupyterLab), so after a while the host answers for the box.
            with contextlib.suppress(builtins.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), KERNEL_INFO_WAIT_S)
            if not self._ready.is_set():
                header = incoming.msg["header"]
                self._publish("status", {"execution_state": "busy"}, header)
                self._reply(incoming, self._fallback_kernel_info("the box is still starting"))
                self._publish("status", {"execution_state": "idle"}, header)
                return
        await self._forward(incoming, epoch)

    async def _on_control(self, incoming: Incoming) -> None:
        if incoming.msg_type == "interrupt_request":
            try:
                await self._interrupt_box()
                self._reply(incoming, {"status": "ok"})
            except BoxliteError as exc:
                self._reply_error(incoming, exc)
        elif incoming.msg_type == "shutdown_request":
            restart = bool(incoming.content.get("restart", False))
            self._restart_requested = restart
            self._reply(incoming, {"status": "ok", "restart": restart})
            self._stopped.set()
        else:
            await self._forward(incoming)

    async def _forward(self, incoming: Incoming, epoch: int | None = None) -> None:
        """Pass a request to the box kernel; answer it here with the reason when the box cannot. `epoch`: the
        error epoch in which a shell request arrived."""
        is_cell = incoming.msg_type == "execute_request" and epoch is not None
        if is_cell:
            # Behind the first cell after an error (the shell requests after it wait here, in order): see
            # codebox_kernel/aborts.py.
            await self._probe_answered.wait()
            assert epoch is not None
            if self.stop_on_error.stale(epoch):  # sent before an error it waited for: Run All stops here
                self._answer_aborted(incoming)
                return
        await self._ready.wait()
        failure = self._failure()
        if failure is None and self.box.codebox is None:
            failure = self._start_error = await self._restart_box_quietly()
        if failure is not None:
            self._answer_without_box(incoming, failure)
            return
        codebox = self.box.require()
        if incoming.channel != "stdin":
            self.pending[incoming.msg_id] = pending = Pending(incoming, epoch=epoch or 0)
            if incoming.msg_type == "execute_request":
                self._idle.clear()
                if is_cell:
                    self._tries[incoming.msg_id] = Tries()
                    if self.stop_on_error.take_probe():
                        self._probe = incoming.msg_id
                        self._probe_answered.clear()
                if self.settings.timeout:
                    pending.watchdog = asyncio.ensure_future(self._watch_timeout(pending, codebox))
        try:
            await codebox.kernel.send_msg(incoming.channel, incoming.msg, incoming.msg.get("buffers") or None)
        except BoxliteError as exc:
            self._settle(incoming.msg_id)
            if incoming.channel != "stdin":
                self._reply_error(incoming, exc, recover=RECOVER, busy=True)

    async def _restart_box_quietly(self) -> BaseException | None:
        """After `%boxlite stop`, the next cell starts a new box."""
        await self._start_box()
        return self._failure()

    def _answer_without_box(self, incoming: Incoming, failure: BaseException) -> None:
        if incoming.msg_type == "kernel_info_request":
            self._reply(incoming, self._fallback_kernel_info(f"no box ({failure}). {RECOVER}"))
        elif incoming.channel != "stdin":
            self._reply_error(incoming, failure, recover=RECOVER, busy=True)

    def _fallback_kernel_info(self, why: str) -> dict[str, Any]:
        """kernel_info answered by the host (the box cannot say): Python, version unknown, and why."""
        return {"status": "ok", "protocol_version": "5.3", "implementation": "boxlite",
                "implementation_version": _version(), "language_info": FALLBACK_LANGUAGE_INFO,
                "banner": f"BoxLite Python: {why}", "help_links": []}

    # -- from the box ---------------------------------------------------------------------------------------
    def _from_box(self, item: KernelMessage | KernelGone) -> None:
        if isinstance(item, KernelGone):
            self._spawn(self._kernel_gone(item))
            return
        msg = item.msg
        parent = msg.get("parent_header") or {}
        codebox = self.box.codebox
        own = codebox.kernel.session if codebox is not None else None
        if own is not None and parent.get("session") == own.session:
            return  # the bridge's own requests (its readiness checks), not the frontend's
        parent_id = parent.get("msg_id")
        pending = self.pending.get(parent_id) if parent_id else None
        tries = self._tries.get(parent_id) if parent_id else None
        if item.channel == "iopub" and item.msg_type == "status" and tries is not None:
            for status in tries.status(msg):
                self.frontend.send("iopub", status)
            if tries.done:
                del self._tries[str(parent_id)]
                self._release_probe(parent_id)
        elif item.channel == "iopub":
            if pending is not None and pending.timed_out and item.msg_type == "error":
                msg = {**msg, "content": self._timeout_content()}
            elif pending is not None and item.msg_type == "execute_result":
                pending.result = (item.content.get("data") or {}).get("text/plain")
            self.frontend.send("iopub", msg)
        elif item.channel == "stdin":
            if pending is not None:
                self.frontend.send("stdin", msg, pending.request.idents)
        elif pending is not None and item.msg_type.endswith("_reply"):
            content = dict(msg.get("content") or {})
            if item.msg_type == "execute_reply" and self._retry(pending, content):
                return
            if item.msg_type == "execute_reply":
                self.execution_count = int(content.get("execution_count") or self.execution_count)
                self._remember(pending, str(msg["header"].get("session", "")), content)
                if pending.timed_out and content.get("status") == "error":
                    content.update(self._timeout_content())
            elif item.msg_type == "kernel_info_reply":
                banner = str(content.get("banner", ""))
                content["banner"] = f"BoxLite Python: IPython in box {self.box.name}.\n{banner}"
            elif item.msg_type == "comm_info_reply" and parent_id in self._comm_info_requests:
                self._comm_info_requests.discard(parent_id)
                content["comms"] = {**(content.get("comms") or {}), **self._host_comms()}
            self.frontend.send(pending.request.channel, {**msg, "content": content}, pending.request.idents)
            if item.msg_type == "execute_reply":
                self.stop_on_error.relayed(pending.request.content, content)
                self._after_reply(str(parent_id))
            self._settle(parent_id)

    def _retry(self, pending: Pending, reply: dict[str, Any]) -> bool:
        """Send a cell the box aborted to it again, when the frontend sent it after every error the host
        relayed (codebox_kernel/aborts.py); whether it did."""
        tries = self._tries.get(pending.request.msg_id)
        if tries is None or not self.stop_on_error.retry(pending.epoch, reply, tries.sent):
            return False
        log.info("the box aborted request %s, which came after the last error reply (ipykernel's stop on error "
                 "outlived the error): sending it again (try %d)", pending.request.msg_id, tries.sent + 1)
        tries.again()
        self._spawn(self._send_again(pending, tries.sent))
        return True

    async def _send_again(self, pending: Pending, try_number: int) -> None:
        incoming = pending.request
        # The same message again would carry the same signature, which the box's kernel drops as a replay; a
        # mark in the metadata makes it a new one (the header, which the reply names as its parent, is kept).
        msg = {**incoming.msg, "metadata": {**(incoming.msg.get("metadata") or {}), "boxlite_try": try_number}}
        try:
            await self.box.require().kernel.send_msg(incoming.channel, msg, msg.get("buffers") or None)
        except BoxliteError as exc:
            if incoming.msg_id in self.pending:
                self._settle(incoming.msg_id)
                self._reply_error(incoming, exc, recover=RECOVER)

    def _after_reply(self, msg_id: str) -> None:
        """A cell's reply went to the frontend: then its idle, if it came before the reply."""
        tries = self._tries.get(msg_id)
        if tries is None:
            return
        for status in tries.reply():
            self.frontend.send("iopub", status)
        if tries.done:
            del self._tries[msg_id]

    def _answer_aborted(self, incoming: Incoming) -> None:
        """Abort a cell here, as ipykernel aborts one queued behind a cell that failed."""
        header = incoming.msg["header"]
        self._publish("status", {"execution_state": "busy"}, header)
        self._reply(incoming, {"status": "aborted"})
        self._publish("status", {"execution_state": "idle"}, header)

    def _remember(self, pending: Pending, box_session: str, reply: dict[str, Any]) -> None:
        """Put a cell the box ran into the history, as IPython does: every cell run with store_history."""
        if box_session != self._box_session:
            if self._box_session:
                self.history.new_session()
            self._box_session = box_session
        request = pending.request.content
        if (reply.get("status") in ("ok", "error") and request.get("store_history", True)
                and not request.get("silent", False)):
            self.history.record(str(request.get("code", "")), int(reply.get("execution_count") or 0),
                                pending.result)

    def _answer_history(self, incoming: Incoming) -> None:
        header = incoming.msg["header"]
        self._publish("status", {"execution_state": "busy"}, header)
        self._reply(incoming, self.history.answer(incoming.content))
        self._publish("status", {"execution_state": "idle"}, header)

    def _settle(self, msg_id: str | None) -> None:
        pending = self.pending.pop(msg_id, None) if msg_id else None
        if pending is not None and pending.watchdog is not None:
            pending.watchdog.cancel()
        tries = self._tries.get(msg_id) if msg_id else None
        if tries is not None and not tries.replied:  # answered by the host: the box's statuses pass as they come
            del self._tries[str(msg_id)]
        if tries is None or not tries.replied:  # else the cells behind the probe wait for its idle too
            self._release_probe(msg_id)

    def _release_probe(self, msg_id: str | None) -> None:
        """The first cell after an error is over (its reply and idle went out): the requests behind it go on."""
        if msg_id is not None and msg_id == self._probe:
            self._probe = None
            self._probe_answered.set()
        if not any(p.request.msg_type == "execute_request" for p in self.pending.values()):
            self._idle.set()

    async def _kernel_gone(self, gone: KernelGone) -> None:
        """The box kernel ended (it crashed or was killed), or the portal broke (the VM died)."""
        if gone.error is not None and not isinstance(gone.error, ExecutionError):
            self._broken = gone.error
            self._fail_pending(gone.error, recover=RECOVER)
            return
        error = ExecutionError(f"the Python kernel in box {self.box.name} {gone.describe()}; a new one was "
                               "started: variables and imports are lost",
                               fix="rerun the cells this one needs; give the box more memory if it ran out")
        self._fail_pending(error)
        try:
            await self.box.restart_kernel()
        except BoxliteError as exc:
            self._broken = exc

    def _fail_pending(self, error: BaseException, recover: str | None = None) -> None:
        for msg_id, pending in list(self.pending.items()):
            self._settle(msg_id)
            self._reply_error(pending.request, error, recover=recover)
        self._tries.clear()  # the idles still owed will not come
        self._release_probe(self._probe)

    # -- timeouts and interrupts ----------------------------------------------------------------------------
    async def _watch_timeout(self, pending: Pending, codebox: CodeBox) -> None:
        assert self.settings.timeout is not None
        await asyncio.sleep(self.settings.timeout)
        pending.timed_out = True
        await codebox.interrupt()
        await asyncio.sleep(INTERRUPT_GRACE_S)
        if pending.request.msg_id in self.pending:  # the cell ignored KeyboardInterrupt: a new kernel it is
            await codebox.restart()
            self._settle(pending.request.msg_id)
            self._reply_error(pending.request, self._timeout_error(restarted=True))

    def _timeout_error(self, restarted: bool) -> TimeoutError:
        how = ("it ignored KeyboardInterrupt, so the kernel was restarted: variables and imports are lost"
               if restarted else "it was interrupted; the kernel and its state are kept")
        return TimeoutError(f"the cell ran longer than {self.settings.timeout:g} s; {how}",
                            fix="raise the timeout (BOXLITE_KERNEL_TIMEOUT or the kernelspec's --timeout), "
                                "or make the cell finish sooner")

    def _timeout_content(self) -> dict[str, Any]:
        return error_content(self._timeout_error(restarted=False))

    async def _interrupt_box(self) -> None:
        codebox = self.box.codebox
        if codebox is not None and self._failure() is None:
            await codebox.interrupt()

    # -- `%boxlite` cells ------------------------------------------------------------------------------------
    async def _run_host_cell(self, incoming: Incoming, argvs: list[list[str]]) -> None:
        header = incoming.msg["header"]
        self._parent = header
        self._publish("status", {"execution_state": "busy"}, header)
        await commands.count_cell(self, incoming.content)  # the next execution number, as for any cell
        self._publish("execute_input", {"code": incoming.content.get("code", ""),
                                        "execution_count": self.execution_count}, header)
        reply: dict[str, Any] = {"status": "ok", "execution_count": self.execution_count, "user_expressions": {},
                                 "payload": []}
        try:
            for argv in argvs:
                await commands.run(self, argv, header)
        except (BoxliteError, commands.UsageError) as exc:
            content = (error_content(exc) if isinstance(exc, BoxliteError)
                       else {"ename": "UsageError", "evalue": str(exc), "traceback": [f"UsageError: {exc}"]})
            self._publish("error", content, header)
            reply = {"status": "error", "execution_count": self.execution_count, **content}
        self._reply(incoming, reply)
        if incoming.content.get("store_history", True) and not incoming.content.get("silent", False):
            self.history.record(str(incoming.content.get("code", "")), self.execution_count)
        self._publish("status", {"execution_state": "idle"}, header)

    async def restart(self, new_box: bool = False) -> str:
        """`%boxlite restart`: a fresh interpreter, in a new box when this one is gone (or `new_box`)."""
        self._fail_pending(ExecutionError("the kernel was restarted by %boxlite restart",
                                          fix="run the cell again"))
        if new_box or self._failure() is not None or self.box.codebox is None:
            await self.box.remove()
            self._ready.clear()
            await self._start_box()
            failure = self._failure()
            if failure is not None:
                raise failure if isinstance(failure, BoxliteError) else \
                    ExecutionError(str(failure), fix="see the kernel's log; `%boxlite restart` tries again")
            return f"started a new box {self.box.name}"
        await self.box.restart_kernel()
        return f"restarted the Python kernel in box {self.box.name} (files kept, variables gone)"

    async def stop_box(self) -> str:
        await self.box.remove()
        return f"stopped and removed box {self.box.name}; the next cell starts a new one"

    async def sample(self) -> tuple[str, str, str | None, BoxMetrics | None]:
        codebox = self.box.codebox
        if codebox is None:
            return self.box.name, "no box", None, None
        info = codebox.box.info()
        metrics = await codebox.box.metrics() if info.status == "running" else None
        return self.box.name, info.status, info.engine, metrics

    def _show_panel(self, parent: dict[str, Any]) -> MetricsPanel:
        self._parent = parent
        panel = MetricsPanel(self.sample)
        self.panels.append(panel)
        self._publish("display_data", panel.bundle(), parent)
        panel.start()
        return panel

    def show_metrics(self, parent: dict[str, Any]) -> None:
        self._show_panel(parent)

    def display(self, parent: dict[str, Any], data: dict[str, Any]) -> None:
        self._publish("display_data", {"data": data, "metadata": {}, "transient": {}}, parent)

    def print(self, parent: dict[str, Any], text: str, name: str = "stdout") -> None:
        self._publish("stream", {"name": name, "text": text}, parent)

    # -- output helpers -------------------------------------------------------------------------------------
    def _publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None = None,
                 buffers: list[Any] | None = None) -> None:
        self.frontend.send("iopub", self.frontend.new(msg_type, content, parent), buffers=buffers or [])

    def _publish_comm(self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None,
                      buffers: list[Any] | None) -> None:
        msg = self.frontend.new(msg_type, content, self._parent, metadata=metadata)
        self.frontend.send("iopub", msg, buffers=buffers or [])

    def _publish_status(self, state: str) -> None:
        self._publish("status", {"execution_state": state})

    def _reply(self, incoming: Incoming, content: dict[str, Any]) -> None:
        msg = self.frontend.new(reply_type(incoming.msg_type), content, incoming.msg["header"])
        self.frontend.send(incoming.channel, msg, incoming.idents)

    def _reply_error(self, incoming: Incoming, exc: BaseException, recover: str | None = None,
                     busy: bool = False) -> None:
        """An error reply made here (with the error on iopub and the idle status, for a cell); `busy` first
        says busy, for a request the box never saw."""
        content = error_content(exc, recover)
        header = incoming.msg["header"]
        if incoming.msg_type == "execute_request":
            if busy:
                self._publish("status", {"execution_state": "busy"}, header)
            self._publish("error", content, header)
            self._reply(incoming, {"status": "error", "execution_count": self.execution_count, **content})
            self._publish("status", {"execution_state": "idle"}, header)
        else:
            self._reply(incoming, {"status": "error", **content})

    def _host_comms(self) -> dict[str, dict[str, str]]:
        return {panel.widget.comm.comm_id: {"target_name": "jupyter.widget"}
                for panel in self.panels if panel.widget.comm is not None}


def _version() -> str:
    from boxlite import __version__

    return __version__


async def run_kernel(connection_file: str, settings: KernelSettings, box_name: str) -> bool:
    from codebox_kernel.frontend import read_connection_file

    frontend = Frontend(read_connection_file(connection_file))

    def say(text: str) -> None:
        sys.stderr.write(text)

    # The watchdog removes the box if this process is killed before it can (see codebox_kernel/watchdog.py).
    claim = Path(connection_file + ".boxlite-claim")
    watchdog.write_claim(claim)
    watchdog.start(os.getpid(), box_name, claim, settings.persist)
    kernel = BoxKernel(frontend, settings, NotebookBox(settings, box_name, say), history=History(default_path()))
    try:
        restart = await kernel.serve()
    finally:
        kernel.history.close()
    if restart:
        watchdog.write_claim(claim, restarting=True)  # the next process takes the box over
    elif watchdog.read_claim(claim)[0] == os.getpid():
        with contextlib.suppress(OSError):
            claim.unlink()
    return restart

