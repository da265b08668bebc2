"""Repository-wide pytest hooks.

- The notebooks in notebooks/ (run by nbval on the BoxLite Python kernel) boot real boxes, so they carry the `vm`
  and `slow` markers like the VM tests (`-m "not vm"` leaves them out).
- On CI (CI=true) nothing may skip: a skip there means CI did not provision what the test needs (QEMU, the
  assets, chromium, a registry, a tool), and a suite that quietly skips cannot fail. Each skipped test (or
  module) is reported as a failure with the reason it gave. Only a test marked `ci_may_skip` keeps its skip: one
  that runs on one kind of host only (root or not, PVM or not) and has a twin covering the other kind.
- A notebook cell tagged `raises-exception` (or marked `# NBVAL_RAISES_EXCEPTION`) must raise: nbval only lets
  such a cell fail, so without this check a cell that stopped raising would pass unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

CI_MAY_SKIP = "ci_may_skip"


def on_ci() -> bool:
    """CI=true (or 1/yes), as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{CI_MAY_SKIP}(reason): this test may skip on CI too (it is about one "
                                       "kind of host only); every other skip fails under CI=true")


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


def _fail_the_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skipped report into a failure that still says why it skipped."""
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"CI=true, and this test skipped: {reason}\n"
                       "On CI every test must run: provision what it needs (scripts/setup.sh, scripts/registry.sh), "
                       "or mark it ci_may_skip if it is about one kind of host only.")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    if (report.skipped and on_ci() and not hasattr(report, "wasxfail")
            and item.get_closest_marker(CI_MAY_SKIP) is None):
        _fail_the_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    # A module skipped as a whole (pytest.importorskip or pytest.skip(allow_module_level=True) at import).
    report: pytest.CollectReport = yield
    if report.skipped and on_ci():
        _fail_the_skip(report)
    return report
