#!/usr/bin/env python3
"""Write the example notebooks in notebooks/ (BoxLite Python kernel, no stored outputs) with nbformat.

    python3 scripts/make_notebooks.py      # rewrites notebooks/*.ipynb from the cells below

Cells whose output varies from run to run carry the nbval tag `nbval-ignore-output`, and cells that fail on
purpose `raises-exception`, so `pytest --nbval-lax notebooks/` can run them all on the boxlite-python kernel.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parent.parent / "notebooks"
KERNELSPEC = {"name": "boxlite-python", "display_name": "BoxLite Python", "language": "python"}
LANGUAGE_INFO = {"name": "python", "codemirror_mode": {"name": "ipython", "version": 3},
                 "file_extension": ".py", "mimetype": "text/x-python", "pygments_lexer": "ipython3"}
IGNORE = ["nbval-ignore-output"]
RAISES = ["raises-exception"]


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(source: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = new_code_cell(source.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):  # stable ids: regenerating leaves unchanged notebooks unchanged
        cell.id = f"cell-{i:02d}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    return nb


QUICKSTART = notebook([
    md("""
# BoxLite Python: quickstart

Every cell of this notebook runs in a **microVM**: a real Linux kernel booted from an OCI image
(`boxlite/codebox:3.11-bookworm`), not a process on your machine. The first cell waits for the box to boot;
after that, cells run as fast as in any Python kernel.
"""),
    md("Where are we? Inside the box, with its own kernel and its own Debian:"),
    code("""
import platform

print(platform.uname())
""", IGNORE),
    code("""
with open("/etc/os-release") as f:
    print(next(line for line in f if line.startswith("PRETTY_NAME")).strip())
"""),
    md("State lives in the box's interpreter, so it carries over from cell to cell:"),
    code("counter = 1"),
    code("""
counter += 2
print(f"counter is {counter}")
"""),
    md("The box has numpy, pandas and matplotlib; figures come back as images:"),
    code("""
import matplotlib.pyplot as plt
import numpy as np

x = np.linspace(0, 2 * np.pi, 200)
fig, ax = plt.subplots(figsize=(6, 2.5))
ax.plot(x, np.sin(x), label="sin(x)")
ax.plot(x, np.cos(x), label="cos(x)")
ax.set_title("Drawn inside the box")
ax.legend(loc="upper right")
plt.show()
""", IGNORE),
    code("""
import pandas as pd

df = pd.DataFrame({"x": x[::40].round(2), "sin(x)": np.sin(x[::40]).round(3), "cos(x)": np.cos(x[::40]).round(3)})
df
"""),
    md("""
`%boxlite` lines are answered by the host, not the box: they work even while a cell is running.
`%boxlite info` tells what the box is, and `%boxlite metrics` shows a live panel (CPU, memory, boot time)
that refreshes every second.
"""),
    code("%boxlite info", IGNORE),
    code("%boxlite metrics", IGNORE),
    md("`%boxlite help` lists the other commands (`files`, `restart`, `stop`)."),
])

RICH_OUTPUTS = notebook([
    md("""
# Rich outputs from a box

Whatever IPython can display inside the box shows up here as it would with a local kernel: figures, tables,
HTML, Markdown, SVG, LaTeX.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np

rng = np.random.default_rng(7)
fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
left.hist(rng.normal(size=2000), bins=40, color="tab:blue")
left.set_title("normal samples")
t = np.linspace(0, 10, 400)
right.plot(t, np.exp(-t / 4) * np.sin(2 * t), color="tab:orange")
right.set_title("damped sine")
fig.tight_layout()
plt.show()
""", IGNORE),
    code("""
import pandas as pd

sales = pd.DataFrame({
    "region": ["north", "south", "east", "west"],
    "units": [120, 95, 143, 80],
    "price": [2.5, 3.0, 2.25, 4.0],
})
sales["revenue"] = sales["units"] * sales["price"]
sales
"""),
    code("sales.describe().round(2)"),
    code("""
from IPython.display import HTML, SVG, Latex, Markdown, display

