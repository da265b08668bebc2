"""The public home of the error tree (`boxlite.errors.PortalError`, ...); also exported from `boxlite`.

Tracebacks name these classes `boxlite.errors.<Name>`; see boxlite/_errors.py for the tree.
"""

from boxlite._errors import (
    AlreadyExistsError,
    BoxliteError,
    ConfigError,
    EngineError,
    ExecError,
    ExecutionError,
    ImageError,
    InternalError,
    InvalidStateError,
    NetworkError,
    NotFoundError,
    ParseError,
    PortalError,
    StorageError,
    TimeoutError,
    UnsupportedEngineError,
)

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
