"""Command-line flags for what a box reaches and how you talk to it, in Docker's spelling.

    -p, --publish [IP:]HOST:GUEST[/tcp]   publish a guest port (host port 0 or "GUEST" alone: a free one)
    -v, --volume HOST:GUEST[:ro|rw]       share a host directory
    --network enabled|disabled|none       the box's network (default enabled: NAT, never the host's loopback)
    --allow-net HOST:PORT                 only these destinations (repeatable); host.boxlite.internal is the host
    -i, --interactive / -t, --tty         forward stdin / run on a terminal (raw mode, resized with yours)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from boxlite._execution import Execution
from boxlite._netopts import parse_allow_rule, parse_network, parse_port, parse_volume


def _arg_type(parse: Any) -> Any:
    def check(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    check.__name__ = parse.__name__.removeprefix("parse_")
    return check


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--publish", action="append", type=_arg_type(parse_port), metavar="[IP:]HOST:GUEST",
                   help="publish a guest TCP port on the host (127.0.0.1 unless an IP is given; host port 0: a "
                        "free one, shown by `boxlite info`) (repeatable)")
    p.add_argument("-v", "--volume", action="append", type=_arg_type(parse_volume), metavar="HOST:GUEST[:ro]",
                   help="share a host directory (absolute path) into the box, read-write or :ro (repeatable)")
    p.add_argument("--network", type=_arg_type(parse_network), metavar="MODE",
                   help="enabled (default: outbound NAT, never the host's loopback), disabled/none (no device)")
    p.add_argument("--allow-net", action="append", type=_arg_type(parse_allow_rule), metavar="HOST:PORT",
                   help="let only these destinations out (repeatable); host.boxlite.internal:PORT is the host's "
                        "loopback")
    add_terminal_options(p)


def add_terminal_options(p: argparse.ArgumentParser, interactive: bool = True) -> None:
    if interactive:
        p.add_argument("-i", "--interactive", action="store_true", help="forward stdin to the command")
    p.add_argument("-t", "--tty", action="store_true", help="run the command on a terminal")


def box_options(args: argparse.Namespace) -> dict[str, Any]:
    """The BoxOptions fields these flags set."""
    fields: dict[str, Any] = {"ports": args.publish or [], "volumes": args.volume or []}
    network = args.network
    if args.allow_net:
        if network is not None and network.mode == "disabled":
            raise ValueError("--allow-net needs a network: drop --network disabled")
        network = {"mode": "enabled", "allow_net": list(args.allow_net)}
    if network is not None:
        fields["network"] = network
    return fields


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


@contextlib.asynccontextmanager
async def terminal(execution: Execution | None, fd: int = 0) -> AsyncIterator[None]:
    """While a tty command runs: our terminal in raw mode (keys go to the box as typed, Ctrl-C included) and
    its size followed (SIGWINCH -> resize). Does nothing when stdin is not a terminal."""
    if execution is None or not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    def on_resize() -> None:
        task = asyncio.ensure_future(execution.resize(*terminal_size()))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGWINCH, on_resize)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        loop.remove_signal_handler(signal.SIGWINCH)
        sys.stdout.flush()
