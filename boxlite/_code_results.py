"""What CodeBox.run() gives back: the outputs of one cell, as a Jupyter front end would show them.

`CodeExecution` is a `str` (stdout, stderr, the error's traceback and the cell's value, in the order produced:
what upstream BoxLite's CodeBox returned as plain text, so code that prints or searches it keeps working) that
also carries the structured parts: `results` (MIME bundles), `logs`, `error`, `execution_count`, `outputs`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from boxlite._kernel_client import KernelGone, KernelMessage

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DEFAULT_MAX_OUTPUT_BYTES = 8 * 1024 * 1024

MIME_ATTRS = {
    "text": "text/plain", "html": "text/html", "markdown": "text/markdown", "svg": "image/svg+xml",
    "png": "image/png", "jpeg": "image/jpeg", "pdf": "application/pdf", "latex": "text/latex",
    "json": "application/json", "javascript": "application/javascript",
}


@dataclass
class Result:
    """One displayed value: a MIME bundle (`data`) with its metadata, like a notebook output.

    `is_main_result` marks the cell's own value (its execute_result); `display()` calls give the others.
    Images arrive base64-encoded, as in .ipynb files.
    """

    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    is_main_result: bool = False
    display_id: str | None = None

    def formats(self) -> list[str]:
        return list(self.data)

    def __getattr__(self, name: str) -> Any:
        mime = MIME_ATTRS.get(name)
        if mime is None:
            raise AttributeError(name)
        return self.data.get(mime)

    def __str__(self) -> str:
        return str(self.data.get("text/plain", ""))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Displayed in a notebook, a Result renders as it would have in the box's own notebook."""
        return self.data, self.metadata


@dataclass
class Logs:
    """The text a cell printed, chunk by chunk as it arrived (join a list for the whole text)."""

    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


@dataclass
class CodeError:
    """An exception raised by the cell (or the kernel's end, name "KernelDied"): its name, value and the
    traceback as plain text (`traceback_lines` keeps IPython's colored lines)."""

    name: str
    value: str
    traceback_lines: list[str] = field(default_factory=list)

    @property
    def traceback(self) -> str:
        return ANSI.sub("", "\n".join(self.traceback_lines))

    def __str__(self) -> str:
        return self.traceback or f"{self.name}: {self.value}"


@dataclass
class Stream:
    """A piece of printed text, as an entry of CodeExecution.outputs."""

    name: str
    text: str


Output = Stream | Result | CodeError


class CodeExecution(str):
    """The outcome of CodeBox.run(): prints as the cell's text; `results`, `logs`, `error`,
    `execution_count` and `outputs` (everything, in order) hold the structured parts."""

    results: list[Result]
    logs: Logs
    error: CodeError | None
    execution_count: int | None
    outputs: list[Output]
    truncated_bytes: int

    def __new__(cls, outputs: list[Output], logs: Logs, error: CodeError | None, execution_count: int | None,
                truncated_bytes: int = 0) -> CodeExecution:
        self = super().__new__(cls, _transcript(outputs))
        self.outputs = outputs
        self.results = [o for o in outputs if isinstance(o, Result)]
        self.logs = logs
        self.error = error
        self.execution_count = execution_count
        self.truncated_bytes = truncated_bytes
        return self

    @property
    def text(self) -> str | None:
        """The cell's value as text (its main result's text/plain), None when it has none."""
        main = next((r for r in self.results if r.is_main_result), None)
        return str(main) if main is not None else None

    @property
    def stdout(self) -> str:
        return "".join(self.logs.stdout)

    @property
    def stderr(self) -> str:
        return "".join(self.logs.stderr)

    def __repr__(self) -> str:
        parts = [f"execution_count={self.execution_count}", f"results={len(self.results)}",
                 f"stdout={self.stdout[:60]!r}"]
        if self.error is not None:
            parts.append(f"error={self.error.name}: {self.error.value[:60]}")
        return f"CodeExecution({', '.join(parts)})"


def _transcript(outputs: list[Output]) -> str:
    text = []
    for out in outputs:
        if isinstance(out, Stream):
            text.append(out.text)
        elif isinstance(out, CodeError) or (out.is_main_result and "text/plain" in out.data):
            text.append(str(out) + "\n")
    return "".join(text)


Callback = Callable[[Any], Any]


