"""The error tree. Every failure the library reports is one of these, with a fix that says what to do.

    BoxliteError                      base of everything raised on purpose
     +-- ExecError                    a command exited non-zero under check=True
     +-- TimeoutError                 an operation ran out of time (also a builtins.TimeoutError)
     +-- ParseError                   output or a reference could not be parsed
     |   the runtime's failures (also RuntimeErrors), each with upstream BoxLite's `code`:
     +-- UnsupportedEngineError       unsupported          no usable VM engine on this host
     +-- UnsupportedError             unsupported          the operation is not supported here
     +-- EngineError                  engine_unavailable   the VM engine failed (QEMU died, would not start)
     +-- PortalError                  engine_unavailable   the host could not talk to the agent inside the VM
     +-- ConfigError                  config_error         invalid options or arguments
     +-- InvalidArgumentError         invalid_argument     an invalid argument (upstream's name; see ConfigError)
     +-- StorageError                 storage_error        disks, files under the home directory
     +-- DatabaseError                database_error       the state database
     +-- MetadataError                metadata_error       a record of a box, image or snapshot is unreadable
     +-- ImageError                   image_pull_failed    an image could not be found, read or unpacked
     +-- NetworkError                 network_unavailable  networking could not be set up
     +-- UpstreamUnavailableError     upstream_unavailable a remote service the runtime depends on is down
     +-- ExecutionError               execution_failed     a command could not be run (not a non-zero exit)
     +-- ResourceExhaustedError       resource_exhausted   a host limit was reached
     +-- InternalError                internal             a bug: please report it
     +-- NotFoundError                not_found            no such box (or image)
     +-- AlreadyExistsError           already_exists       the name is taken
     +-- InvalidStateError            invalid_state        the box is not in a state that allows the operation
     +-- StoppedError                 stopped              the box or runtime has stopped
     +-- SessionReapedError           session_reaped       the session behind the object was reaped

Messages follow one form: "<kind>: <what happened>" and a "(fix: ...)" sentence that says what to do about it.
A test (tests/unit/test_errors.py) checks that every error the library constructs passes a fix.
"""

from __future__ import annotations

import builtins
from typing import ClassVar

__all__ = [
    "AlreadyExistsError",
    "BoxliteError",
    "ConfigError",
    "DatabaseError",
    "EngineError",
    "ExecError",
    "ExecutionError",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "MetadataError",
    "NetworkError",
    "NotFoundError",
    "ParseError",
    "PortalError",
    "ResourceExhaustedError",
    "SessionReapedError",
    "StoppedError",
    "StorageError",
    "TimeoutError",
    "UnsupportedEngineError",
    "UnsupportedError",
    "UpstreamUnavailableError",
]


class BoxliteError(Exception):
    """Base class of every error this library raises on purpose."""

    prefix = "boxlite error"
    # Upstream BoxLite's machine-readable kind of a runtime failure (None for ExecError, TimeoutError, ParseError).
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.detail = message
        self.fix = fix
        text = f"{self.prefix}: {message}" if self.prefix else message
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


class ExecError(BoxliteError):
    """A command run with check=True exited non-zero."""

    prefix = "exec error"

    def __init__(self, command: str, exit_code: int, stderr: str, *, fix: str | None = None) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        message = f"command {command!r} exited with code {exit_code}"
        if tail:
            message += f": {tail}"
        super().__init__(message, fix=fix or "the command itself failed: see the error's stderr and exit_code "
                         "(check=False returns the result instead of raising)")


class TimeoutError(BoxliteError, builtins.TimeoutError):
    prefix = "timeout"


class ParseError(BoxliteError):
    prefix = "parse error"


class UnsupportedEngineError(BoxliteError, RuntimeError):
    code = "unsupported"
    prefix = "unsupported engine"


class EngineError(BoxliteError, RuntimeError):
    code = "engine_unavailable"
    prefix = "engine error"


class ConfigError(BoxliteError, RuntimeError):
    code = "config_error"
    prefix = "configuration error"


class StorageError(BoxliteError, RuntimeError):
    code = "storage_error"
    prefix = "storage error"


class ImageError(BoxliteError, RuntimeError):
    code = "image_pull_failed"
    prefix = "image error"


class PortalError(BoxliteError, RuntimeError):
    code = "engine_unavailable"
    prefix = "portal error"


class NetworkError(BoxliteError, RuntimeError):
    code = "network_unavailable"
    prefix = "network error"


class ExecutionError(BoxliteError, RuntimeError):
    code = "execution_failed"
    prefix = "execution error"


class InternalError(BoxliteError, RuntimeError):
    code = "internal"
    prefix = "internal error"


class NotFoundError(BoxliteError, RuntimeError):
    code = "not_found"
    """Raised as e.g. "box not found: <id>": the message names the kind of thing."""

    prefix = ""


class AlreadyExistsError(BoxliteError, RuntimeError):
    code = "already_exists"
    """Raised as e.g. "box already exists: <name>"."""

    prefix = ""


class InvalidStateError(BoxliteError, RuntimeError):
    code = "invalid_state"
    prefix = "invalid state"


class UnsupportedError(BoxliteError, RuntimeError):
    code = "unsupported"
    prefix = "unsupported"


class InvalidArgumentError(BoxliteError, RuntimeError):
    code = "invalid_argument"
    prefix = "invalid argument"


class DatabaseError(BoxliteError, RuntimeError):
    code = "database_error"
    prefix = "database error"


class MetadataError(BoxliteError, RuntimeError):
    code = "metadata_error"
    prefix = "metadata error"


class UpstreamUnavailableError(BoxliteError, RuntimeError):
    code = "upstream_unavailable"
    prefix = "upstream unavailable"


class ResourceExhaustedError(BoxliteError, RuntimeError):
    code = "resource_exhausted"
    prefix = "resource exhausted"


class StoppedError(BoxliteError, RuntimeError):
    code = "stopped"
    prefix = "stopped"


class SessionReapedError(BoxliteError, RuntimeError):
    code = "session_reaped"
    prefix = "session reaped"


# Tracebacks and reprs name the public module users import from (boxlite.errors re-exports every class).
for _name in __all__:
    globals()[_name].__module__ = "boxlite.errors"
del _name