display(HTML("<b>HTML</b> rendered by the front end, <span style='color:teal'>styled</span>."))
display(Markdown("**Markdown** with a list:\\n\\n- one\\n- two"))
display(Latex(r"$e^{i\\pi} + 1 = 0$"))
"""),
    code("""
SVG(
    '<svg xmlns="http://www.w3.org/2000/svg" width="160" height="60">'
    '<rect x="5" y="5" width="150" height="50" rx="10" fill="#3b82f6"/>'
    '<text x="80" y="37" font-size="18" text-anchor="middle" fill="white">SVG</text>'
    '</svg>'
)
"""),
    code("""
import json

print(json.dumps({"box": "yes", "outputs": ["text", "image/png", "text/html", "image/svg+xml"]}, indent=2))
"""),
])

WIDGETS = notebook([
    md("""
# Widgets made inside the box

ipywidgets live in the box's interpreter; their comm messages go through the BoxLite kernel to this page, and
the page's changes come back to the box. The built-in CodeBox image has ipywidgets; in an image of your own,
`%pip install ipywidgets` first.
"""),
    code("""
import ipywidgets

print("ipywidgets", ipywidgets.__version__)
""", IGNORE),
    md("A slider whose changes a callback in the box observes:"),
    code("""
import ipywidgets as widgets
from IPython.display import display

slider = widgets.IntSlider(value=3, min=0, max=10, description="n")
squared = widgets.Output()


def on_change(change):
    with squared:
        squared.clear_output()
        print(f"n = {change['new']}, n squared = {change['new'] ** 2}")


slider.observe(on_change, names="value")
display(slider, squared)
"""),
    md("Setting the value from code moves the slider on the page and runs the callback:"),
    code("""
slider.value = 7
print(slider.value)
"""),
    md("`interact` builds the controls from a function's arguments:"),
    code("""
from ipywidgets import interact


@interact(times=(1, 5), word="box")
def repeat(times=2, word="box"):
    print(" ".join([word] * times))
"""),
])

METRICS = notebook([
    md("""
# The box, seen from the host

`%boxlite` lines are answered by the BoxLite kernel on the host, so they work while the box is busy.
"""),
    code("%boxlite metrics", IGNORE),
    md("Some work in the box; watch the panel's cpu figure while it runs:"),
    code("""
import time

start = time.perf_counter()
total = sum(i * i for i in range(3_000_000))
print(f"sum of squares: {total}")
""", IGNORE),
    code("%boxlite info", IGNORE),
    md("Files in the box: the kernel's working directory, then another directory:"),
    code("""
with open("hello.txt", "w") as f:
    f.write("written inside the box\\n")
"""),
    code("%boxlite files", IGNORE),
    code("%boxlite files /etc/apt", IGNORE),
    code("%boxlite help", IGNORE),
])

ERRORS = notebook([
    md("""
# Errors

A failing cell shows its traceback as with any Python kernel, and the box's interpreter carries on.
(Cells that fail on purpose carry the `raises-exception` tag.)
"""),
    code("""
def ratio(a, b):
    return a / b


ratio(1, 0)
""", RAISES),
    code("""
print("still running, ratio(6, 3) =", ratio(6, 3))
"""),
    md("A `%boxlite` line that fails comes back as an error too, named by its BoxLite error class:"),
    code("%boxlite files /no/such/directory", RAISES),
    code("%boxlite frobnicate", RAISES),
    code("""
print("the kernel is still here")
"""),
])

NOTEBOOKS = {
    "quickstart.ipynb": QUICKSTART,
    "rich_outputs.ipynb": RICH_OUTPUTS,
    "widgets.ipynb": WIDGETS,
    "metrics.ipynb": METRICS,
    "errors.ipynb": ERRORS,
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, nb in NOTEBOOKS.items():
        nbformat.validate(nb)
        nbformat.write(nb, OUT / name)
        print(f"wrote {OUT / name} ({len(nb.cells)} cells)")


if __name__ == "__main__":
    main()
