"""`%boxlite ...` lines in the BoxLite Python kernel: about the box itself, so the host answers them (they work
while the box is busy or gone).

    %boxlite metrics            the live metrics panel (cpu, mem, guest_boot_ms, commands, errors)
    %boxlite info               the box: id, state, image, engine, resources, boot
    %boxlite files [PATH]       what is in a directory of the box (default: the kernel's working directory)
    %boxlite restart [--box]    a fresh interpreter in the same box (--box: a new box); also after the box died
    %boxlite stop               stop and remove the box; the next cell starts a new one
    %boxlite help               this text
"""

from __future__ import annotations

import argparse
import html
import shlex
from typing import TYPE_CHECKING, Any

from boxlite import BoxliteError

if TYPE_CHECKING:
    from codebox_kernel.kernel import BoxKernel

MAGIC = "%boxlite"
HELP = __doc__.split("\n\n", 1)[1].rstrip() + "\n" if __doc__ else ""


class UsageError(Exception):
    """A `%boxlite` line the kernel does not understand."""


def parse(code: str) -> list[list[str]] | None:
    """The argument lists of a cell made only of `%boxlite` lines (blank lines and comments allowed), or None
    for any other cell (which goes to the box)."""
    argvs: list[list[str]] = []
    for raw in code.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word != MAGIC:
            return None
        try:
            argvs.append(shlex.split(rest))
        except ValueError as exc:
            argvs.append(["--bad-quoting", str(exc)])
    return argvs or None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n{HELP}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=MAGIC, add_help=False)
    sub = parser.add_subparsers(dest="command")
    for name in ("metrics", "info", "stop", "help"):
        sub.add_parser(name, add_help=False)
    files = sub.add_parser("files", add_help=False)
    files.add_argument("path", nargs="?", default=".")
    restart = sub.add_parser("restart", add_help=False)
    restart.add_argument("--box", action="store_true", help="a new box, not only a new interpreter")
    return parser


async def run(kernel: BoxKernel, argv: list[str], parent: dict[str, Any]) -> None:
    """Carry out one `%boxlite` line; output goes to the cell whose request is `parent`."""
    if argv[:1] == ["--bad-quoting"]:
        raise UsageError(f"cannot split the line: {argv[1]}")
    args = _parser().parse_args(argv)
    command = args.command or "help"
    if command == "help":
        kernel.print(parent, HELP)
    elif command == "metrics":
        kernel.show_metrics(parent)
    elif command == "restart":
        kernel.print(parent, await kernel.restart(new_box=args.box) + "\n")
    elif command == "stop":
        kernel.print(parent, await kernel.stop_box() + "\n")
    elif command == "info":
        await kernel.wait_ready()
        kernel.display(parent, _info(kernel))
    elif command == "files":
        await kernel.wait_ready()
        kernel.display(parent, await _files(kernel, args.path))


def _table(rows: list[tuple[str, str]]) -> dict[str, str]:
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                   f"{html.escape(v)}</td></tr>" for k, v in rows)
    return {"text/plain": text, "text/html": f"<table>{body}</table>"}


def _info(kernel: BoxKernel) -> dict[str, str]:
    codebox = kernel.box.require()
    info = codebox.box.info()
    rows = [("box", f"{info.name} ({info.id})"), ("state", info.status), ("image", info.image),
            ("engine", f"{info.engine or '-'}" + (f" ({info.engine_reason})" if info.engine_reason else "")),
            ("cpus", str(info.cpus)), ("memory", f"{info.memory_mib} MiB"),
            ("boot", f"{info.boot or '-'}, guest_boot_ms {info.guest_boot_ms or '-'}"),
            ("started", str(info.started_at or "-")), ("working dir", codebox.workdir),
            ("kernel restarts", str(codebox.kernel_restarts))]
    if info.error:
        rows.append(("error", info.error))
    return _table(rows)


async def _files(kernel: BoxKernel, path: str) -> dict[str, str]:
    codebox = kernel.box.require()
    try:
        entries = await codebox.files.list(path)
    except BoxliteError:
        raise
    rows = [(e.name + ("/" if e.type == "dir" else ""), f"{e.type:<4} {e.size:>10}  {oct(e.mode & 0o7777)}")
            for e in sorted(entries, key=lambda e: e.name)]
    return _table(rows or [(path, "(empty)")])
