"""The error tree and the form of its messages."""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path

import pytest

import boxlite
from boxlite import _errors
from boxlite import errors as boxlite_errors

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
    assert len(ALL_ERRORS) == 24
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


# Upstream BoxLite's runtime failures: each is also a RuntimeError and carries this `code` (the REST codes).
UPSTREAM_CODES = {
    "InvalidArgumentError": "invalid_argument", "UnsupportedError": "unsupported", "NotFoundError": "not_found",
    "SessionReapedError": "session_reaped", "AlreadyExistsError": "already_exists",
    "InvalidStateError": "invalid_state", "StoppedError": "stopped", "ImageError": "image_pull_failed",
    "ExecutionError": "execution_failed", "ResourceExhaustedError": "resource_exhausted",
    "NetworkError": "network_unavailable", "UpstreamUnavailableError": "upstream_unavailable",
    "EngineError": "engine_unavailable", "StorageError": "storage_error", "DatabaseError": "database_error",
    "MetadataError": "metadata_error", "ConfigError": "config_error", "InternalError": "internal",
}


@pytest.mark.parametrize(("name", "code"), UPSTREAM_CODES.items())
def test_upstream_runtime_errors_have_their_codes_and_are_runtime_errors(name: str, code: str) -> None:
    cls = getattr(boxlite_errors, name)
    assert cls.code == code
    assert issubclass(cls, RuntimeError)  # upstream code that catches RuntimeError keeps working
    assert cls.__module__ == "boxlite.errors" and repr(cls("x")).startswith(f"{name}(")


def test_our_own_runtime_errors_carry_a_code_too() -> None:
    assert (boxlite.UnsupportedEngineError.code, boxlite.PortalError.code) == ("unsupported", "engine_unavailable")
    for cls in (boxlite.ExecError, boxlite.TimeoutError, boxlite.ParseError):  # upstream's Python-side errors
        assert cls.code is None and not issubclass(cls, RuntimeError)


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
    # The last line of stderr is what explains the failure; a fix always follows.
    assert str(err).startswith("exec error: command 'sh -c false' exited with code 3: boom (fix: ")
    assert err.fix and "stderr" in err.fix
    assert boxlite.ExecError("pip install x", 1, "", fix="check the names").fix == "check the names"


def test_exec_error_without_stderr() -> None:
    for stderr in ("", "  \n"):
        assert boxlite.ExecError("false", 1, stderr).detail == "command 'false' exited with code 1"


def test_errors_can_be_caught_by_the_base() -> None:
    with pytest.raises(boxlite.BoxliteError):
        raise boxlite.InvalidStateError("stopped")


# -- every error the library raises carries a fix ------------------------------------------------------------------
PACKAGES = ("boxlite", "codebox_kernel")
REPO = Path(__file__).resolve().parents[2]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name.endswith("_pb2.py") or path.name.endswith("_pb2_grpc.py"):
                continue  # generated gRPC code
            parts = path.relative_to(REPO).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _error_class(node: ast.expr, namespace: dict[str, object]) -> type | None:
    """The BoxliteError subclass a call's callee names in the module (ImageError, errors.ImageError), if any."""
    obj: object
    if isinstance(node, ast.Name):
        obj = namespace.get(node.id)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        obj = getattr(namespace.get(node.value.id), node.attr, None)
    else:
        return None
    return obj if isinstance(obj, type) and issubclass(obj, boxlite.BoxliteError) else None


def _local_imports(tree: ast.Module) -> dict[str, object]:
    """Names imported inside functions (`from boxlite._errors import ConfigError` at the point of use)."""
    names: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(module, alias.name, None)
    return names


def _constructions_without_fix() -> tuple[list[str], int]:
    missing, seen = [], 0
    for name, path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        namespace = {**_local_imports(tree), **vars(importlib.import_module(name))}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _error_class(node.func, namespace) is None:
                continue
            seen += 1
            fix = next((k.value for k in node.keywords if k.arg == "fix"), None)
            if fix is None or (isinstance(fix, ast.Constant) and not (isinstance(fix.value, str) and fix.value)):
                missing.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node.func)}(...)")
    return missing, seen


def test_every_error_the_library_constructs_passes_a_fix() -> None:
    """Each BoxliteError made in boxlite/ and codebox_kernel/ says what to do (fix=...), with no allow-list: a
    message without one is a bug. (Errors re-raised with `fix=e.fix` count: e's own construction was checked.)"""
    missing, seen = _constructions_without_fix()
    assert seen > 200, "the scan found too few error constructions: it no longer sees them"
    assert missing == [], "errors raised without fix=:\n" + "\n".join(missing)


def test_the_scan_sees_errors_named_every_way() -> None:
    namespace = {"ImageError": boxlite.ImageError, "errors": boxlite_errors, "ValueError": ValueError}
    calls = [ast.parse(src, mode="eval").body for src in ("ImageError('x')", "errors.NotFoundError('x')",
                                                          "ValueError('x')", "f()('x')")]
    assert [_error_class(c.func, namespace) for c in calls] == [  # type: ignore[attr-defined]
        boxlite.ImageError, boxlite.NotFoundError, None, None]


def test_exec_error_always_has_a_fix() -> None:
    assert boxlite.ExecError("false", 1, "").fix
