"""The "BoxLite Python" Jupyter kernel: every cell runs in a persistent microVM.

- `python -m codebox_kernel install [--user|--sys-prefix|--prefix P]` writes the kernelspec.
- The kernel itself (`python -m codebox_kernel -f CONNECTION_FILE`) is a host process that relays every
  Jupyter message to an IPython kernel inside a box (see docs/jupyter.md).
- `%load_ext codebox_kernel` in any IPython gives the `%%boxlite` cell magic and `%boxlite` line magics.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext codebox_kernel`: register the `%%boxlite` cell magic and `%boxlite` line magics."""
    from codebox_kernel.magic import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from codebox_kernel.magic import unload_ipython_extension as unload

    unload(ipython)
