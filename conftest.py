"""Repository-wide pytest hooks for the notebooks in notebooks/ (run by nbval on the BoxLite Python kernel).

They boot real boxes, so they carry the `vm` and `slow` markers like the VM tests (`-m "not vm"` leaves them
out). A cell tagged `raises-exception` (or marked `# NBVAL_RAISES_EXCEPTION`) must raise: nbval only lets such
a cell fail, so without this check a cell that stopped raising would pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::", 1)[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.vm)
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    yield  # the cell ran without a failure nbval reports (a skipped or failed cell never gets here)
    options: dict[str, Any] = getattr(item, "options", None) or {}
    if _is_notebook_cell(item) and options.get("check_exception"):
        outputs = getattr(item, "test_outputs", None) or []
        if not any(out.get("output_type") == "error" for out in outputs):
            source = str(getattr(getattr(item, "cell", None), "source", ""))
            pytest.fail(f"{item.name} is tagged raises-exception but raised no exception; its code:\n{source}\n"
                        "Fix the cell so it fails as the notebook says, or remove the tag if it should succeed.",
                        pytrace=False)


def _is_notebook_cell(item: pytest.Item) -> bool:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # without nbval no notebook is collected
        return False
    return isinstance(item, IPyNbCell)
