"""A real JupyterLab in headless Chromium runs a whole notebook, as a person would: open it, wait for the kernel,
Run > Run All Cells, wait for every cell, then check what the page rendered (printed text, an <img>, a live
widget) and that no cell raised, and keep a screenshot in test-artifacts/.

The harness is parametric on the kernel: the ordinary `python3` kernel runs a small notebook written here
(it proves the harness and the widget front end without a VM); `boxlite-python` runs notebooks/quickstart.ipynb
in a microVM.
"""

from __future__ import annotations

import base64
import os
import signal
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BOXLITE_TEST_ARTIFACTS") or REPO / "test-artifacts")

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@dataclass(frozen=True)
class Case:
    kernel: str
    display_name: str
    texts: tuple[str, ...]  # each must appear in the rendered outputs
    widget: str  # CSS selector (under an output) of what the widget front end renders
    widget_texts: tuple[str, ...]  # each must appear in the rendered widget
    min_images: int  # <img> outputs (matplotlib or other PNGs)
    tables: int  # rendered pandas DataFrames
    run_timeout: float  # seconds for Run All (a BoxLite kernel boots a VM first)


def _png(width: int = 160, height: int = 48) -> bytes:
    """A small gradient PNG, made without matplotlib (which the host does not need)."""
    def row(y: int) -> bytes:
        return b"\0" + bytes(c for x in range(width) for c in (x * 255 // width, y * 255 // height, 160))

    rows = b"".join(row(y) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def harness_notebook(path: Path) -> Path:
    """A notebook for the plain python3 kernel with the same kinds of output the quickstart has."""
    png = base64.b64encode(_png()).decode()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Harness check\nThe browser test's own notebook, for the python3 kernel."),
        nbformat.v4.new_code_cell('import platform\nprint("hello from", platform.python_implementation())'),
        nbformat.v4.new_code_cell("counter = 41"),
        nbformat.v4.new_code_cell('counter += 1\nprint(f"counter is {counter}")'),
        nbformat.v4.new_code_cell("import base64\nfrom IPython.display import Image\n"
                                  f'Image(data=base64.b64decode("{png}"), format="png")'),
        nbformat.v4.new_code_cell("import ipywidgets as w\n"
                                  'w.HTML(value="<b>cpu</b> 1.5 % &middot; guest_boot_ms 0 (a stand-in widget)")'),
    ]
    nbformat.write(nb, path)
    return path


CASES = {
    "python3": Case(kernel="python3", display_name="Python 3 (ipykernel)",
                    texts=("hello from CPython", "counter is 42"),
                    widget=".jupyter-widgets", widget_texts=("cpu", "guest_boot_ms"),
                    min_images=1, tables=0, run_timeout=60),
    # notebooks/quickstart.ipynb; the widget is the kernel's live metrics panel (`%boxlite metrics`), whose
    # figures are filled in from Box.metrics() (cpu, guest_boot_ms...) once the box answers.
    "boxlite-python": Case(kernel="boxlite-python", display_name="BoxLite Python",
                           texts=("Debian GNU/Linux 12 (bookworm)", "counter is 3", "guest_boot_ms"),
                           widget=".jupyter-widgets .boxlite-metrics .boxlite-metric-guest_boot_ms",
                           widget_texts=("cpu", "guest_boot_ms", "mem"),
                           min_images=1, tables=1, run_timeout=300),
}


@pytest.mark.parametrize("kernel", [
    "python3",
    pytest.param("boxlite-python", marks=pytest.mark.vm),
])
def test_run_all_cells(kernel: str, jupyterlab: Any, lab_page: Any, tmp_path: Path, request: pytest.FixtureRequest,
                       record_property: Any) -> None:
    case = CASES[kernel]
    if kernel == "boxlite-python":
        request.getfixturevalue("provisioned_home")  # boots a box: the VM assets, or a skip that says why
        notebook = REPO / "notebooks" / "quickstart.ipynb"
    else:
        notebook = harness_notebook(tmp_path / "harness.ipynb")

    server = jupyterlab(kernel=kernel, notebooks=[notebook])
    record_property("jupyterlab_start_s", round(server.startup_seconds, 2))

    page = lab_page
    shot = ARTIFACTS / f"jupyterlab-{notebook.stem}-{kernel}.png"
    widgets = page.page.locator(f".jp-NotebookPanel:visible .jp-OutputArea-output {case.widget}")
    t0 = t_ready = t_done = time.monotonic()
    try:
        page.open_notebook(server, notebook.name, timeout=60)
        page.wait_kernel_name(case.display_name, timeout=60)
        page.wait_kernel_idle(timeout=case.run_timeout)
        t_ready = time.monotonic()
        assert not any(p.strip("[]: ").isdigit() for p in page.cell_prompts()), "the notebook was run already"
        page.run_all()
        page.wait_all_cells_done(timeout=case.run_timeout)
        t_done = time.monotonic()
        # A widget view that the widget manager rendered (not the text/plain fallback a front end without
        # the widget's model shows); the metrics panel gets its figures a moment after it is shown.
        widgets.first.wait_for(timeout=30_000)
    finally:  # a screenshot of whatever the page shows, failed or not
        page.screenshot(shot)
        record_property("screenshot", str(shot))
        record_property("kernel_ready_s", round(t_ready - t0, 2))
        record_property("run_all_s", round(t_done - t_ready, 2))
        print(f"\nJupyterLab started in {server.startup_seconds:.1f} s; kernel {kernel} ready in "
              f"{t_ready - t0:.1f} s; Run All took {t_done - t_ready:.1f} s; screenshot: {shot}")

    assert page.error_outputs() == []
    text = page.outputs_text()
    for wanted in case.texts:
        assert wanted in text, f"{wanted!r} not rendered; outputs:\n{text[:3000]}"
    images = page.page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output img")
    assert images.count() >= case.min_images
    for i in range(images.count()):  # decoded and laid out, not a broken image
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    tables = page.page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output table.dataframe")
    assert tables.count() >= case.tables
    widget_text = "\n".join(widgets.evaluate_all("els => els.map(e => e.closest('.jp-OutputArea-output').innerText)"))
    for wanted in case.widget_texts:
        assert wanted in widget_text, f"{wanted!r} not in the rendered widget: {widget_text[:2000]}"


@pytest.mark.vm
def test_widgets_made_in_the_box_render_and_respond(jupyterlab: Any, lab_page: Any, provisioned_home: Path,
                                                    record_property: Any) -> None:
    """notebooks/widgets.ipynb on the BoxLite kernel: the slider made in the box renders on the page, a value set
    in the box moves it and runs the box's callback, and a key pressed on the page's slider reaches the box."""
    notebook = REPO / "notebooks" / "widgets.ipynb"
    server = jupyterlab(kernel="boxlite-python", notebooks=[notebook])
    page = lab_page
    shot = ARTIFACTS / "jupyterlab-widgets-boxlite-python.png"
    outputs = ".jp-NotebookPanel:visible .jp-OutputArea-output"
    try:
        page.open_notebook(server, notebook.name, timeout=60)
        page.wait_kernel_name("BoxLite Python", timeout=60)
        page.wait_kernel_idle(timeout=CASES["boxlite-python"].run_timeout)
        page.run_all()
        page.wait_all_cells_done(timeout=CASES["boxlite-python"].run_timeout)
        slider = page.page.locator(f"{outputs} .widget-slider").first
        slider.wait_for(timeout=30_000)
        # Box -> page: `slider.value = 7` in the box moved the slider and ran the observer, whose print went
        # to an Output widget (itself a comm from the box).
        readout = slider.locator(".widget-readout")
        page.page.wait_for_function("el => el.innerText.trim() === '7'", arg=readout.element_handle(),
                                    timeout=30_000)
        page.page.locator(outputs, has_text="n = 7, n squared = 49").first.wait_for(timeout=30_000)
        # Page -> box: a key on the slider's handle changes the value in the box, whose callback answers.
        slider.locator(".noUi-handle").first.focus()
        page.page.keyboard.press("ArrowRight")
        page.page.locator(outputs, has_text="n = 8, n squared = 64").first.wait_for(timeout=30_000)
        assert page.page.locator(f"{outputs} .widget-interact").count() >= 1  # interact() built its controls
    finally:
        page.screenshot(shot)
        record_property("screenshot", str(shot))
    assert page.error_outputs() == []


def panel_notebook(path: Path) -> Path:
    """The metrics panel, then a cell that keeps the box's cpu busy for a moment (something to chart)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "boxlite-python", "display_name": "BoxLite Python", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("%boxlite metrics"),
        nbformat.v4.new_code_cell("total = sum(i * i for i in range(300_000))\nprint('busy done', total > 0)"),
    ]
    nbformat.write(nb, path)
    return path


# The lines each metric value of the panel is laid out on (distinct tops of its text's line boxes).
VALUE_LINES = """panel => [...panel.querySelectorAll('[class^="boxlite-metric-"]')].map(el => {
    const range = document.createRange();
    range.selectNodeContents(el);
    const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
    return [el.className, tops.size, el.innerText];
})"""
CELL_ROWS = """panel => new Set([...panel.querySelectorAll('.bl-cell')]
    .map(c => Math.round(c.getBoundingClientRect().top))).size"""


def _kernel_pids(server: Any) -> list[int]:
    """The BoxLite kernel processes this server started (`python -m codebox_kernel -f ...`): their environment
    has the server's marker (see conftest.py)."""
    marker = f"BOXLITE_TEST_LAB={server.marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"codebox_kernel" in argv and b"-f" in argv:
            pids.append(int(entry.name))
    return pids


@pytest.mark.vm
def test_metrics_panel_charts_stays_on_one_line_and_says_detached_after_restart(
        jupyterlab: Any, lab_page: Any, tmp_path: Path, real_home: Path, record_property: Any) -> None:
    """The panel in JupyterLab: cpu and memory charts fill in, every value keeps to one line (the cells wrap
    between each other at a narrow width), it fades and says since when while its kernel does not answer, and
    after Kernel > Restart it says "detached" instead of "running". No "No such comm" in the server's log."""
    if not (real_home / "assets").is_dir():
        pytest.skip(f"VM assets are not provisioned under {real_home} (run `boxlite setup`)")
    notebook = panel_notebook(tmp_path / "panel.ipynb")
    server = jupyterlab(kernel="boxlite-python", notebooks=[notebook])
    page = lab_page
    outputs = ".jp-NotebookPanel:visible .jp-OutputArea-output"
    panel = page.page.locator(f"{outputs} .boxlite-metrics").first
    state = panel.locator(".boxlite-metric-state")
    shots = {name: ARTIFACTS / f"jupyterlab-metrics-panel-{name}.png" for name in ("live", "narrow", "detached")}
    try:
        page.open_notebook(server, notebook.name, timeout=60)
        page.wait_kernel_name("BoxLite Python", timeout=60)
        page.wait_kernel_idle(timeout=CASES["boxlite-python"].run_timeout)
        page.run_all()
        page.wait_all_cells_done(timeout=CASES["boxlite-python"].run_timeout)
        # Charts: a guest cpu line from several samples (the panel redraws once a second).
        page.page.wait_for_function(
            """() => [...document.querySelectorAll('.boxlite-metrics .boxlite-metric-cpu ~ svg polyline.bl-guest')]
                .some(l => l.points.numberOfItems >= 5)""", timeout=60_000)
        assert panel.locator("svg").count() == 2
        assert panel.locator(".boxlite-metric-mem ~ svg polyline.bl-guest").count() == 1
        assert state.inner_text().strip() == "running"
        page.screenshot(shots["live"])
        for width in (1280, 700):
            page.page.set_viewport_size({"width": width, "height": 900})  # reading the layout lays it out anew
            lines = panel.evaluate(VALUE_LINES)
            assert len(lines) == 8 and all(n == 1 for _, n, _ in lines), (width, lines)
            if width == 700:
                assert panel.evaluate(CELL_ROWS) > 1  # wrapped between cells
                page.screenshot(shots["narrow"])
        page.page.set_viewport_size({"width": 1280, "height": 900})

        # A kernel that stops answering: after STALE_S without a redraw the panel says since when.
        stale = panel.locator(".bl-stale")
        (pid,) = _kernel_pids(server)
        os.kill(pid, signal.SIGSTOP)
        try:
            page.page.wait_for_function("el => getComputedStyle(el).opacity === '1'", arg=stale.element_handle(),
                                        timeout=60_000)
            assert "no update since" in stale.inner_text()
        finally:
            os.kill(pid, signal.SIGCONT)
        page.page.wait_for_function(  # redrawn: the note is hidden again
            """() => { const s = document.querySelector('.boxlite-metrics .bl-stale');
                       return s && getComputedStyle(s).opacity === '0'; }""", timeout=60_000)

        # Kernel > Restart: the old panel's kernel is gone; the panel says so.
        page.restart_kernel()
        page.page.wait_for_function("el => el.innerText.trim() === 'detached'", arg=state.element_handle(),
                                    timeout=60_000)
        assert "detached: " in panel.inner_text()
        page.wait_kernel_idle(timeout=CASES["boxlite-python"].run_timeout)
        assert state.inner_text().strip() == "detached"  # and still so with the new kernel up
    finally:
        page.screenshot(shots["detached"])
        for name, shot in shots.items():
            record_property(f"screenshot_{name}", str(shot))
    assert page.error_outputs() == []
    log = server.log.read_text(errors="replace")
    assert "No such comm" not in log, log[-3000:]


def test_panel_html_says_detached_when_jupyterlab_restarts_the_kernel(jupyterlab: Any, lab_page: Any,
                                                                      tmp_path: Path) -> None:
    """The panel's detached state is CSS keyed on the mark JupyterLab's widget manager puts on the views of a
    restarting kernel's widgets; this checks that mark and that CSS with the panel's own HTML in an HTML widget
    of the plain python3 kernel (no VM): "running" before the restart, "detached" after it."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "import ipywidgets\nfrom boxlite import BoxMetrics\nfrom codebox_kernel.metrics import History, render\n"
        "m = BoxMetrics(guest_cpu_percent=12.5, cpu_percent=3.0, guest_memory_used_bytes=100 << 20,\n"
        "               guest_memory_total_bytes=512 << 20, memory_bytes=180 << 20)\n"
        "h = History()\nh.add(0.0, m)\nh.add(1.0, m)\n"
        "ipywidgets.HTML(render('b', 'running', 'qemu', m, note='updated', history=h, now=1.0))")]
    path = tmp_path / "panel-html.ipynb"
    nbformat.write(nb, path)
    server = jupyterlab(kernel="python3", notebooks=[path])
    page = lab_page
    state = page.page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output .boxlite-metric-state").first
    page.open_notebook(server, path.name, timeout=60)
    page.wait_kernel_name("Python 3 (ipykernel)", timeout=60)
    page.wait_kernel_idle(timeout=60)
    page.run_all()
    page.wait_all_cells_done(timeout=60)
    state.wait_for(timeout=30_000)
    assert state.inner_text().strip() == "running"
    page.restart_kernel()
    page.page.wait_for_function("el => el.innerText.trim() === 'detached'", arg=state.element_handle(),
                                timeout=30_000)
    page.wait_kernel_idle(timeout=60)
    assert state.inner_text().strip() == "detached"
    assert page.page.locator(".jupyter-widgets-disconnected .boxlite-metrics").count() == 1
