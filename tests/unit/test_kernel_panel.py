"""The metrics panel's HTML and the figures the kernel and the magic print, without a box: values that never
wrap inside themselves, charts drawn from the samples, a bounded history, the detached state, readable units."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from boxlite import BoxliteError, BoxMetrics
from codebox_kernel import readable
from codebox_kernel.metrics import (
    CHART_H,
    CHART_W,
    HISTORY,
    MIN_SPAN_S,
    STALE_S,
    WINDOW_S,
    History,
    MetricsPanel,
    chart_points,
    host_comm,
    render,
)

MIB = 1 << 20


def metrics(cpu: float = 12.5, used_mib: int = 100) -> BoxMetrics:
    return BoxMetrics(guest_cpu_percent=cpu, cpu_percent=3.0, guest_memory_used_bytes=used_mib * MIB,
                      guest_memory_total_bytes=512 * MIB, memory_bytes=180 * MIB, guest_boot_duration_ms=1234.5,
                      boot="restored", commands_executed_total=7, exec_errors_total=2)


class Elements(HTMLParser):
    """Every element as (tag, attributes), and the text of the document without its <style>."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._in_style = False
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.text.append(data)

    def with_class(self, name: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if name in a.get("class", "").split()]

    def prefixed(self, prefix: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if any(c.startswith(prefix) for c in a.get("class", "").split())]


def polyline(markup: str, css: str, nth: int = 0) -> list[tuple[float, float]]:
    """The points of the nth <polyline class=css>."""
    lines = [a for tag, a in Elements(markup).elements if tag == "polyline" and css in a.get("class", "").split()]
    return [(float(x), float(y)) for x, y in (p.split(",") for p in lines[nth]["points"].split())]


def style_of(attrs: dict[str, str]) -> dict[str, str]:
    return dict(part.split(":", 1) for part in attrs.get("style", "").split(";") if ":" in part)


# -- no wrapping inside a value ----------------------------------------------------------------------------------
def test_each_value_is_one_unbreakable_cell_and_the_row_wraps_between_cells() -> None:
    history = History()
    history.add(1000.0, metrics())
    doc = Elements(render("kernel-0123456789abcdef", "running", "qemu (tcg: no hardware virtualisation)",
                          metrics(), note="updated", history=history, now=1000.0))
    (row,) = doc.with_class("bl-cells")
    assert style_of(row)["display"] == "flex" and style_of(row)["flex-wrap"] == "wrap"
    cells = doc.with_class("bl-cell")
    values = doc.prefixed("boxlite-metric-")
    assert len(cells) == len(values) == 8  # box state engine cpu mem guest_boot_ms commands errors
    for attrs in cells:
        assert style_of(attrs)["white-space"] == "nowrap" and style_of(attrs)["flex"] == "none", attrs
    for attrs in values:
        assert style_of(attrs)["white-space"] == "nowrap", attrs
    text = "".join(doc.text)
    assert "12.5% (host 3.0%)" in text and "100 MiB / 512 MiB (host RSS 180 MiB)" in text
    assert "1234 (restored)" in text


def test_values_are_escaped() -> None:
    doc = Elements(render("<b>x</b>", "running", "<i>", None))
    assert not any(tag in ("i",) for tag, _ in doc.elements)
    assert "<b>x</b>" in "".join(doc.text)


# -- the charts --------------------------------------------------------------------------------------------------
def test_chart_points_put_time_on_x_and_value_on_y() -> None:
    now = 1000.0
    series = [(now - 180, 0.0), (now - 90, 50.0), (now, 100.0), (now - 500, 70.0)]  # the last one is too old
    points = chart_points(series, now, top=100.0, width=150, height=28, window=180)
    assert points == [(0.0, 27.0), (75.0, 14.0), (150.0, 1.0)]
    # Above the top is drawn at the top; below zero at the bottom.
    assert chart_points([(now, 250.0), (now, -5.0)], now, top=100.0, width=150, height=28) == [(150.0, 1.0),
                                                                                             (150.0, 27.0)]


def test_sparklines_are_drawn_from_the_samples() -> None:
    history = History()
    start = 5000.0
    cpu = [0.0, 25.0, 50.0, 100.0, 40.0]
    used = [100, 150, 200, 256, 512]
    for i, (c, u) in enumerate(zip(cpu, used, strict=True)):
        history.add(start + 10 * i, metrics(cpu=c, used_mib=u))
    now = start + 40
    markup = render("b", "running", "qemu", metrics(cpu=40.0, used_mib=512), history=history, now=now)
    svgs = [a for tag, a in Elements(markup).elements if tag == "svg"]
    assert len(svgs) == 2 and all(a["width"] == str(CHART_W) and a["height"] == str(CHART_H) for a in svgs)
    # The history is 40 s old, more than MIN_SPAN_S: the chart spans it, oldest at the left, newest at the right.
    span = max(40.0, MIN_SPAN_S)
    guest_cpu = polyline(markup, "bl-guest", 0)
    assert [x for x, _ in guest_cpu] == [round(CHART_W * (1 - (now - (start + 10 * i)) / span), 1) for i in range(5)]
    assert [y for _, y in guest_cpu] == [round(CHART_H - 1 - (CHART_H - 2) * c / 100, 1) for c in cpu]
    host_cpu = polyline(markup, "bl-host")
    assert {y for _, y in host_cpu} == {round(CHART_H - 1 - (CHART_H - 2) * 3.0 / 100, 1)}
    memory = polyline(markup, "bl-guest", 1)  # scaled to the guest's total memory
    assert [y for _, y in memory] == [round(CHART_H - 1 - (CHART_H - 2) * u / 512, 1) for u in used]
    assert memory[-1][1] == 1.0


