"""An LLM agent loop around CodeBox, runnable offline: a scripted "model" writes code, CodeBox runs it, and
the results (text, errors, images) go back into the conversation as the next message.

    python3 examples/agent_loop.py

Swap `ScriptedModel` for a real model client: it only needs `reply(messages) -> str | None` (code to run, or
None when done). The conversation uses the common "content parts" shape (text and base64 image parts) that
multimodal chat APIs accept.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import boxlite

Message = dict[str, Any]


class ScriptedModel:
    """Stands in for an LLM: answers from a script, and fixes its own mistake when it sees an error."""

    def __init__(self) -> None:
        self.steps = [
            # A first attempt with a bug (a name that does not exist yet)...
            "import pandas as pd\nsales = pd.DataFrame({'month': ['Jan', 'Feb', 'Mar'], 'units': [120, 95, 143]})\n"
            "sales['revenue'] = sales['units'] * price",
            # ...a chart of the data...
            "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(4, 3))\n"
            "ax.bar(sales['month'], sales['revenue'])\nax.set_title('Revenue by month')\nplt.show()",
            # ...and a summary that relies on the state built by the earlier cells.
            "best = sales.loc[sales['revenue'].idxmax()]\n"
            "print(f\"best month: {best['month']} ({best['revenue']:.0f})\")\nsales",
        ]

    def reply(self, messages: list[Message]) -> str | None:
        last = messages[-1]
        if last["role"] == "tool" and any("NameError" in part.get("text", "") for part in last["content"]):
            return "price = 9.5\nsales['revenue'] = sales['units'] * price\nsales.head(1)"
        return self.steps.pop(0) if self.steps else None


def to_content(execution: boxlite.CodeExecution) -> list[dict[str, Any]]:
    """A run's outcome as message parts: printed text, the error, then each result as text or an image."""
    parts: list[dict[str, Any]] = []
    if execution.stdout or execution.stderr:
        parts.append({"type": "text", "text": (execution.stdout + execution.stderr)[-4000:]})
    if execution.error is not None:
        parts.append({"type": "text", "text": f"{execution.error.name}: {execution.error.value}\n"
                      f"{execution.error.traceback[-2000:]}"})
    for result in execution.results:
        if result.png:
            parts.append({"type": "image", "media_type": "image/png", "data": result.png})
        elif result.text:
            parts.append({"type": "text", "text": result.text})
    return parts or [{"type": "text", "text": "(no output)"}]


async def agent_loop(model: ScriptedModel, task: str, max_steps: int = 8) -> list[Message]:
    messages: list[Message] = [{"role": "user", "content": [{"type": "text", "text": task}]}]
    async with boxlite.CodeBox() as codebox:
        for _ in range(max_steps):
            code = model.reply(messages)
            if code is None:
                break
            messages.append({"role": "assistant", "content": [{"type": "text", "text": code}]})
            try:
                execution = await codebox.run(code, timeout=60)
                content = to_content(execution)
            except boxlite.TimeoutError as exc:
                content = [{"type": "text", "text": f"timed out: {exc}"}]
            messages.append({"role": "tool", "content": content})
    return messages


def main() -> None:
    messages = asyncio.run(agent_loop(ScriptedModel(), "Chart last quarter's revenue and name the best month."))
    for message in messages:
        for part in message["content"]:
            if part["type"] == "image":
                size = len(base64.b64decode(part["data"]))
                print(f"[{message['role']}] <{part['media_type']} image, {size} bytes>")
            else:
                text = part["text"].rstrip()
                print(f"[{message['role']}] " + text.replace("\n", "\n" + " " * (len(message["role"]) + 3)))
        print()


if __name__ == "__main__":
    main()
