"""boxlite: embeddable microVM sandboxes. Each box is a real VM booted from an OCI image.

    import asyncio, boxlite

    async def main():
        async with boxlite.SimpleBox(image=boxlite.DEFAULT_IMAGE) as box:
            r = await box.exec("python3", "-c", "print(6*7)")
            print(r.exit_code, r.stdout)

    asyncio.run(main())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from boxlite._errors import (
    AlreadyExistsError,
    BoxliteError,
    ConfigError,
    DatabaseError,
    EngineError,
    ExecError,
    ExecutionError,
    ImageError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    MetadataError,
    NetworkError,
    NotFoundError,
    ParseError,
    PortalError,
    ResourceExhaustedError,
    SessionReapedError,
    StoppedError,
    StorageError,
    TimeoutError,
    UnsupportedEngineError,
    UnsupportedError,
    UpstreamUnavailableError,
)

if TYPE_CHECKING:
    from boxlite._box import Box, BoxInfo
    from boxlite._code_results import CodeError, CodeExecution, Logs, Result
    from boxlite._codebox import CodeBox
    from boxlite._execution import ExecResult, ExecStatus, Execution
    from boxlite._kernel_client import KernelClient, KernelGone, KernelMessage
    from boxlite._metrics import BoxMetrics, RuntimeMetrics
    from boxlite._netopts import NetworkSpec, PortSpec, VolumeSpec
    from boxlite._options import BoxOptions, Options
    from boxlite._runtime import Boxlite
    from boxlite._simplebox import SimpleBox
    from boxlite._sync import SyncBox, SyncBoxlite, SyncCodeBox, SyncExecution, SyncSimpleBox
    from boxlite.images import CODEBOX_IMAGE, DEFAULT_IMAGE

# Imported on first use (PEP 562), so `import boxlite` and the per-box shim start fast.
_LAZY = {
    "Box": "boxlite._box", "BoxInfo": "boxlite._box",
    "CodeBox": "boxlite._codebox", "KernelClient": "boxlite._kernel_client",
    "KernelMessage": "boxlite._kernel_client", "KernelGone": "boxlite._kernel_client",
    "CodeExecution": "boxlite._code_results", "CodeError": "boxlite._code_results", "Logs": "boxlite._code_results",
    "Result": "boxlite._code_results",
    "Execution": "boxlite._execution", "ExecResult": "boxlite._execution", "ExecStatus": "boxlite._execution",
    "BoxMetrics": "boxlite._metrics", "RuntimeMetrics": "boxlite._metrics",
    "BoxOptions": "boxlite._options", "Options": "boxlite._options",
    "Boxlite": "boxlite._runtime", "SimpleBox": "boxlite._simplebox", "DEFAULT_IMAGE": "boxlite.images",
    "CODEBOX_IMAGE": "boxlite.images",
    "SyncBoxlite": "boxlite._sync", "SyncBox": "boxlite._sync", "SyncSimpleBox": "boxlite._sync",
    "SyncExecution": "boxlite._sync", "SyncCodeBox": "boxlite._sync",
    "NetworkSpec": "boxlite._netopts", "PortSpec": "boxlite._netopts", "VolumeSpec": "boxlite._netopts",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'boxlite' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__version__ = "0.1.0"

__all__ = [
    "CODEBOX_IMAGE",
    "DEFAULT_IMAGE",
    "AlreadyExistsError",
    "Box",
    "BoxInfo",
    "BoxMetrics",
    "BoxOptions",
    "Boxlite",
    "BoxliteError",
    "CodeBox",
    "CodeError",
    "CodeExecution",
    "ConfigError",
    "DatabaseError",
    "EngineError",
    "ExecError",
    "ExecResult",
    "ExecStatus",
    "Execution",
    "ExecutionError",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "KernelClient",
    "KernelGone",
    "KernelMessage",
    "Logs",
    "MetadataError",
    "NetworkError",
    "NetworkSpec",
    "NotFoundError",
    "Options",
    "ParseError",
    "PortSpec",
    "PortalError",
    "ResourceExhaustedError",
    "Result",
    "RuntimeMetrics",
    "SessionReapedError",
    "SimpleBox",
    "StoppedError",
    "StorageError",
    "SyncBox",
    "SyncBoxlite",
    "SyncCodeBox",
    "SyncExecution",
    "SyncSimpleBox",
    "TimeoutError",
    "UnsupportedEngineError",
    "UnsupportedError",
    "UpstreamUnavailableError",
    "VolumeSpec",
]
