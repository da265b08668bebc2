"""The BoxLite Python kernel through a real Jupyter client (jupyter_client), with its cells in a real box:
message relay both ways, stdin, comms, interrupts, restart, the `%boxlite` commands and the metrics panel, and
failures of the box shown as BoxliteError replies."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

import boxlite
from codebox_kernel.notebook_box import default_box_name

pytestmark = [pytest.mark.vm, pytest.mark.slow]

START_TIMEOUT = 240
BOXLITE_ERRORS = {cls.__name__ for cls in (boxlite.BoxliteError, *boxlite.BoxliteError.__subclasses__())}


def start(kernel_name: str, stderr: IO[bytes] | None = None, **env: str) -> tuple[KernelManager, BlockingKernelClient]:
    return start_new_kernel(kernel_name=kernel_name, startup_timeout=START_TIMEOUT, env={**os.environ, **env},
                            stderr=stderr)


def stop(km: KernelManager, kc: BlockingKernelClient) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


@pytest.fixture(scope="module")
def kernel_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's kernel writes its stderr (its log: what a notebook server's console shows)."""
    return tmp_path_factory.mktemp("kernel") / "stderr.log"


@pytest.fixture(scope="module")
def kernel(kernelspec: str, kernel_log: Path) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    with kernel_log.open("wb") as log:
        km, kc = start(kernelspec, stderr=log)
        try:
            yield km, kc
        finally:
            stop(km, kc)


@pytest.fixture
def kc(kernel: tuple[KernelManager, BlockingKernelClient]) -> BlockingKernelClient:
    return kernel[1]


