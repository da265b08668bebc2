"""The error tree and the form of its messages."""

from __future__ import annotations

import builtins

import pytest

import boxlite
from boxlite import _errors

ALL_ERRORS = [getattr(_errors, name) for name in _errors.__all__]

# kind -> the message prefix the module docstring promises ("<kind>: <what happened>").
PREFIXES = {
    boxlite.TimeoutError: "timeout: ",
    boxlite.ParseError: "parse error: ",
    boxlite.UnsupportedEngineError: "unsupported engine: ",
    boxlite.EngineError: "engine error: ",
    boxlite.ConfigError: "configuration error: ",
    boxlite.StorageError: "storage error: ",
    boxlite.ImageError: "image error: ",
    boxlite.PortalError: "portal error: ",
    boxlite.NetworkError: "network error: ",
    boxlite.ExecutionError: "execution error: ",
    boxlite.InternalError: "internal error: ",
    boxlite.InvalidStateError: "invalid state: ",
}


def test_error_list_is_complete() -> None:
    assert len(ALL_ERRORS) == 16
    assert {cls.__name__ for cls in ALL_ERRORS} == set(_errors.__all__)


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_is_a_boxlite_error_and_exported(cls: type) -> None:
    assert issubclass(cls, boxlite.BoxliteError)
    assert issubclass(cls, Exception)
    assert getattr(boxlite, cls.__name__) is cls
    assert cls.__name__ in boxlite.__all__


def test_timeout_error_is_also_the_builtin() -> None:
    assert issubclass(boxlite.TimeoutError, builtins.TimeoutError)
    assert boxlite.TimeoutError is not builtins.TimeoutError
    with pytest.raises(builtins.TimeoutError):
        raise boxlite.TimeoutError("took too long")
    try:
        raise boxlite.TimeoutError("took too long")
    except builtins.TimeoutError as exc:  # what user code that knows nothing of boxlite catches
        assert str(exc) == "timeout: took too long"
    # Only TimeoutError mixes in a builtin error.
    for cls in ALL_ERRORS:
        if cls is not boxlite.TimeoutError:
            assert not issubclass(cls, builtins.TimeoutError), cls


@pytest.mark.parametrize(("cls", "prefix"), PREFIXES.items(), ids=lambda v: getattr(v, "__name__", v))
def test_message_form(cls: type, prefix: str) -> None:
    err = cls("something happened")
    assert str(err) == f"{prefix}something happened"
    assert err.detail == "something happened"
    assert err.fix is None


def test_config_error_message() -> None:
    err = boxlite.ConfigError("CPU count must be between 1 and 2")
    assert str(err).startswith("configuration error: CPU count must be between 1 and 2")


def test_not_found_and_already_exists_name_the_kind_themselves() -> None:
    assert str(boxlite.NotFoundError("box not found: x")).startswith("box not found: x")
    assert str(boxlite.AlreadyExistsError("box already exists: web")) == "box already exists: web"


def test_fix_text_is_included() -> None:
    err = boxlite.NotFoundError("box not found: x", fix="`boxlite ls -a` lists the boxes")
    assert str(err) == "box not found: x (fix: `boxlite ls -a` lists the boxes)"
    assert err.fix == "`boxlite ls -a` lists the boxes"
    err = boxlite.EngineError("qemu died", fix="see console.log")
    assert str(err) == "engine error: qemu died (fix: see console.log)"


def test_exec_error_carries_the_result() -> None:
    err = boxlite.ExecError("sh -c false", 3, "warning\nboom\n")
    assert isinstance(err, boxlite.BoxliteError)
    assert (err.command, err.exit_code, err.stderr) == ("sh -c false", 3, "warning\nboom\n")
    # The last line of stderr is what explains the failure.
    assert str(err) == "exec error: command 'sh -c false' exited with code 3: boom"


def test_exec_error_without_stderr() -> None:
    assert str(boxlite.ExecError("false", 1, "")) == "exec error: command 'false' exited with code 1"
    assert str(boxlite.ExecError("false", 1, "  \n")) == "exec error: command 'false' exited with code 1"


def test_errors_can_be_caught_by_the_base() -> None:
    with pytest.raises(boxlite.BoxliteError):
        raise boxlite.InvalidStateError("stopped")
