"""The examples keep working: each is run for real."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.anyio]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> object:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def test_agent_loop_feeds_text_errors_and_images_back(vm_home: Path) -> None:
    example = _load("agent_loop")
    messages = await example.agent_loop(example.ScriptedModel(), "chart revenue")  # type: ignore[attr-defined]
    tool = [m for m in messages if m["role"] == "tool"]
    assert len(tool) == 4
    assert "NameError" in tool[0]["content"][0]["text"]  # the model's bug came back as an error...
    assert "1140.0" in tool[1]["content"][0]["text"]  # ...its fix ran in the same, persistent kernel
    image = tool[2]["content"][0]
    assert image["type"] == "image" and base64.b64decode(image["data"]).startswith(b"\x89PNG")
    assert any("best month: Mar" in part.get("text", "") for part in tool[3]["content"])
