"""The live metrics panel: an ipywidget that lives in the host kernel process (its comm is answered by the host,
not by the box), so it keeps updating while the box is busy running a cell, and says so when the box is gone.

`HostComm` carries ipywidgets' messages over the kernel's own iopub; `MetricsPanel` refreshes an HTML widget
from `Box.metrics()` once a second while it is open, with cpu and memory charted over the last minutes (inline
SVG drawn from a bounded ring of samples: no JavaScript of its own). A panel whose kernel is gone says
"detached" (see STYLE: the frontend's own mark, and a fade when updates stop coming).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import comm
from comm.base_comm import BaseComm, BuffersType, MaybeDict

from boxlite import BoxliteError, BoxMetrics
from codebox_kernel import readable

Publish = Callable[[str, dict[str, Any], dict[str, Any] | None, list[Any] | None], None]
REFRESH_S = 1.0
WINDOW_S = 180.0  # the charts show the last three minutes
HISTORY = int(WINDOW_S / REFRESH_S) + 1
CHART_W, CHART_H = 150, 28  # px
MIN_SPAN_S = 10.0  # the first samples do not stretch across the whole chart
STALE_S = 10.0  # no redraw for this long: the panel fades and says since when
DETACHED = "its kernel was restarted or shut down; `%boxlite metrics` shows a live panel"
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
    """The host's own comm with this id, or None (most comms are the box's).

    Read from the manager's table, not with `get_comm()`, which logs "No such comm" for every id it does not
    know: the frontend's messages to the box's comms (the widget manager's control comm at every start) all
    pass through here."""
    return comm.get_comm_manager().comms.get(comm_id)


# -- the charts -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One sample of the figures the panel charts; `at` is the wall clock (time.time())."""

    at: float
    guest_cpu: float | None
    host_cpu: float | None
    mem_used: int | None
    mem_total: int | None


class History:
    """The samples of the last WINDOW_S seconds, oldest first: a ring of fixed size, so a panel left open for
    days stays as small as one open for minutes."""

    def __init__(self, size: int = HISTORY) -> None:
        self._ring: deque[Point] = deque(maxlen=size)

    def add(self, at: float, m: BoxMetrics) -> None:
        self._ring.append(Point(at, m.guest_cpu_percent, m.cpu_percent, m.guest_memory_used_bytes,
                                m.guest_memory_total_bytes))

    def __len__(self) -> int:
        return len(self._ring)

    def series(self, field_name: str) -> list[tuple[float, float]]:
        """(time, value) of one field, the samples without it left out."""
        return [(p.at, float(v)) for p in self._ring if (v := getattr(p, field_name)) is not None]

    def span(self, now: float) -> float:
        """The seconds the charts cover: from the oldest sample (at least MIN_SPAN_S, so the first points do
        not stretch across the chart) up to WINDOW_S, after which the charts scroll."""
        oldest = self._ring[0].at if self._ring else now
        return min(max(now - oldest, MIN_SPAN_S), WINDOW_S)

    def top(self, field_name: str) -> float | None:
        values = [v for _, v in self.series(field_name)]
        return max(values) if values else None


def chart_points(series: Sequence[tuple[float, float]], now: float, top: float, width: int = CHART_W,
                 height: int = CHART_H, window: float = WINDOW_S) -> list[tuple[float, float]]:
    """Where each (time, value) falls in a width x height box: x is time over the last `window` seconds
    ending at `now` (the newest sample at the right edge, so the line scrolls and a pause shows as a gap in
    time), y is value from 0 (bottom) to `top` (top); older samples are left out."""
    scale = top if top > 0 else 1.0
    points = []
    for at, value in series:
        age = now - at
        if age > window:
            continue
        x = width * (1 - max(age, 0.0) / window)
        y = height - 1 - (height - 2) * min(max(value, 0.0), scale) / scale
        points.append((round(x, 1), round(y, 1)))
    return points


def sparkline(lines: Sequence[tuple[str, list[tuple[float, float]]]], title: str, width: int = CHART_W,
              height: int = CHART_H) -> str:
    """An inline SVG chart: for each (css class, points) a line (a dot for a single point), the first one over
    a light fill; the frame is drawn even without points, so the panel does not jump when they come."""
    shapes = []
    for i, (css, points) in enumerate(lines):
        if len(points) == 1:
            (x, y), = points
            shapes.append(f'<circle class="{css}" cx="{x}" cy="{y}" r="1.5"/>')
        elif points:
            coords = " ".join(f"{x:g},{y:g}" for x, y in points)
            if i == 0:
                first, last = points[0][0], points[-1][0]
                shapes.append(f'<polygon class="{css} bl-area" points="{first:g},{height} {coords} '
                              f'{last:g},{height}"/>')
            shapes.append(f'<polyline class="{css}" points="{coords}"/>')
    return (f'<svg class="bl-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
            f'<rect class="bl-frame" x="0.5" y="0.5" width="{width - 1}" height="{height - 1}"/>'
            f'{"".join(shapes)}</svg>')


def cpu_chart(history: History, now: float) -> str:
    # One scale for both lines: 100% is all the guest's vCPUs, or one host core (the host line can pass it).
    top = max(100.0, history.top("guest_cpu") or 0.0, history.top("host_cpu") or 0.0)
    span = history.span(now)
    lines = [("bl-guest", chart_points(history.series("guest_cpu"), now, top, window=span)),
             ("bl-host", chart_points(history.series("host_cpu"), now, top, window=span))]
    return sparkline(lines, f"cpu over the last {readable.duration(span)}: guest (solid), host (dashed); "
                            f"top {top:.0f}%")


def mem_chart(history: History, now: float) -> str:
    top = float(history.top("mem_total") or history.top("mem_used") or 0.0)
    span = history.span(now)
    lines = [("bl-guest", chart_points(history.series("mem_used"), now, top, window=span))]
    return sparkline(lines, f"guest memory used over the last {readable.duration(span)}; "
                            f"top {readable.size(top)}")


# -- the panel's HTML -------------------------------------------------------------------------------------------
# The state switches are CSS, so they work without the kernel: ipywidgets marks the views of a kernel that is
# restarting (or gone) with `jupyter-widgets-disconnected` (the old process cannot say so: JupyterLab drops its
# comms before the new one starts), and a panel that has not been redrawn for STALE_S seconds (each update
# replaces the HTML, restarting the animation) fades and says since when.
STYLE = f"""<style>
.boxlite-metrics .bl-chart{{display:block;margin-top:2px}}
.boxlite-metrics .bl-frame{{fill:none;stroke:currentColor;stroke-opacity:.15}}
.boxlite-metrics .bl-guest{{fill:none;stroke:#1f77b4;stroke-width:1.3}}
.boxlite-metrics .bl-guest.bl-area{{fill:#1f77b4;fill-opacity:.15;stroke:none}}
.boxlite-metrics circle.bl-guest{{fill:#1f77b4}}
.boxlite-metrics .bl-host{{fill:none;stroke:#ff7f0e;stroke-width:1;stroke-dasharray:3 2}}
.boxlite-metrics circle.bl-host{{fill:#ff7f0e}}
.boxlite-metrics .bl-running{{color:#2e7d32}}
.boxlite-metrics .bl-detached{{display:none;color:#c2410c;font-weight:bold}}
.boxlite-metrics .bl-dim{{opacity:.65}}
.boxlite-metrics .bl-stale{{opacity:0;animation:bl-stale 0s linear {STALE_S:g}s forwards}}
.boxlite-metrics.bl-live-panel{{animation:bl-fade 0s linear {STALE_S:g}s forwards}}
@keyframes bl-stale{{to{{opacity:1}}}}
@keyframes bl-fade{{to{{opacity:.55}}}}
.jupyter-widgets-disconnected .boxlite-metrics .bl-live,
.boxlite-metrics.bl-is-detached .bl-live,
.jupyter-widgets-disconnected .boxlite-metrics .bl-stale{{display:none}}
.jupyter-widgets-disconnected .boxlite-metrics .bl-detached,
.boxlite-metrics.bl-is-detached .bl-detached{{display:inline}}
.jupyter-widgets-disconnected .boxlite-metrics{{animation:none}}
.jupyter-widgets-disconnected .boxlite-metrics .bl-cell:not(.bl-cell-state),
.boxlite-metrics.bl-is-detached .bl-cell:not(.bl-cell-state){{opacity:.45}}
</style>"""

# ipywidgets gives HTML content the line height of a widget row (28 px); the panel's lines are text lines.
ROOT_STYLE = "line-height:1.35"
# Each cell is one unbreakable unit (white-space:nowrap, flex:none); the row wraps between cells.
CELLS_STYLE = "display:flex;flex-wrap:wrap;gap:4px 18px;align-items:flex-start;margin-top:2px"
CELL_STYLE = "white-space:nowrap;flex:none"
LABEL_STYLE = "opacity:.65;font-size:85%;white-space:nowrap"
VALUE_STYLE = "font-family:monospace;white-space:nowrap"
NOTE_STYLE = "font-size:85%"


def _cell(key: str, value: str, extra: str = "") -> str:
    """One labelled value (its text escaped here; `extra`, a chart, is markup made by this module)."""
    return (f'<div class="bl-cell bl-cell-{html.escape(key)}" style="{CELL_STYLE}">'
            f'<div style="{LABEL_STYLE}">{html.escape(key)}</div>'
            f'<div class="boxlite-metric-{html.escape(key)}" style="{VALUE_STYLE}">{value}</div>{extra}</div>')


def _state_cell(state: str) -> str:
    """The state, which says "detached" instead once the panel's kernel is gone (see STYLE)."""
    live = "bl-live bl-running" if state == "running" else "bl-live"
    return _cell("state", f'<span class="{live}">{html.escape(state)}</span><span class="bl-detached">detached</span>')


def _metric_cells(m: BoxMetrics, history: History | None, now: float) -> list[str]:
    mem = readable.size(m.guest_memory_used_bytes)
    if m.guest_memory_total_bytes:
        mem += f" / {readable.size(m.guest_memory_total_bytes)}"
    boot = "-" if m.guest_boot_ms is None else f"{m.guest_boot_ms:.0f} ({m.boot or '?'})"
    cpu = f"{readable.percent(m.guest_cpu_percent)} (host {readable.percent(m.cpu_percent)})"
    return [
        _cell("cpu", html.escape(cpu), cpu_chart(history, now) if history is not None else ""),
        _cell("mem", html.escape(f"{mem} (host RSS {readable.size(m.memory_bytes)})"),
              mem_chart(history, now) if history is not None else ""),
        _cell("guest_boot_ms", html.escape(boot)),
        _cell("commands", str(m.commands)),
        _cell("errors", str(m.errors)),
    ]


def render(name: str, state: str, engine: str | None, m: BoxMetrics | None, note: str = "",
           history: History | None = None, now: float | None = None, detached: str | None = None) -> str:
    """The panel's HTML: labelled values (cpu and mem with a chart of the last WINDOW_S seconds) that wrap
    between each other, never inside one; `detached` (why) renders the panel's last words."""
    now = time.time() if now is None else now
    cells = [_cell("box", html.escape(name)), _state_cell(state),
             _cell("engine", html.escape(engine or "-"))]
    if m is not None:
        cells += _metric_cells(m, history, now)
    notes = [f'<span class="bl-live bl-dim">{html.escape(note)}</span>' if note else "",
             f'<span class="bl-detached">detached: {html.escape(detached or DETACHED)}</span>',
             "" if detached else f'<span class="bl-stale"> &middot; no update since {readable.clock(now)}: '
                                 "is the kernel still running?</span>"]
    root = "boxlite-metrics " + ("bl-is-detached" if detached else "bl-live-panel")
    return (f'<div class="{root}" style="{ROOT_STYLE}">{STYLE}<b>BoxLite</b> live metrics'
            f'<div class="bl-cells" style="{CELLS_STYLE}">{"".join(cells)}</div>'
            f'<div style="{NOTE_STYLE}">{"".join(notes)}</div></div>')


Sampler = Callable[[], Awaitable[tuple[str, str, str | None, BoxMetrics | None]]]


class MetricsPanel:
    """An HTML widget refreshed once a second from `sample()` (name, state, engine, metrics) until detached."""

    def __init__(self, sample: Sampler, clock: Callable[[], float] = time.time) -> None:
        import ipywidgets

        self._sample = sample
        self._clock = clock
        self.history = History()
        self._last: tuple[str, str, str | None, BoxMetrics | None] = ("...", "starting", None, None)
        self.widget = ipywidgets.HTML(value=render(*self._last))
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
            self._last = name, state, engine, metrics = await self._sample()
            now = self._clock()
            if metrics is not None:
                self.history.add(now, metrics)
            note = (f"charts: the last {readable.duration(self.history.span(now))} \N{MIDDLE DOT} updated "
                    f"{readable.clock(now)}, every {REFRESH_S:g} s")
            self.widget.value = render(name, state, engine, metrics, note=note, history=self.history, now=now)
        except BoxliteError as exc:
            self.widget.value = render("?", "unavailable", None, None, note=str(exc))
        self.updates += 1

    async def _run(self) -> None:
        while self.widget.comm is not None:
            await self.refresh()
            await asyncio.sleep(REFRESH_S)

    async def detach(self, why: str = DETACHED) -> None:
        """Stop refreshing and show the panel's last figures as detached, saying `why` (the kernel is ending).
        The comm is left open: closing it would make the frontend remove the panel, not mark it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        name, _state, engine, metrics = self._last
        with contextlib.suppress(Exception):
            self.widget.value = render(name, "detached", engine, metrics, history=self.history,
                                       now=self._clock(), detached=why)