def run(kc: BlockingKernelClient, code: str, timeout: float = 120, **kwargs: Any
        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute `code`; its execute_reply and every iopub message it caused (status ones too)."""
    outputs: list[dict[str, Any]] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append, **kwargs)
    return reply, outputs


def of_type(outputs: list[dict[str, Any]], msg_type: str) -> list[dict[str, Any]]:
    return [m["content"] for m in outputs if m["msg_type"] == msg_type]


def stdout(outputs: list[dict[str, Any]]) -> str:
    return "".join(c["text"] for c in of_type(outputs, "stream") if c["name"] == "stdout")


def box_of(km: KernelManager) -> boxlite.SyncBox:
    box = boxlite.SyncBoxlite.default().get(default_box_name(km.connection_file))
    assert box is not None
    return box


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- the relay ------------------------------------------------------------------------------------------------
def test_cells_share_state_and_outputs_keep_their_order(kc: BlockingKernelClient) -> None:
    reply, _ = run(kc, "x = 41")
    assert reply["content"]["status"] == "ok"
    reply, outputs = run(kc, "for i in range(200):\n    print(i)\nx + 1")
    assert reply["content"]["status"] == "ok"
    assert stdout(outputs) == "".join(f"{i}\n" for i in range(200))
    assert of_type(outputs, "execute_result")[0]["data"]["text/plain"] == "42"
    states = [c["execution_state"] for c in of_type(outputs, "status")]
    assert states[0] == "busy" and states[-1] == "idle"
    msg_id = reply["parent_header"]["msg_id"]
    assert all(m["parent_header"]["msg_id"] == msg_id for m in outputs)
    assert reply["header"]["session"] != kc.session.session  # the box kernel's own session, re-signed for us


def test_kernel_info_is_the_python_in_the_box(kc: BlockingKernelClient) -> None:
    info = kc.kernel_info(reply=True, timeout=30)["content"]
    assert info["language_info"]["name"] == "python"
    assert info["language_info"]["version"].startswith("3.11")  # the image's Python, not necessarily the host's
    assert "BoxLite Python" in info["banner"]


def test_rich_output_from_the_box(kc: BlockingKernelClient) -> None:
    code = ("import matplotlib.pyplot as plt\n%matplotlib inline\n"
            "plt.plot([1, 3, 2]); plt.title('in a box'); plt.show()")
    reply, outputs = run(kc, code)
    assert reply["content"]["status"] == "ok"
    images = [c for c in of_type(outputs, "display_data") if "image/png" in c["data"]]
    assert images and len(images[0]["data"]["image/png"]) > 1000


def test_input_is_asked_through_the_frontends_stdin(kc: BlockingKernelClient) -> None:
    prompts: list[str] = []

    def answer(msg: dict[str, Any]) -> None:
        prompts.append(msg["content"]["prompt"])
        kc.input("Ada")

    reply, outputs = run(kc, "name = input('who? ')\nprint('hello', name)", allow_stdin=True, stdin_hook=answer)
    assert reply["content"]["status"] == "ok"
    assert prompts == ["who? "] and stdout(outputs) == "hello Ada\n"


def test_comms_work_both_ways(kc: BlockingKernelClient) -> None:
    setup = ("def _open(comm, msg):\n"
             "    comm.on_msg(lambda m: comm.send({'echo': m['content']['data']}))\n"
             "get_ipython().kernel.comm_manager.register_target('echo', _open)")
    assert run(kc, setup)[0]["content"]["status"] == "ok"
    comm_id = uuid.uuid4().hex
    kc.shell_channel.send(kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}}))
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"n": 7}}))
    deadline = time.monotonic() + 30
    echoed = None
    while echoed is None and time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            echoed = msg["content"]["data"]
    assert echoed == {"echo": {"n": 7}}
    # And a comm the box opens reaches the frontend.
    _reply, outputs = run(kc, "from ipykernel.comm import Comm\nc = Comm(target_name='to-frontend', data={'hi': 1})")
    opened = of_type(outputs, "comm_open")
    assert opened and opened[0]["target_name"] == "to-frontend" and opened[0]["data"] == {"hi": 1}
    info = kc.comm_info(target_name="to-frontend", reply=True, timeout=30)["content"]
    assert opened[0]["comm_id"] in info["comms"]


def _interrupted_within(kc: BlockingKernelClient, interrupt: Callable[[], None], limit: float) -> None:
    """The interrupt ends the cell (a 60 s sleep) well before it could end by itself. How fast is not asserted
    here: the first KeyboardInterrupt in a box runs IPython's traceback code for the first time under emulation
    (measured 1.8-2.6 s, then 0.2 s)."""
    # stop_on_error=False: ipykernel would abort requests arriving just after the KeyboardInterrupt (its
    # "abort queued cells" window, longer under emulation), which is not what this test is about.
    msg_id = kc.execute("import time\ntime.sleep(60)", stop_on_error=False)
    wait_for(lambda: _busy_seen(kc, msg_id), 60, "the cell to start")
    time.sleep(0.5)
    started = time.monotonic()
    interrupt()
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    took = time.monotonic() - started
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert took < limit, f"the interrupt took {took:.1f} s"
    assert stdout(run(kc, "print('next')")[1]) == "next\n"


def _busy_seen(kc: BlockingKernelClient, msg_id: str) -> bool:
    try:
        msg = kc.get_iopub_msg(timeout=0.2)
    except Exception:
        return False
    return msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input"


INTERRUPTED_WELL_BEFORE_S = 15.0  # the cell sleeps 60 s


def test_interrupt_request_stops_a_sleeping_cell(kc: BlockingKernelClient) -> None:
    def request() -> None:
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))

    _interrupted_within(kc, request, INTERRUPTED_WELL_BEFORE_S)


def test_sigint_to_the_host_kernel_interrupts_the_cell(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    km, kc = kernel
    assert km.kernel_spec is not None and km.kernel_spec.interrupt_mode == "signal"
    _interrupted_within(kc, km.interrupt_kernel, INTERRUPTED_WELL_BEFORE_S)


# -- stop on error -------------------------------------------------------------------------------------------
RIGHT_AFTER_ERROR_ROUNDS = 20


def reply_to(kc: BlockingKernelClient, msg_id: str, timeout: float = 120) -> dict[str, Any]:
    """The shell reply to request `msg_id` (replies to other requests are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def iopub_of(kc: BlockingKernelClient, msg_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """The iopub messages of request `msg_id`, up to its idle status (others' messages are skipped)."""
    deadline = time.monotonic() + timeout
    mine: list[dict[str, Any]] = []
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        mine.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return mine


def test_a_cell_sent_as_soon_as_an_error_is_answered_runs(kc: BlockingKernelClient) -> None:
    """ipykernel aborts what reaches it just after a failed cell; through the relay "just after" is wider, yet a
    cell the frontend sends after it has the error reply must run (only cells sent before it are aborted)."""
    for round_ in range(RIGHT_AFTER_ERROR_ROUNDS):
        failing = kc.execute(f"raise ValueError('round {round_}')")
        assert reply_to(kc, failing)["content"]["status"] == "error"
        following = kc.execute(f"print('after {round_}')")  # at once, as a notebook's next cell may be
        reply = reply_to(kc, following)
        assert reply["content"]["status"] == "ok", (round_, reply["content"])
        iopub_of(kc, failing)
        outputs = iopub_of(kc, following)
        assert stdout(outputs) == f"after {round_}\n"
        # One busy and one idle, as for any cell: an aborted try that was sent again leaves no trace.
        assert [c["execution_state"] for c in of_type(outputs, "status")] == ["busy", "idle"], round_
        assert len(of_type(outputs, "execute_input")) == 1


@pytest.mark.parametrize("after", ["a cell that ran", "an error"])
def test_run_all_still_stops_at_the_first_error(kc: BlockingKernelClient, after: str) -> None:
    """Cells sent before an error reply (Run All) are aborted, as in any Jupyter kernel; also when the first of
    them is the first cell after an earlier error (the host holds the others back, then aborts them itself)."""
    before = run(kc, "pass" if after == "a cell that ran" else "raise ValueError('earlier')")[0]
    assert before["content"]["status"] == ("ok" if after == "a cell that ran" else "error")
    ids = [kc.execute(code) for code in ("raise ValueError('stop here')", "print(1)", "print(2)")]
    statuses = [reply_to(kc, msg_id)["content"]["status"] for msg_id in ids]
    assert statuses == ["error", "aborted", "aborted"]
    for msg_id in ids:
        assert stdout(iopub_of(kc, msg_id)) == ""
    reply, outputs = run(kc, "print(3)")
    assert reply["content"]["status"] == "ok" and stdout(outputs) == "3\n"


# -- %boxlite -----------------------------------------------------------------------------------------------
def test_boxlite_info_and_files(kc: BlockingKernelClient) -> None:
    reply, outputs = run(kc, "%boxlite info")
    assert reply["content"]["status"] == "ok"
    text = of_type(outputs, "display_data")[0]["data"]["text/plain"]
    assert "engine" in text and "qemu" in text and "running" in text
    reply, outputs = run(kc, "%boxlite files /")
    assert "etc/" in of_type(outputs, "display_data")[0]["data"]["text/plain"]
    reply, outputs = run(kc, "%boxlite frobnicate")
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "UsageError"


def test_boxlite_info_reads_as_people_read_it(kc: BlockingKernelClient) -> None:
    _reply, outputs = run(kc, "%boxlite info")
    text = of_type(outputs, "display_data")[0]["data"]["text/plain"]
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines())
    assert re.fullmatch(r"\d+ MiB|\d+\.\d GiB", rows["memory"]), rows
    # "restored, guest ready in 1.2 s" (or "... not measured"), not a raw float of milliseconds.
    assert re.fullmatch(r"(cold boot|restored), guest ready (in \d+(\.\d)? (ms|s)|time not measured)",
                        rows["boot"]), rows
    # To the second, in local time, with how long ago: no microseconds, no "+00:00".
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( \S+)? \((\d+ ms|[\d.]+ s|\d+ min( \d\d s)?) ago\)",
                        rows["started"]), rows
    _reply, outputs = run(kc, "%boxlite files /etc")
    listing = of_type(outputs, "display_data")[0]["data"]["text/plain"]
    assert re.search(r"^passwd\s+file\s+\d+(\.\d)? (B|KiB)\s", listing, re.M), listing  # sizes with their unit


def test_boxlite_cells_take_the_next_execution_number(kc: BlockingKernelClient) -> None:
    def number(code: str) -> tuple[int, int]:
        reply, outputs = run(kc, code)
        assert reply["content"]["status"] == "ok", reply["content"]
        (echo,) = of_type(outputs, "execute_input")
        return reply["content"]["execution_count"], echo["execution_count"]

    first, _ = number("1 + 1")
    assert number("%boxlite help") == (first + 1, first + 1)
    assert number("%boxlite info\n%boxlite files /") == (first + 2, first + 2)
    assert number("2 + 2") == (first + 3, first + 3)  # the box's own numbering continues after them
    # The box's interpreter has them in its history too: In[n] is the line, as for any cell.
    _reply, outputs = run(kc, f"print(repr(In[{first + 1}]), repr(In[{first + 2}]))")
    assert stdout(outputs) == "'%boxlite help' '%boxlite info\\n%boxlite files /'\n"
    # A request that asks not to be stored takes no number.
    reply = kc.execute_interactive("%boxlite help", store_history=False, timeout=60, output_hook=lambda m: None)
    assert reply["content"]["execution_count"] == first + 4
    assert number("3 + 3")[0] == first + 5


def test_what_the_host_says_comes_from_the_same_kernel_session_as_the_box(kc: BlockingKernelClient) -> None:
    """JupyterLab drops a comm message whose header's session differs from the last message's it received, so
    the host's messages (`%boxlite` cells, the metrics panel) must carry the box kernel's session."""
    reply, _ = run(kc, "1")
    box_session = reply["header"]["session"]
    reply, outputs = run(kc, "%boxlite metrics")
    assert reply["header"]["session"] == box_session
    kinds = {m["msg_type"] for m in outputs}
    assert {"comm_open", "display_data", "status"} <= kinds
    assert {m["msg_type"]: m["header"]["session"] for m in outputs} == dict.fromkeys(kinds, box_session)
    (panel,) = [m["content"]["comm_id"] for m in outputs if m["msg_type"] == "comm_open"
                and m["content"]["data"]["state"]["_model_name"] == "HTMLModel"]
    kc.shell_channel.send(kc.session.msg("comm_close", {"comm_id": panel, "data": {}}))


def test_the_frontends_messages_to_the_box_comms_log_no_warning(kc: BlockingKernelClient, kernel_log: Path
                                                                ) -> None:
    """What JupyterLab's widget manager sends at every start: a comm_open to ipywidgets' control target and a
    request_states comm_msg (and later a comm_close), for comms the host does not own (they are the box's, or
    nobody's when the box has not imported ipywidgets). They must not log "No such comm"."""
    control = uuid.uuid4().hex
    kc.shell_channel.send(kc.session.msg("comm_open", {"comm_id": control, "target_name": "jupyter.widget.control",
                                                       "data": {}}))
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": control, "data": {"method": "request_states"}}))
    kc.shell_channel.send(kc.session.msg("comm_close", {"comm_id": control, "data": {}}))
    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": uuid.uuid4().hex, "data": {}}))
    _reply, outputs = run(kc, "print('after the comms')")
    assert stdout(outputs) == "after the comms\n"
    assert "No such comm" not in kernel_log.read_text(errors="replace")
    assert not [c for c in of_type(outputs, "stream") if "No such comm" in c["text"]]


def test_metrics_panel_updates_while_the_box_is_busy(kc: BlockingKernelClient) -> None:
    reply, outputs = run(kc, "%boxlite metrics")
    assert reply["content"]["status"] == "ok"
    opened = {c["data"]["state"]["_model_name"]: c for c in of_type(outputs, "comm_open")
              if c["target_name"] == "jupyter.widget"}
    assert "HTMLModel" in opened and opened["HTMLModel"]["data"]["state"]["_model_module_version"] == "2.0.0"
    view = of_type(outputs, "display_data")[0]["data"]["application/vnd.jupyter.widget-view+json"]
    comm_id = opened["HTMLModel"]["comm_id"]
    assert view["model_id"] == comm_id
    # A cell keeps the box busy for 6 s; the panel still changes every second, from the host.
    kc.execute("import time\ntime.sleep(6)")
    updates: list[str] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except Exception:
            continue
        if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == comm_id:
            updates.append(msg["content"]["data"]["state"].get("value", ""))
    assert len(updates) >= 3, updates
    assert all(k in updates[-1] for k in ("cpu", "mem", "guest_boot_ms", "commands", "errors", "running"))
    # cpu and memory are charted from the samples so far (two lines for cpu: guest and host; one for memory).
    assert updates[-1].count("<polyline") == 3 and updates[-1].count("<svg") == 2
    assert "white-space:nowrap" in updates[-1]
    kc.shell_channel.send(kc.session.msg("comm_close", {"comm_id": comm_id, "data": {}}))
    run(kc, "pass")  # the sleeping cell and this one finish


def history(kc: BlockingKernelClient, **request: Any) -> list[list[Any]]:
    reply = kc.history(raw=True, output=False, reply=True, timeout=30, **request)["content"]
    assert reply["status"] == "ok"
    return list(reply["history"])


def test_history_has_the_cells_run_as_jupyterlab_asks_for_it(kc: BlockingKernelClient) -> None:
    """JupyterLab's console fills its up-arrow history with `tail` (n=500): the cells, numbered as they ran."""
    cells = ["history_probe = 6 * 7", "%boxlite info", "history_probe + 1"]
    counts = [run(kc, code)[0]["content"]["execution_count"] for code in cells]
    tail = history(kc, hist_access_type="tail", n=500)
    assert [entry[2] for entry in tail[-3:]] == cells
    session = tail[-1][0]
    assert [entry[0:2] for entry in tail[-3:]] == [[session, count] for count in counts]
    assert history(kc, hist_access_type="search", pattern="history_probe*") == [
        [session, counts[0], cells[0]], [session, counts[2], cells[2]]]
    assert history(kc, hist_access_type="range", session=session, start=counts[2], stop=counts[2] + 1) == [
        [session, counts[2], cells[2]]]
    with_output = kc.history(raw=True, output=True, hist_access_type="tail", n=1, reply=True, timeout=30)
    assert with_output["content"]["history"] == [[session, counts[2], [cells[2], "43"]]]
    # A new interpreter is a new session; the cells of the last one stay in the tail, before the new ones.
    assert run(kc, "%boxlite restart")[0]["content"]["status"] == "ok"
    assert run(kc, "'history_probe' in dir()")[0]["content"]["status"] == "ok"
    tail = history(kc, hist_access_type="tail", n=3)
    assert [entry[2] for entry in tail] == ["history_probe + 1", "%boxlite restart", "'history_probe' in dir()"]
    assert tail[-1][0] > session and tail[-1][1] == 1


def test_a_restarted_kernel_has_the_history_of_the_last_one(kernel: tuple[KernelManager, BlockingKernelClient]
                                                             ) -> None:
    """A new kernel process (Restart Kernel, a new console) still goes back to earlier cells, as a stock
    ipykernel with its history file does."""
    km, kc = kernel
    assert run(kc, "before_restart = 'x' * 3")[0]["content"]["status"] == "ok"
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=START_TIMEOUT)
    assert history(kc, hist_access_type="tail", n=1)[0][2] == "before_restart = 'x' * 3"
    assert run(kc, "after_restart = 1")[0]["content"]["status"] == "ok"
    tail = history(kc, hist_access_type="tail", n=2)
    assert [entry[2] for entry in tail] == ["before_restart = 'x' * 3", "after_restart = 1"]
    assert tail[1][0] > tail[0][0]
    assert history(kc, hist_access_type="search", pattern="before_restart*") == [tail[0]]


