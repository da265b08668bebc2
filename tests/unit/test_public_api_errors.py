"""Bad arguments to the public API are BoxliteErrors with a fix, caught before any box is involved.

(The ones that need a running box or command are in tests/vm/test_exec_errors.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import boxlite

pytestmark = pytest.mark.anyio


async def test_create_with_options_that_are_not_box_options(tmp_path: Path) -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=tmp_path))
    try:
        with pytest.raises(boxlite.ConfigError) as info:
            await runtime.create({"image": "alpine:latest"})  # type: ignore[arg-type]
        assert "BoxOptions" in info.value.detail and info.value.fix
    finally:
        await runtime.close()


@pytest.mark.parametrize("bad", ["1000", -1, True])
def test_codebox_max_output_bytes(bad: Any) -> None:
    with pytest.raises(boxlite.ConfigError) as info:
        boxlite.CodeBox(max_output_bytes=bad)
    assert info.value.fix


@pytest.mark.parametrize(("data", "mode"), [
    (123, 0o644),  # bytes(123) would have written 123 zero bytes
    (None, 0o644),
    ("lone \udc00 surrogate", 0o644),
    ("text", "rw"),
    ("text", 0o17777),
])
async def test_codebox_files_write_checks_its_arguments(data: Any, mode: Any) -> None:
    files = boxlite.CodeBox().files  # never started: the check comes before the box is needed
    with pytest.raises(boxlite.ConfigError) as info:
        await files.write("notes.txt", data, mode)
    assert info.value.fix


def test_a_home_that_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a directory")
    for make in (boxlite.Boxlite, boxlite.SyncBoxlite):
        with pytest.raises(boxlite.StorageError) as info:
            make(boxlite.Options(home_dir=home))
        assert str(home) in info.value.detail and info.value.fix


async def test_codebox_run_script_of_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    codebox = boxlite.CodeBox()  # never started: the script is read before the box is needed
    with pytest.raises(boxlite.NotFoundError) as missing:
        await codebox.run_script(tmp_path / "nope.py")
    assert missing.value.fix
    binary = tmp_path / "binary.py"
    binary.write_bytes(b"\xff\xfe not utf-8")
    for bad in (binary, tmp_path, "a\0b.py"):
        with pytest.raises(boxlite.ConfigError) as info:
            await codebox.run_script(bad)
        assert info.value.fix
