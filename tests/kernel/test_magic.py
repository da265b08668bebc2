"""The %%boxlite magic in a real, ordinary ipykernel (python3), driven by a real Jupyter client.

One kernel serves the module and its "default" box is shared by the tests (a box boots in seconds under
emulation); tests run in file order: the line magics and the kernel's exit come last. The kernel gets its own
BOXLITE_HOME whose assets, cache and images are the provisioned home's (as in tests/vm/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

import boxlite

pytestmark = [pytest.mark.vm]

REPO = Path(__file__).resolve().parents[2]
SHARED = ("assets", "cache", "images")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Cell:
    """What one execute_request gave: its reply and its iopub outputs (with the time each was received)."""

    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.reply["content"]["status"])

    @property
    def ename(self) -> str | None:
        return self.reply["content"].get("ename")

    def stream(self, name: str) -> str:
        return "".join(m["content"]["text"] for m in self.outputs
                       if m["msg_type"] == "stream" and m["content"]["name"] == name)

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [m["content"] for m in self.outputs if m["msg_type"] == msg_type]

    @property
    def value(self) -> str | None:
        (result,) = self.of_type("execute_result") or [None]
        return result["data"]["text/plain"] if result else None

    @property
    def traceback(self) -> str:
        (error,) = self.of_type("error")
        return ANSI.sub("", "\n".join(error["traceback"]))


@dataclass
class Kernel:
    manager: KernelManager
    client: BlockingKernelClient

    def run(self, code: str, *, answer: str | None = None, timeout: float = 240) -> Cell:
        """Execute `code`; with `answer`, the frontend allows stdin and answers every input request with it."""
        outputs: list[dict[str, Any]] = []
        prompts: list[str] = []

        def on_output(msg: dict[str, Any]) -> None:
            if msg["msg_type"] not in ("status", "execute_input"):
                msg["received"] = time.monotonic()
                outputs.append(msg)

        def on_input(msg: dict[str, Any]) -> None:
            prompts.append(msg["content"]["prompt"])
            self.client.input(answer)

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=on_output,
                                                allow_stdin=answer is not None, stdin_hook=on_input)
        return Cell(reply, outputs, prompts)


def _boxes(home: Path) -> list[boxlite.BoxInfo]:
    return boxlite.SyncBoxlite(boxlite.Options(home_dir=home)).list_info()


def _clean(home: Path) -> None:
    """Remove whatever boxes a failed test left in `home`, and kill (by pid) any process still running for one."""
    runtime = boxlite.SyncBoxlite(boxlite.Options(home_dir=home))
    for info in runtime.list_info():
        with contextlib.suppress(boxlite.BoxliteError):
            runtime.remove(info.id, force=True)
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and f"{home}/boxes/".encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def magic_home(tmp_path_factory: pytest.TempPathFactory, provisioned_home: Path) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("magic-home")
    for sub in SHARED:
        (home / sub).symlink_to(provisioned_home / sub, target_is_directory=True)
    yield home
    _clean(home)


@pytest.fixture(scope="module")
def kernel(magic_home: Path) -> Iterator[Kernel]:
    """An ordinary python3 ipykernel with the extension loaded; its boxes live under `magic_home`."""
    manager = KernelManager(kernel_name="python3")
    env = {**os.environ, "BOXLITE_HOME": str(magic_home),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    manager.start_kernel(env=env, cwd=str(REPO))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        kernel = Kernel(manager, client)
        assert kernel.run("%load_ext codebox_kernel").status == "ok"
        yield kernel
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel()


def test_bad_arguments_are_usage_errors(kernel: Kernel) -> None:
    for code, says in [
        ("%%boxlite --bogus\n1", "unrecognized arguments: --bogus"),
        ("%%boxlite --timeout -1\n1", "expected a positive number, got '-1'"),
        ("%%boxlite --name 'a b'\n1", "bad box name 'a b'"),
        ("%boxlite frobnicate", "invalid choice: 'frobnicate'"),
        ("%boxlite", "the following arguments are required"),
        ("%boxlite stop nobox", "no box named 'nobox' in this session"),
    ]:
        cell = kernel.run(code)
        assert cell.status == "error", code
        assert cell.stream("stderr").startswith("UsageError: ") and says in cell.stream("stderr"), code
        assert not cell.of_type("error"), code  # a usage error is one short line, no traceback


def test_state_persists_and_the_value_is_the_cell_result(kernel: Kernel) -> None:
    first = kernel.run("%%boxlite\nx = 41")
    assert first.status == "ok" and first.outputs == []
    second = kernel.run("%%boxlite\nx + 1")
    assert second.status == "ok" and second.value == "42"


def test_printed_text_streams_as_it_comes(kernel: Kernel) -> None:
    cell = kernel.run("%%boxlite\nimport sys, time\nprint('first')\ntime.sleep(3)\nprint('second', file=sys.stderr)")
    assert cell.status == "ok"
    assert cell.stream("stdout") == "first\n" and cell.stream("stderr") == "second\n"
    first = next(m for m in cell.outputs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
    second = next(m for m in cell.outputs if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")
    assert second["received"] - first["received"] > 1.5  # printed while the cell was still running


def test_a_plot_is_display_data_with_a_png(kernel: Kernel) -> None:
    cell = kernel.run("%%boxlite\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()")
    assert cell.status == "ok"
    (figure,) = cell.of_type("display_data")
    assert base64.b64decode(figure["data"]["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
    assert figure["data"]["text/plain"].startswith("<Figure")


def test_an_exception_fails_the_cell_with_the_box_traceback(kernel: Kernel) -> None:
    cell = kernel.run("%%boxlite\ndef f():\n    return 1 / 0\nf()")
    assert cell.status == "error" and cell.ename == "ZeroDivisionError"
    assert cell.reply["content"]["evalue"] == "division by zero"
    text = cell.traceback
    assert "ZeroDivisionError" in text and "return 1 / 0" in text and "----> 3 f()" in text
    assert "magic.py" not in text and "run_cell_magic" not in text  # the box's frames only
    assert kernel.run("%%boxlite\nx").value == "41"  # the box's kernel kept its state


def test_a_timeout_raises_boxlite_timeout_and_keeps_the_state(kernel: Kernel) -> None:
    cell = kernel.run("%%boxlite --timeout 2\nimport time\ntime.sleep(60)")
    assert cell.status == "error" and cell.ename == "TimeoutError"
    (line,) = cell.traceback.splitlines()
    assert line.startswith("boxlite.errors.TimeoutError: timeout: code ran longer than 2 s") and "(fix: " in line
    assert kernel.run("%%boxlite\nx").value == "41"


def test_interrupting_the_notebook_kernel_interrupts_the_box(kernel: Kernel) -> None:
    client = kernel.client
    msg_id = client.execute("%%boxlite\nimport time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    deadline = time.monotonic() + 120
    while True:
        msg = client.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    started = time.monotonic()
    kernel.manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=60)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 30
    assert kernel.run("%%boxlite\nx").value == "41"


def test_input_in_the_box_is_asked_of_the_frontend(kernel: Kernel) -> None:
    cell = kernel.run("%%boxlite\nname = input('who? ')\nprint('hi', name)", answer="Ada")
    assert cell.status == "ok" and cell.prompts == ["who? "] and cell.stream("stdout") == "hi Ada\n"
    refused = kernel.run("%%boxlite\ninput('who? ')")  # this frontend does not allow stdin
    assert refused.status == "error" and refused.ename == "StdinNotImplementedError"


def test_another_name_is_another_box(kernel: Kernel) -> None:
    other = kernel.run("%%boxlite --name other\nprint('x' in dir())\ny = 1")
    assert other.status == "ok" and other.stream("stdout") == "False\n"
    changed = kernel.run("%%boxlite --name other --memory 1024\n1")
    assert changed.status == "error" and "box 'other' already runs and cannot change: --memory 1024" in \
        changed.stream("stderr")

    listed = kernel.run("%boxlite list").stream("stdout").splitlines()
    assert listed[0].split() == ["NAME", "BOX", "ID", "STATE", "IMAGE", "CPUS", "MEMORY", "CELLS"]
    rows = {line.split()[0]: line.split() for line in listed[1:]}
    assert set(rows) == {"default", "other"} and rows["default"][2] == rows["other"][2] == "running"
    assert rows["default"][1] != rows["other"][1]

    info_cell = kernel.run("%boxlite info other")
    info = info_cell.stream("stdout")
    assert "state:" in info and "running" in info and rows["other"][1] in info
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in info.splitlines())}
    assert re.fullmatch(r"\d+ MiB|\d+\.\d GiB", fields["memory"]), fields
    assert re.fullmatch(r"(cold boot|restored), guest ready (in \d+(\.\d)? (ms|s)|time not measured)",
                        fields["boot"]), fields
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( \S+)? \((\d+ ms|[\d.]+ s|\d+ min( \d\d s)?) ago\)",
                        fields["started at"]), fields
    # Line and cell magics are cells like any other: each takes the next execution number.
    count = info_cell.reply["content"]["execution_count"]
    assert kernel.run("%boxlite list").reply["content"]["execution_count"] == count + 1
    assert kernel.run("%%boxlite --name other\n1").reply["content"]["execution_count"] == count + 2

    restarted = kernel.run("%boxlite restart other")
    assert restarted.status == "ok" and "restarted the kernel of box 'other'" in restarted.stream("stdout")
    assert kernel.run("%%boxlite --name other\n'y' in dir()").value == "False"
    assert kernel.run("%%boxlite\nx").value == "41"  # the default box was not touched


def test_a_box_whose_vm_died_fails_the_cell_and_is_forgotten(kernel: Kernel, magic_home: Path, helpers: Any) -> None:
    (other,) = [info for info in _boxes(magic_home) if info.id in kernel.run("%boxlite info other").stream("stdout")]
    os.kill(other.pid, signal.SIGKILL)
    assert helpers.wait_until(lambda: not helpers.pid_alive(other.pid), timeout=10)
    cell = kernel.run("%%boxlite --name other\n1")
    assert cell.status == "error" and cell.ename in ("PortalError", "EngineError")
    name_message, note = cell.traceback.splitlines()
    assert name_message.startswith(f"boxlite.errors.{cell.ename}: ") and "(fix: " in name_message
    assert note.startswith("box 'other' has ended and its variables are lost")
    assert [line.split()[0] for line in kernel.run("%boxlite list").stream("stdout").splitlines()[1:]] == ["default"]
    assert helpers.wait_until(lambda: other.id not in [info.id for info in _boxes(magic_home)], timeout=30)


def test_stop_removes_the_boxes(kernel: Kernel, magic_home: Path) -> None:
    assert kernel.run("%boxlite stop").stream("stdout") == "stopped box 'default'\n"
    assert kernel.run("%boxlite list").stream("stdout") == "no boxes: a %%boxlite cell starts one\n"
    assert kernel.run("%boxlite stop --all").stream("stdout") == "no boxes to stop\n"
    assert _boxes(magic_home) == []


def test_the_boxes_end_with_the_kernel(kernel: Kernel, magic_home: Path, helpers: Any) -> None:
    assert kernel.run("%%boxlite\nx = 1\nx").value == "1"  # a new box: the old one and its x are gone
    (box,) = _boxes(magic_home)
    assert box.status == "running" and helpers.pid_alive(box.pid)
    kernel.manager.shutdown_kernel()
    assert helpers.wait_until(lambda: not helpers.pid_alive(box.pid), timeout=60)
    assert helpers.wait_until(lambda: _boxes(magic_home) == [], timeout=30)