def test_restart_gives_a_fresh_interpreter_in_the_same_box(kernel: tuple[KernelManager, BlockingKernelClient]
                                                           ) -> None:
    km, kc = kernel
    run(kc, "open('/tmp/kept.txt', 'w').write('still here'); y = 5")
    box_id = box_of(km).id
    _reply, outputs = run(kc, "%boxlite metrics")
    (panel,) = [c["comm_id"] for c in of_type(outputs, "comm_open") if c["target_name"] == "jupyter.widget"
                and c["data"]["state"]["_model_name"] == "HTMLModel"]
    km.restart_kernel(now=False)
    # The old process's last word to its panel: detached, not frozen on "running".
    last = ""
    deadline = time.monotonic() + 60
    while "bl-is-detached" not in last:
        assert time.monotonic() < deadline, f"the panel was not marked detached: {last[-500:]}"
        with contextlib.suppress(queue.Empty):
            msg = kc.get_iopub_msg(timeout=1)
            if msg["msg_type"] == "comm_msg" and msg["content"]["comm_id"] == panel:
                last = msg["content"]["data"]["state"].get("value", last)
    assert "detached: " in last
    kc.wait_for_ready(timeout=START_TIMEOUT)
    _reply, outputs = run(kc, "print('y' in dir(), open('/tmp/kept.txt').read())")
    assert stdout(outputs) == "False still here\n"
    assert box_of(km).id == box_id


