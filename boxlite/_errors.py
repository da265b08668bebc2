"""The error tree. Every failure the library reports is one of these.

    BoxliteError                      base of everything raised on purpose
     +-- ExecError                    a command exited non-zero under check=True
     +-- TimeoutError                 an operation ran out of time (also a builtins.TimeoutError)
     +-- ParseError                   output or a reference could not be parsed
     +-- UnsupportedEngineError       no usable VM engine on this host
     +-- EngineError                  the VM engine failed (QEMU died, would not start, ...)
     +-- ConfigError                  invalid options
     +-- StorageError                 disks, state database, files under the home directory
     +-- ImageError                   an image could not be found, read or unpacked
     +-- PortalError                  the host could not talk to the agent inside the VM
     +-- NetworkError                 networking could not be set up
     +-- ExecutionError               a command could not be run (distinct from a non-zero exit)
     +-- InternalError                a bug: please report it
     +-- NotFoundError                no such box (or image)
     +-- AlreadyExistsError           the name is taken
     +-- InvalidStateError            the box is not in a state that allows the operation

Messages follow one form: "<kind>: <what happened>" and, where there is one, a "fix:" sentence that says
what to do about it.
"""

from __future__ import annotations

import builtins

__all__ = [
    "AlreadyExistsError",
    "BoxliteError",
    "ConfigError",
    "EngineError",
    "ExecError",
    "ExecutionError",
    "ImageError",
    "InternalError",
    "InvalidStateError",
    "NetworkError",
    "NotFoundError",
    "ParseError",
    "PortalError",
    "StorageError",
    "TimeoutError",
    "UnsupportedEngineError",
]


class BoxliteError(Exception):
    """Base class of every error this library raises on purpose."""

    prefix = "boxlite error"

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


class UnsupportedEngineError(BoxliteError):
    prefix = "unsupported engine"


class EngineError(BoxliteError):
    prefix = "engine error"


class ConfigError(BoxliteError):
    prefix = "configuration error"


class StorageError(BoxliteError):
    prefix = "storage error"


class ImageError(BoxliteError):
    prefix = "image error"


class PortalError(BoxliteError):
    prefix = "portal error"


class NetworkError(BoxliteError):
    prefix = "network error"


class ExecutionError(BoxliteError):
    prefix = "execution error"


class InternalError(BoxliteError):
    prefix = "internal error"


class NotFoundError(BoxliteError):
    """Raised as e.g. "box not found: <id>": the message names the kind of thing."""

    prefix = ""


class AlreadyExistsError(BoxliteError):
    """Raised as e.g. "box already exists: <name>"."""

    prefix = ""


class InvalidStateError(BoxliteError):
    prefix = "invalid state"


# Tracebacks and reprs name the public module users import from (boxlite.errors re-exports every class).
for _cls in (BoxliteError, *BoxliteError.__subclasses__()):
    _cls.__module__ = "boxlite.errors"
del _cls
