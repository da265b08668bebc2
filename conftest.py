"""Repository-wide pytest hooks: the notebooks in notebooks/ (run by nbval on the BoxLite Python kernel) boot
real boxes, so they carry the `vm` and `slow` markers like the VM tests (`-m "not vm"` leaves them out)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::", 1)[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.vm)
            item.add_marker(pytest.mark.slow)