# -- failures -------------------------------------------------------------------------------------------------
def test_killed_vm_ends_the_cell_with_a_boxlite_error_and_restart_recovers(kernelspec: str) -> None:
    km, kc = start(kernelspec)
    try:
        assert run(kc, "z = 1")[0]["content"]["status"] == "ok"
        pid = box_of(km).info().pid
        assert pid
        msg_id = kc.execute("import time\ntime.sleep(60)")
        wait_for(lambda: _busy_seen(kc, msg_id), 60, "the cell to start")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        reply = kc.get_shell_msg(timeout=30)
        took = time.monotonic() - killed
        content = reply["content"]
        assert content["status"] == "error" and content["ename"] in ("PortalError", "EngineError"), content
        assert took < 5, f"the cell took {took:.1f} s to fail"
        assert f"boxlite.errors.{content['ename']}" in "\n".join(content["traceback"])
        # The host kernel lives on, says how to recover, and recovers.
        reply, _ = run(kc, "z")
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] in BOXLITE_ERRORS
        assert "%boxlite restart" in "\n".join(reply["content"]["traceback"])
        reply, _outputs = run(kc, "%boxlite restart")
        assert reply["content"]["status"] == "ok", reply["content"]
        assert stdout(run(kc, "print(6 * 7)")[1]) == "42\n"
    finally:
        stop(km, kc)
    assert boxlite.SyncBoxlite.default().get(default_box_name(km.connection_file)) is None  # removed at shutdown


