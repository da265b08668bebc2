"""Property tests for the arguments of Box.exec / SimpleBox.exec, checked on the host before anything is sent.

Any cmd/args/env/user/cwd/timeout either passes the check (and is then safe to put in a protobuf ExecRequest) or
raises ExecutionError naming what is wrong; never a TypeError or OverflowError from protobuf, and never a string
`args` silently split into one argument per character. Box.exec checks before it even looks at the box's state,
so these tests need no VM: the box below is a stopped one that is never booted.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boxlite import ExecutionError, InvalidStateError, SimpleBox
from boxlite._box import Box
from boxlite._exec_args import MAX_TIMEOUT_S, check_exec_args, check_tty_size
from boxlite._portal import portal_pb2 as pb
from boxlite._state import BoxRecord

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

nasty_text = st.text(alphabet=st.one_of(st.characters(), st.sampled_from("\0=/ \udc80\ud800é")), max_size=20)
huge = st.sampled_from([(10, 5000), (-10, 400), (2, 1024), (2, 64)]).map(lambda be: be[0] ** be[1])
numbers = st.one_of(st.integers(), huge, st.floats(allow_nan=True, allow_infinity=True))
anything = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, nasty_text, st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(nasty_text, inner, max_size=3)),
    max_leaves=6,
)
cmds = st.one_of(nasty_text, anything)
args_values = st.one_of(st.none(), st.lists(nasty_text, max_size=4), st.tuples(nasty_text), nasty_text, anything)
envs = st.one_of(st.none(), st.dictionaries(nasty_text, nasty_text, max_size=3),
                 st.lists(st.tuples(nasty_text, nasty_text), max_size=3), anything)
users = st.one_of(st.none(), nasty_text, anything)
cwds = st.one_of(st.none(), nasty_text.map(lambda t: "/" + t), nasty_text, anything)
timeouts = st.one_of(st.none(), numbers, anything)


@SETTINGS
@given(cmds, args_values, envs, users, cwds, timeouts)
def test_exec_args_pass_or_raise_execution_error(cmd: Any, args: Any, env: Any, user: Any, cwd: Any,
                                                 timeout: Any) -> None:
    try:
        checked = check_exec_args(cmd, args, env, user, cwd, timeout)
    except ExecutionError as exc:
        assert str(exc).startswith("execution error: ") and exc.fix
        assert len(str(exc)) < 1000
        return
    # What passes goes into a protobuf request without complaint, and means what was given.
    request = pb.ExecRequest(argv=checked.argv, env=checked.env, cwd=checked.cwd or "", user=checked.user or "",
                             timeout_s=checked.timeout_s)
    request.SerializeToString()
    assert checked.argv[0] == cmd and checked.argv[1:] == list(args or [])
    assert all("\0" not in a for a in checked.argv)
    assert all(k and "=" not in k for k in checked.env)
    assert 0 <= checked.timeout_s <= MAX_TIMEOUT_S
    assert checked.cwd is None or checked.cwd == "" or checked.cwd.startswith("/")


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"cmd": 5}, "the command must be a string"),
    ({"cmd": ""}, "the command is empty"),
    ({"cmd": "echo", "args": "hi"}, "args must be a list"),  # was run as echo h i
    ({"cmd": "echo", "args": b"hi"}, "args must be a list"),
    ({"cmd": "echo", "args": [1, 2]}, "argument 1 must be a string"),  # protobuf: TypeError
    ({"cmd": "echo", "args": ["a\0b"]}, "NUL byte"),
    ({"cmd": "echo", "args": ["\ud800"]}, "lone surrogate"),  # protobuf: UnicodeEncodeError
    ({"cmd": "echo", "env": {"A": 1}}, "environment variable A must be a string"),
    ({"cmd": "echo", "env": {"A=B": "1"}}, "invalid environment variable name"),
    ({"cmd": "echo", "env": [("A", "1"), ("A", "2")]}, "env sets 'A' twice"),
    ({"cmd": "echo", "env": {"": "1"}}, "invalid environment variable name"),
    ({"cmd": "echo", "env": "A=1"}, "env must be a dict"),
    ({"cmd": "echo", "user": 1000}, "user must be a string"),  # protobuf: TypeError
    ({"cmd": "echo", "cwd": "tmp"}, "cwd must be an absolute path"),
    ({"cmd": "echo", "timeout": -1}, "timeout must be between"),  # was silently no limit
    ({"cmd": "echo", "timeout": math.nan}, "timeout must be between"),
    ({"cmd": "echo", "timeout": math.inf}, "timeout must be between"),
    ({"cmd": "echo", "timeout": 10**400}, "timeout must be between"),  # protobuf: OverflowError
    ({"cmd": "echo", "timeout": "5"}, "timeout must be a number"),
    ({"cmd": "echo", "timeout": True}, "timeout must be a number"),
])
def test_found_exec_args(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ExecutionError, match=needle):
        check_exec_args(**kwargs)


@pytest.mark.parametrize("size", [(0, 80), (24, -1), (70000, 80), (24.0, 80), ("24", "80"), (True, 80), (24,),
                                  (24, 80, 1), 24, "24x80"])
def test_bad_tty_sizes(size: Any) -> None:
    """Negative sizes made protobuf raise ValueError, 70000 made the agent's struct.pack raise."""
    with pytest.raises(ExecutionError, match="tty_size"):
        check_tty_size(size)


