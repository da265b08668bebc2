"""CodeBox file calls on a started box: bad content or undecodable text are BoxliteErrors with a fix."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


@pytest.fixture(scope="module")
async def cb(runtime: boxlite.Boxlite) -> AsyncIterator[boxlite.CodeBox]:
    async with boxlite.CodeBox(runtime=runtime, memory_mib=768) as codebox:
        yield codebox


async def test_write_refuses_content_that_is_not_bytes_or_text(cb: boxlite.CodeBox) -> None:
    with pytest.raises(boxlite.ConfigError) as info:
        await cb.files.write("five.bin", 5)  # type: ignore[arg-type]
    assert info.value.fix
    # Nothing was written (bytes(5) would have made a file of five zero bytes).
    with pytest.raises(boxlite.NotFoundError):
        await cb.files.read("five.bin")


async def test_reading_binary_as_text_is_a_parse_error(cb: boxlite.CodeBox) -> None:
    path = await cb.files.write("binary.bin", b"\xff\xfe\x00 not utf-8")
    with pytest.raises(boxlite.ParseError) as info:
        await cb.files.read("binary.bin", text=True)
    assert path in info.value.detail and info.value.fix and "text=False" in info.value.fix
    assert await cb.files.read("binary.bin") == b"\xff\xfe\x00 not utf-8"