def test_timeout_metrics_at_start_and_stop_settings(kernelspec: str) -> None:
    km, kc = start(kernelspec, BOXLITE_KERNEL_TIMEOUT="2", BOXLITE_KERNEL_METRICS="yes")
    try:
        reply, outputs = run(kc, "k = 3\nimport time\ntime.sleep(30)")
        # BOXLITE_KERNEL_METRICS: the panel comes with the first cell's output.
        assert any("application/vnd.jupyter.widget-view+json" in c["data"] for c in of_type(outputs, "display_data"))
        # BOXLITE_KERNEL_TIMEOUT: interrupted, reported as TimeoutError, state kept.
        content = reply["content"]
        assert content["status"] == "error" and content["ename"] == "TimeoutError"
        assert "boxlite.errors.TimeoutError" in "\n".join(content["traceback"])
        assert of_type(outputs, "error")[0]["ename"] == "TimeoutError"
        again, outputs = run(kc, "print(k)")
        assert stdout(outputs) == "3\n", (again["content"], outputs)
        # %boxlite stop removes the box; the next cell gets a new one.
        box_id = box_of(km).id
        reply, outputs = run(kc, "%boxlite stop")
        assert reply["content"]["status"] == "ok" and "stopped" in stdout(outputs)
        assert boxlite.SyncBoxlite.default().get(box_id) is None
        reply, outputs = run(kc, "print('k' in dir())")
        assert stdout(outputs) == "False\n" and box_of(km).id != box_id
    finally:
        stop(km, kc)