def test_good_tty_sizes() -> None:
    assert check_tty_size(None) == (24, 80)
    assert check_tty_size([50, 200]) == (50, 200)
    assert check_tty_size((1, 65535)) == (1, 65535)


def test_good_exec_args_are_kept() -> None:
    checked = check_exec_args("sh", ("-c", "echo $A"), [("A", "1")], "1000:1000", "/tmp", 2.5)
    assert checked.argv == ["sh", "-c", "echo $A"] and checked.env == {"A": "1"}
    assert (checked.user, checked.cwd, checked.timeout_s) == ("1000:1000", "/tmp", 2.5)
    assert check_exec_args("true", timeout=0).timeout_s == 0  # 0: no limit, as before


# -- through Box.exec and SimpleBox.exec, on a stopped box (no VM) --------------------------------------------------
class _Store:
    def __init__(self, record: BoxRecord) -> None:
        self.record = record
        self.lookups = 0

    def find(self, _id: str) -> BoxRecord:
        self.lookups += 1
        return self.record


class _Runtime:
    def __init__(self, store: _Store) -> None:
        self._store = store


def _stopped_box() -> tuple[Box, _Store]:
    record = BoxRecord(id="0123456789ab", name=None, status="stopped", config={"cpus": 1, "memory_mib": 512},
                       image={}, box_dir="/nonexistent/box", created_at=time.time())
    store = _Store(record)
    return Box(_Runtime(store), record), store  # type: ignore[arg-type]


@pytest.mark.anyio
@SETTINGS
@given(cmds, args_values, envs, users, cwds, timeouts,
       st.one_of(st.none(), st.tuples(numbers, numbers), anything))
async def test_box_exec_checks_before_looking_at_the_box(cmd: Any, args: Any, env: Any, user: Any, cwd: Any,
                                                         timeout: Any, tty_size: Any) -> None:
    box, store = _stopped_box()
    try:
        await box.exec(cmd, args, env=env, user=user, cwd=cwd, timeout=timeout, tty=tty_size is not None,
                       tty_size=tty_size)
    except ExecutionError:
        assert store.lookups == 0  # refused before anything else happened
    except InvalidStateError:
        check_exec_args(cmd, args, env, user, cwd, timeout)  # the arguments were fine: the box is stopped
        check_tty_size(tty_size)


@pytest.mark.anyio
@SETTINGS
@given(cmds, st.lists(st.one_of(nasty_text, anything), max_size=4), envs, users, cwds, timeouts,
       st.one_of(st.none(), st.binary(max_size=4), nasty_text, anything))
async def test_simplebox_exec_checks_too(cmd: Any, args: list[Any], env: Any, user: Any, cwd: Any, timeout: Any,
                                         stdin: Any) -> None:
    sb = SimpleBox(image="alpine")
    sb._box, _ = _stopped_box()
    with contextlib.suppress(ExecutionError, InvalidStateError):
        await sb.exec(cmd, *args, env=env, user=user, cwd=cwd, timeout=timeout, stdin=stdin)
