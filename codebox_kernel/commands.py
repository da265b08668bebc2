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
import asyncio
import builtins
import html
import itertools
import shlex
from typing import TYPE_CHECKING, Any

from boxlite import BoxliteError, KernelGone
from codebox_kernel import readable

if TYPE_CHECKING:
    from boxlite import KernelClient
    from codebox_kernel.kernel import BoxKernel

MAGIC = "%boxlite"
# How long a `%boxlite` cell waits for the box's interpreter to take its execution number.
COUNT_TIMEOUT_S = 10.0
# Run silently in the box's interpreter for a `%boxlite` cell (answered by the host): the cell takes the next
# execution number and its line goes into the interpreter's history (In[n], history requests), as if the box
# had run it; the interpreter's execute_reply then carries that number. A lambda, so no name is left behind.
TAKE_NUMBER = ("(lambda ip: (ip.history_manager.store_inputs(ip.execution_count, {code!r}), "
               "setattr(ip, 'execution_count', ip.execution_count + 1)))(get_ipython())")
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


async def count_cell(kernel: BoxKernel, content: dict[str, Any]) -> int:
    """The execution number of a `%boxlite` cell: the next one, as for any cell (the same one again for a
    request that asks not to store history). The box's interpreter, which numbers the box's cells, takes it
    too, so the cell after this one gets the number after it; without a box (gone, still starting) the host
    counts on its own."""
    if content.get("silent") or not content.get("store_history", True):
        return kernel.execution_count
    taken = await _take_number(kernel, str(content.get("code", "")))
    kernel.execution_count = taken if taken is not None else kernel.execution_count + 1
    return kernel.execution_count


async def _take_number(kernel: BoxKernel, code: str) -> int | None:
    """Have the box's interpreter count `code` as its next cell; the number it took, or None without one."""
    codebox = kernel.box.codebox
    client = codebox.kernel if codebox is not None else None
    if client is None or client.session is None or not client.connected:
        return None
    request = {"code": TAKE_NUMBER.format(code=code), "silent": True, "store_history": False,
               "user_expressions": {}, "allow_stdin": False, "stop_on_error": False}
    # ipykernel may abort what arrives just after a cell that failed: then ask again (codebox_kernel/aborts.py).
    epoch = kernel.stop_on_error.epoch
    for tries in itertools.count(1):
        reply = await _request(client, request)
        if reply is None or not kernel.stop_on_error.retry(epoch, reply, tries):
            break
    if reply is None or reply.get("status") != "ok" or reply.get("execution_count") is None:
        return None
    return int(reply["execution_count"])


async def _request(client: KernelClient, content: dict[str, Any]) -> dict[str, Any] | None:
    """An execute_request in the bridge's own session (the kernel does not relay what answers it, busy and
    idle, to the frontend); its reply's content, or None if none comes."""
    assert client.session is not None
    msg = client.session.msg("execute_request", content)
    waiter = client.watch(msg["header"]["msg_id"])
    try:
        await client.send_msg("shell", msg)
        async with asyncio.timeout(COUNT_TIMEOUT_S):
            while True:
                item = await waiter.queue.get()
                if isinstance(item, KernelGone):
                    return None
                if item.channel == "shell" and item.msg_type == "execute_reply":
                    return item.content
    except (BoxliteError, builtins.TimeoutError):
        return None
    finally:
        client.unwatch(msg["header"]["msg_id"], waiter)


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
            ("cpus", str(info.cpus)), ("memory", readable.mib(info.memory_mib)),
            ("boot", readable.boot(info.boot, info.guest_boot_ms)),
            ("started", readable.moment(info.started_at)), ("working dir", codebox.workdir),
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
    rows = [(e.name + ("/" if e.type == "dir" else ""),
             f"{e.type:<4} {readable.size(e.size):>9}  {oct(e.mode & 0o7777)}")
            for e in sorted(entries, key=lambda e: e.name)]
    return _table(rows or [(path, "(empty)")])