def test_the_history_is_a_bounded_ring_and_the_chart_covers_at_most_the_window() -> None:
    history = History()
    for i in range(HISTORY * 3):
        history.add(float(i), metrics(cpu=float(i % 100)))
    assert len(history) == HISTORY
    now = float(HISTORY * 3 - 1)
    assert history.span(now) == WINDOW_S
    assert history.series("guest_cpu")[0][0] == now - HISTORY + 1
    markup = render("b", "running", "qemu", metrics(), history=history, now=now)
    xs = [x for x, _ in polyline(markup, "bl-guest")]
    assert len(xs) == WINDOW_S + 1 and min(xs) == 0.0 and max(xs) == CHART_W


def test_a_single_sample_is_a_dot_and_none_is_an_empty_frame() -> None:
    history = History()
    empty = render("b", "running", "qemu", metrics(), history=history, now=10.0)
    assert "<svg" in empty and "<polyline" not in empty and "<circle" not in empty
    history.add(10.0, metrics())
    one = render("b", "running", "qemu", metrics(), history=history, now=10.0)
    assert "<polyline" not in one and one.count('<circle class="bl-guest"') == 2


# -- detached and stale ------------------------------------------------------------------------------------------
def test_the_panel_says_detached_when_its_widget_is_disconnected_or_it_is_told() -> None:
    live = render("b", "running", "qemu", metrics())
    # ipywidgets marks the views of a restarting kernel's widgets `jupyter-widgets-disconnected`: then the
    # "running" state is hidden and "detached" shown, by CSS shipped in the panel.
    assert re.search(r"\.jupyter-widgets-disconnected \.boxlite-metrics \.bl-live,[^{]*\{display:none\}", live)
    assert re.search(r"\.jupyter-widgets-disconnected \.boxlite-metrics \.bl-detached,[^{]*\{display:inline\}",
                     live)
    # A panel not redrawn for STALE_S seconds fades and says since when (each redraw restarts the animation).
    assert f"animation:bl-stale 0s linear {STALE_S:g}s forwards" in live and "no update since" in live
    doc = Elements(live)
    assert doc.with_class("bl-live-panel") and not doc.with_class("bl-is-detached")
    last = render("b", "detached", "qemu", metrics(), detached="the kernel was restarted")
    doc = Elements(last)
    assert doc.with_class("bl-is-detached") and "no update since" not in last
    assert "detached: the kernel was restarted" in "".join(doc.text)
    assert "12.5% (host 3.0%)" in "".join(doc.text)  # the last figures stay


def test_a_panel_keeps_its_history_and_detaches_with_its_last_figures() -> None:
    pytest.importorskip("ipywidgets")
    samples = iter([metrics(cpu=10.0), metrics(cpu=20.0), metrics(cpu=30.0)])
    clock = iter([100.0, 101.0, 102.0, 103.0])

    async def sample() -> tuple[str, str, str | None, BoxMetrics | None]:
        return "b", "running", "qemu", next(samples)

    async def scenario() -> MetricsPanel:
        panel = MetricsPanel(sample, clock=lambda: next(clock))
        for _ in range(3):
            await panel.refresh()
        assert len(panel.history) == 3 and panel.updates == 3
        assert len(polyline(panel.widget.value, "bl-guest")) == 3
        assert "30.0% (host 3.0%)" in panel.widget.value
        await panel.detach("the kernel was shut down")
        return panel

    panel = asyncio.run(scenario())
    assert "bl-is-detached" in panel.widget.value and "the kernel was shut down" in panel.widget.value
    assert "30.0% (host 3.0%)" in panel.widget.value


def test_a_failed_sample_is_said_in_the_panel() -> None:
    pytest.importorskip("ipywidgets")

    async def sample() -> tuple[str, str, str | None, BoxMetrics | None]:
        raise BoxliteError("the box is gone", fix="restart it")

    async def scenario() -> str:
        panel = MetricsPanel(sample)
        await panel.refresh()
        return str(panel.widget.value)

    value = asyncio.run(scenario())
    assert "unavailable" in value and "the box is gone" in value


# -- the comm lookup ---------------------------------------------------------------------------------------------
def test_looking_up_a_comm_the_host_does_not_own_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert host_comm("0123456789abcdef-not-a-host-comm") is None
    assert not [r for r in caplog.records if "No such comm" in r.getMessage()]


# -- readable figures --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("nbytes", "text"), [(17, "17 B"), (4096, "4.0 KiB"), (512 * MIB, "512 MiB"),
                                              (1536 * MIB, "1.5 GiB"), (None, "-")])
def test_sizes(nbytes: int | None, text: str) -> None:
    assert readable.size(nbytes) == text


@pytest.mark.parametrize(("seconds", "text"), [(0.85, "850 ms"), (3.21, "3.2 s"), (42.4, "42 s"), (180, "3 min"),
                                               (245, "4 min 05 s"), (7380, "2 h 03 min"), (None, "-")])
def test_durations(seconds: float | None, text: str) -> None:
    assert readable.duration(seconds) == text


def test_moments_boot_and_memory() -> None:
    now = datetime(2026, 12, 7, 13, 9, 24, 500000, tzinfo=UTC)
    text = readable.moment(now - timedelta(seconds=245), now)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:19( \S+)? \(4 min 05 s ago\)", text), text  # local time
    assert readable.boot("restored", 1234.5) == "restored, guest ready in 1.2 s"
    assert readable.boot("cold", None) == "cold boot, guest ready time not measured"
    assert readable.mib(512) == "512 MiB" and readable.mib(2048) == "2.0 GiB"
