"""Misuse of a running command (Execution) is a BoxliteError with a fix, never a builtin exception.

They share the session box. Each command is one the test ends itself, so nothing outlives the test.
"""

from __future__ import annotations

import builtins
import time

import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


async def test_wait_with_a_timeout_raises_boxlite_timeout_and_the_command_keeps_running(
        box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sleep", ["100"])
    try:
        started = time.monotonic()
        with pytest.raises(boxlite.TimeoutError) as info:
            await execution.wait(timeout=0.5)
        assert time.monotonic() - started < 5
        # Code that catches the builtin (or asyncio's) TimeoutError keeps working.
        assert isinstance(info.value, builtins.TimeoutError)
        assert "still running after 0.5 s" in info.value.detail and "sleep" in info.value.detail
        assert info.value.fix and "kill" in info.value.fix
        assert not execution.done  # a wait that gives up does not end the command
    finally:
        await execution.kill()
    status = await execution.wait(timeout=30)
    assert status.exit_code == -9


async def test_wait_with_a_bad_timeout_is_an_execution_error(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("true")
    for bad in ("5", -1, float("nan")):
        with pytest.raises(boxlite.ExecutionError) as info:
            await execution.wait(timeout=bad)  # type: ignore[arg-type]
        assert info.value.fix
    assert (await execution.wait(timeout=30)).exit_code == 0


async def test_write_stdin_after_close_is_invalid_state(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("cat", stdin=True)
    await execution.write_stdin("hello\n")
    await execution.close_stdin()
    with pytest.raises(boxlite.InvalidStateError) as info:
        await execution.write_stdin("more\n")
    assert "stdin" in info.value.detail and info.value.fix
    out, _, status = await execution.collect()
    assert (out, status.exit_code) == (b"hello\n", 0)


async def test_stdin_data_that_is_not_bytes_or_text_is_an_execution_error(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("cat", stdin=True)
    for bad in (42, None, "lone \udc00 surrogate"):
        with pytest.raises(boxlite.ExecutionError) as info:
            await execution.write_stdin(bad)  # type: ignore[arg-type]
        assert info.value.fix
    await execution.write_stdin(bytearray(b"ok\n"))
    await execution.close_stdin()
    out, _, status = await execution.collect()
    assert (out, status.exit_code) == (b"ok\n", 0)


async def test_reading_a_stream_twice_is_invalid_state(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sh", ["-c", "echo out; echo err >&2"])
    assert [line async for line in execution.stdout()] == ["out\n"]
    with pytest.raises(boxlite.InvalidStateError) as info:
        [line async for line in execution.stdout()]
    assert "stdout" in info.value.detail and info.value.fix
    assert [line async for line in execution.stderr()] == ["err\n"]
    with pytest.raises(boxlite.InvalidStateError):
        [chunk async for chunk in execution.stderr_bytes()]
    with pytest.raises(boxlite.InvalidStateError):  # collect() reads both streams too
        await execution.collect()
    assert (await execution.wait(timeout=30)).exit_code == 0


async def test_kill_with_a_bad_signal_is_an_execution_error(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sleep", ["100"])
    try:
        for bad in ("TERM", 0, 1000, 9.0):
            with pytest.raises(boxlite.ExecutionError) as info:
                await execution.kill(bad)  # type: ignore[arg-type]
            assert info.value.fix
        assert not execution.done
    finally:
        await execution.kill()
    assert (await execution.wait(timeout=30)).exit_code == -9


async def test_stop_with_a_bad_timeout_is_a_config_error(box: boxlite.SimpleBox) -> None:
    for bad in ("10", -1, float("inf")):
        with pytest.raises(boxlite.ConfigError) as info:
            await box.box.stop(timeout=bad)  # type: ignore[arg-type]
        assert info.value.fix
    assert box.info().status == "running"  # the check came before anything was stopped
