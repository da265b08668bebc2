"""The arguments of Box.exec, checked on the host before anything is sent to the box.

Everything that reaches the agent must survive protobuf (UTF-8 strings: a lone surrogate cannot be encoded, an
int is not a string) and the guest's execve (no NUL bytes, no '=' in an environment variable's name). A bad
argument is an ExecutionError here, naming the argument, instead of a TypeError from protobuf, a failed RPC, or
a command silently run with something else (a string as `args` would otherwise become one argument per
character).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from boxlite._errors import ExecutionError

# Far beyond any real command's limit, and small enough for every clock and poll() on both sides.
MAX_TIMEOUT_S = 10 * 365 * 24 * 3600.0


@dataclass(frozen=True)
class ExecArgs:
    argv: list[str]
    env: dict[str, str]
    user: str | None
    cwd: str | None
    timeout_s: float  # 0: no limit


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a 5000-digit int cannot be repr'd under Python's int-to-str limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(message: str, fix: str) -> ExecutionError:
    return ExecutionError(message, fix=fix)


def _text(value: Any, what: str, fix: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string, got {type(value).__name__} {_shown(value)}", fix)
    if "\0" in value:
        raise _bad(f"{what} contains a NUL byte: {_shown(value)}", "remove the NUL byte: the box's commands "
                   "cannot receive one")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise _bad(f"{what} is not valid text (it holds a lone surrogate): {_shown(value)}",
                   "pass text that can be encoded as UTF-8") from None
    return value


def check_exec_args(
    cmd: Any,
    args: Any = None,
    env: Any = None,
    user: Any = None,
    cwd: Any = None,
    timeout: Any = None,
) -> ExecArgs:
    """Check Box.exec's arguments; return them normalized, or raise ExecutionError saying which is wrong."""
    command = _text(cmd, "the command", "pass the program to run as a string, e.g. exec('ls', ['-l'])")
    if not command:
        raise _bad("the command is empty", "pass the program to run, e.g. exec('ls', ['-l'])")
    if args is None:
        arg_list: list[Any] = []
    elif isinstance(args, str | bytes):
        raise _bad(f"args must be a list of strings, got a single {type(args).__name__} {_shown(args)}",
                   f"wrap it in a list: exec({command!r}, [{_shown(args)}])")
    elif isinstance(args, list | tuple):
        arg_list = list(args)
    else:
        raise _bad(f"args must be a list of strings, got {type(args).__name__} {_shown(args)}",
                   "pass the arguments as a list, e.g. exec('ls', ['-l', '/tmp'])")
    argv = [command, *(_text(a, f"argument {i + 1}", "pass every argument as a string (str(x) for numbers)")
                       for i, a in enumerate(arg_list))]

    pairs: list[Any]
    if env is None:
        pairs = []
    elif isinstance(env, Mapping):
        pairs = list(env.items())
    elif isinstance(env, list | tuple) and all(isinstance(p, list | tuple) and len(p) == 2 for p in env):
        pairs = list(env)
    else:
        raise _bad(f"env must be a dict or a list of (name, value) pairs, got {_shown(env)}",
                   "pass e.g. env={'DEBUG': '1'}")
    environment: dict[str, str] = {}
    env_fix = "environment variables are strings: env={'PORT': '8080'}"
    for key, value in pairs:
        name = _text(key, "an environment variable name", env_fix)
        if not name or "=" in name:
            raise _bad(f"invalid environment variable name {_shown(name)}: it must be non-empty and hold no '='",
                       "rename the variable")
        if name in environment:  # pairs naming a variable twice: one value would be silently dropped
            raise _bad(f"env sets {_shown(name)} twice", "give each variable once")
        environment[name] = _text(value, f"environment variable {name}", env_fix)

    if user is not None:
        user = _text(user, "user", 'pass a user name or "uid[:gid]", e.g. user="1000:1000"')
    if cwd is not None:
        cwd = _text(cwd, "cwd", "pass an absolute directory in the box, e.g. cwd='/tmp'")
        if cwd and not cwd.startswith("/"):
            raise _bad(f"cwd must be an absolute path in the box, got {_shown(cwd)}",
                       f"use an absolute path, e.g. cwd='/{cwd}'")

    timeout_s = 0.0
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise _bad(f"timeout must be a number of seconds, got {type(timeout).__name__} {_shown(timeout)}",
                       "pass e.g. timeout=30, or None for no limit")
        try:
            timeout_s = float(timeout)
        except OverflowError:
            timeout_s = math.inf
        if not (0 <= timeout_s <= MAX_TIMEOUT_S):  # NaN fails both
            raise _bad(f"timeout must be between 0 and {MAX_TIMEOUT_S:g} seconds, got {_shown(timeout)}",
                       "pass a positive number of seconds, or None for no limit")
    return ExecArgs(argv=argv, env=environment, user=user, cwd=cwd, timeout_s=timeout_s)


def check_tty_size(size: Any) -> tuple[int, int]:
    """Box.exec's tty_size (rows, cols), 24x80 when None; a terminal is at most 65535 in either direction."""
    if size is None:
        return 24, 80
    if not (isinstance(size, tuple | list) and len(size) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 65535 for n in size)):
        raise _bad(f"tty_size must be (rows, cols), two whole numbers from 1 to 65535, got {_shown(size)}",
                   "pass e.g. tty_size=(24, 80), or None for 24x80")
    return int(size[0]), int(size[1])
