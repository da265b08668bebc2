"""How CodeBox turns a cell's Jupyter messages into a CodeExecution (no VM: messages made by hand)."""

from __future__ import annotations

from typing import Any

import pytest

from boxlite._code_results import CodeExecution, RunCollector, Stream
from boxlite._kernel_client import KernelGone, KernelMessage

pytestmark = pytest.mark.anyio


def msg(channel: str, msg_type: str, **content: Any) -> KernelMessage:
    return KernelMessage(channel, {"header": {"msg_type": msg_type}, "parent_header": {"msg_id": "p"},
                                   "content": content, "metadata": {}})


async def collect(*messages: KernelMessage, **kwargs: Any) -> CodeExecution:
    collector = RunCollector(**kwargs)
    for m in messages:
        await collector.handle(m)
    return collector.execution()


async def test_outputs_keep_their_order_and_text_reads_like_a_console() -> None:
    result = await collect(
        msg("iopub", "status", execution_state="busy"),
        msg("iopub", "stream", name="stdout", text="one\n"),
        msg("iopub", "display_data", data={"text/plain": "<Fig>", "image/png": "iVBOR"}, metadata={}),
        msg("iopub", "stream", name="stderr", text="warn\n"),
        msg("iopub", "stream", name="stdout", text="two\n"),
        msg("iopub", "execute_result", execution_count=3, data={"text/plain": "42", "text/html": "<b>42</b>"}),
        msg("shell", "execute_reply", status="ok", execution_count=3),
        msg("iopub", "status", execution_state="idle"),
    )
    assert isinstance(result, str) and result == "one\nwarn\ntwo\n42\n"
    assert result.logs.stdout == ["one\n", "two\n"] and result.logs.stderr == ["warn\n"]
    assert [r.formats() for r in result.results] == [["text/plain", "image/png"], ["text/plain", "text/html"]]
    assert result.results[1].is_main_result and result.text == "42" and result.results[1].html == "<b>42</b>"
    assert result.execution_count == 3 and result.error is None
    assert [type(o).__name__ for o in result.outputs] == ["Stream", "Result", "Stream", "Stream", "Result"]


async def test_errors_have_plain_tracebacks() -> None:
    result = await collect(msg("iopub", "error", ename="ValueError", evalue="bad",
                         traceback=["\x1b[0;31mValueError\x1b[0m  Traceback", "ValueError: bad"]))
    assert result.error is not None and result.error.traceback == "ValueError  Traceback\nValueError: bad"
    assert result.error.traceback_lines[0].startswith("\x1b")
    assert "ValueError: bad" in result


async def test_clear_output_now_and_on_the_next_output() -> None:
    result = await collect(msg("iopub", "stream", name="stdout", text="a"), msg("iopub", "clear_output", wait=False),
                     msg("iopub", "stream", name="stdout", text="b"), msg("iopub", "clear_output", wait=True),
                     msg("iopub", "display_data", data={"text/plain": "c"}))
    assert result.logs.stdout == [] and [r.text for r in result.results] == ["c"]


async def test_update_display_replaces_the_bundle_with_that_id() -> None:
    result = await collect(msg("iopub", "display_data", data={"text/plain": "old"}, transient={"display_id": "d1"}),
                     msg("iopub", "update_display_data", data={"text/plain": "new"}, transient={"display_id": "d1"}))
    assert [r.text for r in result.results] == ["new"]


async def test_output_beyond_the_limit_is_dropped_after_one_marker_but_callbacks_see_it_all() -> None:
    seen: list[str] = []
    chunks = [msg("iopub", "stream", name="stdout", text="x" * 400) for _ in range(10)]
    result = await collect(*chunks, on_stdout=seen.append, max_output_bytes=1000)
    kept = "".join(result.logs.stdout)
    assert kept.index("\n[boxlite: output truncated") == 1000 and kept.count("[boxlite: output truncated") == 1
    assert result.truncated_bytes == 3000 and sum(map(len, seen)) == 4000


async def test_async_callbacks_are_awaited() -> None:
    seen: list[str] = []

    async def on_stdout(text: str) -> None:
        seen.append(text)

    await collect(msg("iopub", "stream", name="stdout", text="hi"), on_stdout=on_stdout)
    assert seen == ["hi"]


async def test_a_dead_kernel_becomes_a_kernel_died_error() -> None:
    collector = RunCollector()
    await collector.kernel_gone(KernelGone(exit_code=-1, signal=11, output_tail="Segmentation fault"), True)
    result = collector.execution()
    assert result.error is not None and result.error.name == "KernelDied"
    assert "SIGSEGV" in result.error.value and "a new kernel was started" in result.error.value
    assert "Segmentation fault" in result.error.traceback


@pytest.mark.parametrize("signal, words", [(9, "SIGKILL"), (None, "exited with code 0")])
async def test_kernel_gone_descriptions(signal: int | None, words: str) -> None:
    assert words in KernelGone(exit_code=0 if signal is None else -1, signal=signal).describe()


async def test_stream_entries_merge_consecutive_text() -> None:
    result = await collect(msg("iopub", "stream", name="stdout", text="a"),
                           msg("iopub", "stream", name="stdout", text="b"))
    assert result.outputs == [Stream("stdout", "ab")]
