"""boxlite: embeddable microVM sandboxes. Each box is a real VM booted from an OCI image.

    import asyncio, boxlite

    async def main():
        async with boxlite.SimpleBox(image=boxlite.DEFAULT_IMAGE) as box:
            r = await box.exec("python3", "-c", "print(6*7)")
            print(r.exit_code, r.stdout)

    asyncio.run(main())
"""

from boxlite._box import Box, BoxInfo
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
from boxlite._execution import Execution, ExecResult, ExecStatus
from boxlite._metrics import BoxMetrics, RuntimeMetrics
from boxlite._options import BoxOptions, Options
from boxlite._runtime import Boxlite
from boxlite._simplebox import SimpleBox
from boxlite.images import DEFAULT_IMAGE

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_IMAGE",
    "AlreadyExistsError",
    "Box",
    "BoxInfo",
    "BoxMetrics",
    "BoxOptions",
    "Boxlite",
    "BoxliteError",
    "ConfigError",
    "EngineError",
    "ExecError",
    "ExecResult",
    "ExecStatus",
    "Execution",
    "ExecutionError",
    "ImageError",
    "InternalError",
    "InvalidStateError",
    "NetworkError",
    "NotFoundError",
    "Options",
    "ParseError",
    "PortalError",
    "RuntimeMetrics",
    "SimpleBox",
    "StorageError",
    "TimeoutError",
    "UnsupportedEngineError",
]