class RunCollector:
    """Builds a CodeExecution from the messages of one execute_request, calling the callbacks as they come.

    Keeps at most `max_output_bytes` of printed text (then one marker; callbacks still see everything).
    """

    def __init__(self, *, on_stdout: Callback | None = None, on_stderr: Callback | None = None,
                 on_result: Callback | None = None, on_error: Callback | None = None,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES) -> None:
        self.outputs: list[Output] = []
        self.logs = Logs()
        self.error: CodeError | None = None
        self.execution_count: int | None = None
        self.reply: dict[str, Any] | None = None
        self.idle = False
        self.callbacks = {"stdout": on_stdout, "stderr": on_stderr, "result": on_result, "error": on_error}
        self.max_output_bytes = max_output_bytes
        self.kept_bytes = 0
        self.truncated_bytes = 0
        self._clear_pending = False

    @property
    def done(self) -> bool:
        return self.reply is not None and self.idle

    async def handle(self, item: KernelMessage) -> None:
        kind, content = item.msg_type, item.content
        if item.channel == "shell" and kind == "execute_reply":
            self.reply = content
            self.execution_count = content.get("execution_count", self.execution_count)
            if content.get("status") == "error" and self.error is None:
                await self._set_error(CodeError(content.get("ename", "Error"), content.get("evalue", ""),
                                                list(content.get("traceback", []))))
            return
        if item.channel != "iopub":
            return
        if kind == "status":
            self.idle = self.idle or content.get("execution_state") == "idle"
        elif kind == "execute_input":
            self.execution_count = content.get("execution_count", self.execution_count)
        elif kind == "clear_output":
            if content.get("wait"):
                self._clear_pending = True
            else:
                self._clear()
        elif kind == "stream":
            await self._stream(content.get("name", "stdout"), content.get("text", ""))
        elif kind in ("display_data", "execute_result"):
            self._apply_pending_clear()
            result = Result(dict(content.get("data", {})), dict(content.get("metadata", {})),
                            is_main_result=kind == "execute_result",
                            display_id=(content.get("transient") or {}).get("display_id"))
            if kind == "execute_result":
                self.execution_count = content.get("execution_count", self.execution_count)
            self.outputs.append(result)
            await _call(self.callbacks["result"], result)
        elif kind == "update_display_data":
            display_id = (content.get("transient") or {}).get("display_id")
            for out in self.outputs:
                if isinstance(out, Result) and display_id and out.display_id == display_id:
                    out.data = dict(content.get("data", {}))
                    out.metadata = dict(content.get("metadata", {}))
        elif kind == "error":
            await self._set_error(CodeError(content.get("ename", "Error"), content.get("evalue", ""),
                                            list(content.get("traceback", []))))

    async def kernel_gone(self, gone: KernelGone, restarted: bool) -> None:
        what = "a new kernel was started: variables and imports are lost" if restarted else "restart it"
        tail = gone.output_tail.strip()
        lines = [f"KernelDied: the Python kernel {gone.describe()} while running this code; {what}"]
        if tail:
            lines += ["", "The kernel's last output:", tail]
        await self._set_error(CodeError("KernelDied", f"the Python kernel {gone.describe()}; {what}", lines))

    async def _set_error(self, error: CodeError) -> None:
        self._apply_pending_clear()
        self.error = error
        self.outputs.append(error)
        await _call(self.callbacks["error"], error)

    async def _stream(self, name: str, text: str) -> None:
        self._apply_pending_clear()
        await _call(self.callbacks["stdout" if name == "stdout" else "stderr"], text)
        size = len(text.encode(errors="replace"))
        if self.kept_bytes + size > self.max_output_bytes:
            room = max(0, self.max_output_bytes - self.kept_bytes)
            kept = text.encode(errors="replace")[:room].decode(errors="ignore")
            if self.truncated_bytes == 0:
                kept += (f"\n[boxlite: output truncated after {self.max_output_bytes} bytes; pass on_stdout=/"
                         "on_stderr= to receive all of it, or raise max_output_bytes]\n")
            self.truncated_bytes += size - room
            self.kept_bytes = self.max_output_bytes
            if not kept:
                return
            text = kept
        else:
            self.kept_bytes += size
        (self.logs.stdout if name == "stdout" else self.logs.stderr).append(text)
        last = self.outputs[-1] if self.outputs else None
        if isinstance(last, Stream) and last.name == name:
            last.text += text
        else:
            self.outputs.append(Stream(name, text))

    def _apply_pending_clear(self) -> None:
        if self._clear_pending:
            self._clear()

    def _clear(self) -> None:
        self._clear_pending = False
        self.outputs = [o for o in self.outputs if isinstance(o, CodeError)]
        self.logs = Logs()

    def execution(self) -> CodeExecution:
        return CodeExecution(self.outputs, self.logs, self.error, self.execution_count, self.truncated_bytes)


async def _call(callback: Callback | None, value: Any) -> None:
    if callback is None:
        return
    outcome = callback(value)
    if isinstance(outcome, Awaitable):
        await outcome
