"""The host kernel's history (codebox_kernel/history.py) answers history requests as a stock ipykernel does:
checked against a real ipykernel on the host fed the same cells, then its own rules (sessions, outputs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

from codebox_kernel.history import Entry, History

CELLS = ["x = 1", "1+2+3", "x + 1", "print('hi')", "1+2+3", "[n*n for n in range(4)]",
         "def f(y):\n    return y\n", "f(12)", "x + 1"]
REQUESTS: list[dict[str, Any]] = [
    {"hist_access_type": "tail", "n": 3},
    {"hist_access_type": "tail", "n": 100},
    {"hist_access_type": "tail", "n": 0},
    {"hist_access_type": "search", "pattern": "1?2*"},
    {"hist_access_type": "search", "pattern": "1?2*", "unique": True},
    {"hist_access_type": "search", "pattern": "x*", "unique": True},
    {"hist_access_type": "search", "pattern": "*", "n": 2},
    {"hist_access_type": "search", "pattern": "[fx]*", "n": 3, "unique": True},
    {"hist_access_type": "search", "pattern": "X*"},
    {"hist_access_type": "search", "pattern": "def*"},
]


@pytest.fixture(scope="module")
def stock() -> Iterator[BlockingKernelClient]:
    """A stock ipykernel on the host, history in memory as in the box, with CELLS run in it."""
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120,
                              extra_arguments=["--HistoryManager.hist_file=:memory:"])
    try:
        for code in CELLS:
            kc.execute_interactive(code, timeout=60, output_hook=lambda _msg: None)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _ours() -> History:
    history = History()
    for line, code in enumerate(CELLS, start=1):
        history.record(code, line)
    return history


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: "-".join(f"{k}={v}" for k, v in r.items()))
def test_answers_as_a_stock_ipykernel(stock: BlockingKernelClient, request_: dict[str, Any]) -> None:
    content = {"raw": True, "output": False, **request_}
    theirs = stock.history(**content, reply=True, timeout=30)["content"]
    assert theirs["status"] == "ok"
    ours = _ours().answer(content)
    assert ours == {"status": "ok", "history": [[1, line, code] for _session, line, code in theirs["history"]]}
    assert ours["history"] or request_.get("n") == 0 or request_["pattern"] == "X*"


def test_range_numbers_the_current_session_as_itself() -> None:
    history = _ours()
    # IPython answers the current session as session 0 (so jupyter_kernel_test's range check fails on it).
    assert history.answer({"hist_access_type": "range", "session": 1, "start": 2, "stop": 3, "output": False,
                           "raw": True})["history"] == [[1, 2, "1+2+3"]]
    assert [e.line for e in history.range(0, 7)] == [7, 8, 9]
    assert [e.line for e in history.range(0, -2)] == [8, 9]


def test_a_new_interpreter_starts_a_new_session_and_tail_prefers_it() -> None:
    history = History()
    history.record("a = 1", 1)
    history.record("a", 2, output="1")
    history.new_session()
    history.new_session()  # nothing ran in it yet: still the same new session
    assert history.session == 2
    history.record("b = 2", 1)
    assert history.answer({"hist_access_type": "tail", "n": 2, "output": True}) == {
        "status": "ok", "history": [[1, 2, ["a", "1"]], [2, 1, ["b = 2", None]]]}
    assert [(e.session, e.line) for e in history.range(-1)] == [(1, 1), (1, 2)]
    assert history.range(0) == history.range(2) == history.tail(1)
    assert history.answer({"hist_access_type": "nonsense"}) == {"status": "ok", "history": []}
    history.record("exit()", 2)  # not kept, as IPython does not keep it (a stock kernel exits on it)
    assert history.tail(1) == [Entry(2, 1, "b = 2")]


def test_the_file_keeps_earlier_kernels_cells_for_a_new_one(tmp_path: Path) -> None:
    """A new kernel process (a new console, a restart) finds the cells of earlier ones, as with IPython's
    history.sqlite; its own cells come last in the tail."""
    path = tmp_path / "kernel-history.sqlite"
    first = History(path)
    first.record("x = 1", 1)
    first.record("x + 1", 2, output="2")
    first.close()
    assert path.stat().st_mode & 0o777 == 0o600
    second = History(path)
    assert second.tail(10) == [Entry(1, 1, "x = 1"), Entry(1, 2, "x + 1", "2")]
    second.record("y = 3", 1)
    other = History(path)  # another kernel at the same time
    other.record("z = 4", 1)
    assert [(e.session, e.source) for e in second.tail(3)] == [(1, "x + 1"), (3, "z = 4"), (2, "y = 3")]
    assert [e.source for e in other.search("[xy]*")] == ["x = 1", "x + 1", "y = 3"]
    assert second.range(-1) == [Entry(1, 1, "x = 1"), Entry(1, 2, "x + 1", "2")]


def test_an_unusable_file_leaves_history_in_memory(tmp_path: Path) -> None:
    (tmp_path / "not-a-db").write_text("this is not SQLite " * 100)
    history = History(tmp_path / "not-a-db")
    history.record("still = 'kept'", 1)
    assert history.tail(1) == [Entry(1, 1, "still = 'kept'")]


def test_a_failing_database_never_fails_the_cell(tmp_path: Path) -> None:
    """record() runs in the relay of a cell's reply: a database error is logged, not raised."""
    history = History(tmp_path / "kernel-history.sqlite")
    history.close()
    history.record("x = 1", 1)
    assert history.answer({"hist_access_type": "tail", "n": 5}) == {"status": "ok", "history": []}