def test_a_cell_that_ignores_keyboard_interrupt_gets_a_new_interpreter(kernelspec: str) -> None:
    """Past the timeout the cell is interrupted; one that catches KeyboardInterrupt for ever is given 5 s
    (INTERRUPT_GRACE_S), then the box's interpreter is replaced and the cell ends with a TimeoutError that says so."""
    km, kc = start(kernelspec, BOXLITE_KERNEL_TIMEOUT="3")
    try:
        assert run(kc, "before_timeout = True")[0]["content"]["status"] == "ok"
        box_id = box_of(km).id
        code = ("import time\nwhile True:\n    try:\n        time.sleep(60)\n"
                "    except KeyboardInterrupt:\n        print('caught KeyboardInterrupt', flush=True)")
        started = time.monotonic()
        reply, outputs = run(kc, code)
        took = time.monotonic() - started
        content = reply["content"]
        assert content["status"] == "error" and content["ename"] == "TimeoutError", content
        assert "ignored KeyboardInterrupt, so the kernel was restarted" in content["evalue"]
        assert "variables and imports are lost" in content["evalue"]
        assert "boxlite.errors.TimeoutError" in "\n".join(content["traceback"])
        # What the notebook shows: what the cell printed when interrupted, then the one error, then idle.
        assert stdout(outputs) == "caught KeyboardInterrupt\n"
        assert [e["ename"] for e in of_type(outputs, "error")] == ["TimeoutError"]
        assert of_type(outputs, "status")[-1]["execution_state"] == "idle"
        assert took >= 3 + 5, f"replaced after {took:.1f} s, before the interrupt's grace was over"
        # The next cell runs at once in a fresh interpreter of the same box.
        reply, outputs = run(kc, "print('before_timeout' in dir())")
        assert reply["content"]["status"] == "ok" and stdout(outputs) == "False\n"
        assert box_of(km).id == box_id
    finally:
        stop(km, kc)


