"""The repository's conftest.py makes nbval fail a notebook cell tagged `raises-exception` that raises nothing
(nbval alone only lets such a cell fail). Checked by running pytest with that conftest on a small notebook,
on the host's own Python kernel: the hook is the same whichever kernel runs the cells."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]


def _cell(source: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    return cell


def test_a_cell_tagged_raises_exception_must_raise(tmp_path: Path) -> None:
    nb = new_notebook(cells=[
        _cell("1 / 0", ["raises-exception"]),                       # raises: passes
        _cell("print('fine')", ["raises-exception"]),               # stopped raising: fails
        _cell("# NBVAL_RAISES_EXCEPTION\nvalue = 2"),               # the comment form, no exception: fails
        _cell("print('untagged')"),                                 # an ordinary cell: passes
        _cell("raise KeyError('x')", ["raises-exception", "nbval-ignore-output"]),  # raises: passes
    ])
    nbformat.write(nb, tmp_path / "tagged.ipynb")
    (tmp_path / "conftest.py").write_text((ROOT / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-kernel-name", "python3", "tagged.ipynb"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    outcomes = {m[2]: m[1] for m in re.finditer(r"^(PASSED|FAILED) tagged\.ipynb::(Cell \d+)", proc.stdout, re.M)}
    assert outcomes == {"Cell 0": "PASSED", "Cell 1": "FAILED", "Cell 2": "FAILED", "Cell 3": "PASSED",
                        "Cell 4": "PASSED"}, proc.stdout + proc.stderr
    assert "tagged raises-exception but raised no exception" in proc.stdout
    assert proc.returncode == 1
