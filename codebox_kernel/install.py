"""`python -m codebox_kernel install`: write the "BoxLite Python" kernelspec, as `ipykernel install` does."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from boxlite import ConfigError

DEFAULT_NAME = "boxlite-python"
DEFAULT_DISPLAY_NAME = "BoxLite Python"


def kernel_spec(display_name: str = DEFAULT_DISPLAY_NAME, box: dict[str, Any] | None = None,
                python: str = sys.executable) -> dict[str, Any]:
    """kernel.json's content. `{resource_dir}` lets the kernel read its own metadata (the box settings)."""
    return {
        "argv": [python, "-m", "codebox_kernel", "-f", "{connection_file}", "--resource-dir", "{resource_dir}"],
        "display_name": display_name,
        "language": "python",
        # SIGINT to the host kernel interrupts the cell in the box (interrupt_request works too).
        "interrupt_mode": "signal",
        "metadata": {"boxlite": box or {}, "debugger": False},
    }


def install(name: str = DEFAULT_NAME, display_name: str = DEFAULT_DISPLAY_NAME, *, user: bool = False,
            prefix: str | None = None, box: dict[str, Any] | None = None) -> str:
    """Install the kernelspec; returns the directory it went to."""
    from jupyter_client.kernelspec import KernelSpecManager

    from codebox_kernel.settings import load_settings

    load_settings(environ={}, **(box or {}))  # refuse bad settings now, not at the first notebook
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernel.json").write_text(json.dumps(kernel_spec(display_name, box), indent=1) + "\n")
        return str(KernelSpecManager().install_kernel_spec(tmp, name, user=user, prefix=prefix))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codebox_kernel install",
                                     description="Install the BoxLite Python kernelspec: every cell runs in a microVM.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help=f"install into {sys.prefix} (venvs, conda)")
    where.add_argument("--prefix", metavar="P", help="install into P/share/jupyter/kernels")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"kernelspec name (default {DEFAULT_NAME})")
    parser.add_argument("--display-name", default=None,
                        help=f"name shown in the launcher (default {DEFAULT_DISPLAY_NAME!r})")
    parser.add_argument("--image", help="OCI image of the box (default: boxlite.CODEBOX_IMAGE)")
    parser.add_argument("--cpus", type=int, help="vCPUs of the box")
    parser.add_argument("--memory", type=int, metavar="MIB", help="memory of the box in MiB")
    parser.add_argument("--timeout", type=float, metavar="S", help="interrupt cells running longer than S s")
    parser.add_argument("--persist", action="store_true",
                        help="keep the box (stopped) at shutdown; use with --box-name to find it again")
    parser.add_argument("--box-name", help="name of the box (default: one per kernel session)")
    parser.add_argument("--metrics", action="store_true", help="show the live metrics panel in the first cell")
    args = parser.parse_args(argv)
    box = {k: v for k, v in {"image": args.image, "cpus": args.cpus, "memory_mib": args.memory,
                             "timeout": args.timeout, "box_name": args.box_name,
                             "persist": args.persist or None, "metrics": args.metrics or None}.items()
           if v is not None}
    display_name = args.display_name or DEFAULT_DISPLAY_NAME
    prefix = sys.prefix if args.sys_prefix else args.prefix
    try:
        path = install(args.name, display_name, user=args.user, prefix=prefix, box=box)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the kernelspec: {exc} (fix: use --user, or --prefix with a writable "
              "directory)", file=sys.stderr)
        return 1
    print(f"Installed kernelspec {args.name} ({display_name!r}) in {path}")
    return 0