def test_a_box_that_cannot_start_is_reported_in_every_cell(kernelspec: str) -> None:
    km, kc = start(kernelspec, BOXLITE_KERNEL_IMAGE="boxlite.invalid/no/such-image:1")
    try:
        info = kc.kernel_info(reply=True, timeout=60)["content"]
        assert info["status"] == "ok" and "no box" in info["banner"]
        reply, outputs = run(kc, "1 + 1")
        content = reply["content"]
        assert content["status"] == "error" and content["ename"] in BOXLITE_ERRORS - {"BoxliteError"}
        assert of_type(outputs, "error") and "%boxlite restart" in "\n".join(content["traceback"])
        assert km.is_alive()
    finally:
        stop(km, kc)


def test_the_kernel_ends_and_removes_its_box_when_its_parent_dies(tmp_path: Path, vm_home: Path, helpers: Any
                                                                  ) -> None:
    from jupyter_client.connect import write_connection_file

    connection_file, _ = write_connection_file(str(tmp_path / "kernel-orphan.json"))
    # A parent that starts the kernel, says its pid, and waits (a notebook server, say), then is killed.
    starter = ("import subprocess, sys, time\n"
               "p = subprocess.Popen([sys.executable, '-m', 'codebox_kernel', '-f', sys.argv[1]])\n"
               "print(p.pid, flush=True)\ntime.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", starter, connection_file], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    kernel_pid = int(parent.stdout.readline())
    name = default_box_name(connection_file)
    runtime = boxlite.SyncBoxlite.default()

    def box_running() -> bool:
        box = runtime.get(name)
        return box is not None and box.info().status == "running"

    try:
        wait_for(box_running, START_TIMEOUT, "the kernel's box")
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not helpers.pid_alive(kernel_pid), 60, "the orphaned kernel to end")
    assert runtime.get(name) is None


def test_a_killed_kernel_leaves_no_box_behind_but_a_hard_restart_keeps_it(kernelspec: str) -> None:
    km, kc = start(kernelspec)
    name = default_box_name(km.connection_file)
    runtime = boxlite.SyncBoxlite.default()
    try:
        box_id = box_of(km).id
        km.restart_kernel(now=True)  # SIGKILL, then a new process: it takes the same box over
        kc.wait_for_ready(timeout=START_TIMEOUT)
        assert stdout(run(kc, "print('again')")[1]) == "again\n"
        assert box_of(km).id == box_id
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)  # SIGKILL, as nbval and nbclient do: the watchdog removes the box
    wait_for(lambda: runtime.get(name) is None, 60, "the watchdog to remove the box")
