"""The live metrics panel: an ipywidget that lives in the host kernel process (its comm is answered by the host,
not by the box), so it keeps updating while the box is busy running a cell, and says so when the box is gone.

`HostComm` carries ipywidgets' messages over the kernel's own iopub; `MetricsPanel` refreshes an HTML widget
from `Box.metrics()` once a second while it is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from collections.abc import Awaitable, Callable
from typing import Any

import comm
from comm.base_comm import BaseComm, BuffersType, MaybeDict

from boxlite import BoxliteError, BoxMetrics

Publish = Callable[[str, dict[str, Any], dict[str, Any] | None, list[Any] | None], None]
REFRESH_S = 1.0
_publish: Publish | None = None


class HostComm(BaseComm):
    """A comm whose messages the BoxLite kernel itself publishes (see `install_host_comms`)."""

    def publish_msg(self, msg_type: str, data: MaybeDict = None, metadata: MaybeDict = None,
                    buffers: BuffersType = None, **keys: Any) -> None:
        if _publish is None:
            raise RuntimeError("host comms are not installed")
        content = {"data": data or {}, "comm_id": self.comm_id, **keys}
        # The metadata matters: a widget manager refuses a comm_open without ipywidgets' protocol version in it
        # ("Wrong widget protocol version"), and then renders nothing.
        _publish(msg_type, content, metadata or None, list(buffers) if buffers else None)


def install_host_comms(publish: Publish) -> None:
    """Make ipywidgets created in this process open HostComms that `publish` sends on iopub."""
    global _publish
    _publish = publish
    comm.create_comm = HostComm


def host_comm(comm_id: str) -> BaseComm | None:
    return comm.get_comm_manager().get_comm(comm_id)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):.0f} MiB"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def render(name: str, state: str, engine: str | None, m: BoxMetrics | None, note: str = "") -> str:
    """The panel's HTML: one row of labelled values."""
    cells: list[tuple[str, str]] = [("box", name), ("state", state), ("engine", engine or "-")]
    if m is not None:
        mem = _mib(m.guest_memory_used_bytes)
        if m.guest_memory_total_bytes:
            mem += f" / {_mib(m.guest_memory_total_bytes)}"
        cells += [
            ("cpu", f"{_pct(m.guest_cpu_percent)} (host {_pct(m.cpu_percent)})"),
            ("mem", f"{mem} (host RSS {_mib(m.memory_bytes)})"),
            ("guest_boot_ms", "-" if m.guest_boot_ms is None else f"{m.guest_boot_ms:.0f} ({m.boot or '?'})"),
            ("commands", str(m.commands)),
            ("errors", str(m.errors)),
        ]
    row = "".join(
        f'<td style="padding:2px 10px"><div style="opacity:.65;font-size:85%">{html.escape(k)}</div>'
        f'<div class="boxlite-metric-{html.escape(k)}" style="font-family:monospace">{html.escape(v)}</div></td>'
        for k, v in cells)
    tail = f'<div style="opacity:.65;font-size:85%">{html.escape(note)}</div>' if note else ""
    return (f'<div class="boxlite-metrics"><b>BoxLite</b> live metrics'
            f'<table style="border-collapse:collapse"><tr>{row}</tr></table>{tail}</div>')


Sample = Callable[[], Awaitable[tuple[str, str, str | None, BoxMetrics | None]]]


class MetricsPanel:
    """An HTML widget refreshed once a second from `sample()` (name, state, engine, metrics) until closed."""

    def __init__(self, sample: Sample) -> None:
        import ipywidgets

        self._sample = sample
        self.widget = ipywidgets.HTML(value=render("...", "starting", None, None))
        self._task: asyncio.Task[None] | None = None
        self.updates = 0

    def bundle(self) -> dict[str, Any]:
        """The display_data content that shows the panel."""
        data = self.widget._repr_mimebundle_() or {}
        return {"data": data, "metadata": {}, "transient": {}}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def refresh(self) -> None:
        try:
            name, state, engine, metrics = await self._sample()
            self.widget.value = render(name, state, engine, metrics, note=f"updated every {REFRESH_S:g} s")
        except BoxliteError as exc:
            self.widget.value = render("?", "unavailable", None, None, note=str(exc))
        self.updates += 1

    async def _run(self) -> None:
        while self.widget.comm is not None:
            await self.refresh()
            await asyncio.sleep(REFRESH_S)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            self.widget.close()
