"""The synchronous facade, against a real VM (one box)."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite

pytestmark = pytest.mark.vm


def test_sync_runtime_box_and_streaming(vm_home: Path) -> None:
    with boxlite.SyncBoxlite(boxlite.Options(home_dir=vm_home)) as runtime:
        box = runtime.create(boxlite.BoxOptions(), name="sync-facade")
        try:
            assert box.info().status == "running"
            execution = box.exec("sh", ["-c", "echo one; echo two; echo err >&2; exit 4"])
            assert list(execution.stdout()) == ["one\n", "two\n"]
            assert list(execution.stderr()) == ["err\n"]
            assert execution.wait().exit_code == 4
            found = runtime.get("sync-facade")
            assert found is not None and found.id == box.id
            assert runtime.metrics().total_commands_executed >= 1
        finally:
            runtime.remove(box.id, force=True)
        assert runtime.get("sync-facade") is None


def test_sync_simplebox_reports_errors_as_the_async_api_does(vm_home: Path) -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=vm_home))
    with boxlite.SyncSimpleBox(runtime=runtime) as box:
        result = box.exec("python3", "-c", "print(6*7)")
        assert (result.exit_code, result.stdout) == (0, "42\n")
        with pytest.raises(boxlite.ExecError) as err:
            box.exec("sh", "-c", "echo nope >&2; exit 3", check=True)
        assert err.value.exit_code == 3 and "nope" in err.value.stderr


def test_sync_codebox_works_inside_a_running_event_loop(vm_home: Path) -> None:
    """As in a Jupyter cell: a loop is running in this thread, and the sync API still just works."""
    import asyncio

    from boxlite.sync_api import SyncCodeBox

    runtime = boxlite.Boxlite(boxlite.Options(home_dir=vm_home))

    async def notebook_cell() -> tuple[str, str | None, bytes | str]:
        with SyncCodeBox(runtime=runtime) as cb:
            cb.run("x = 21")
            printed = cb.run("print('x is', x)")
            value = cb.run("x * 2")
            cb.files.write("note.txt", "kept")
            return str(printed), value.text, cb.files.read("note.txt")

    printed, value, note = asyncio.run(notebook_cell())
    assert (printed, value, note) == ("x is 21\n", "42", b"kept")
