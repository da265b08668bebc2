"""SimpleBox: a box as an async context manager, with exec() that returns the whole result."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from boxlite._box import Box, BoxInfo
from boxlite._errors import ExecError, ExecutionError, InvalidStateError, TimeoutError
from boxlite._execution import ExecResult
from boxlite._metrics import BoxMetrics
from boxlite._options import BoxOptions
from boxlite._runtime import Boxlite


class SimpleBox:
    """Nothing is created until `async with` (or `await box.start()`); leaving the block stops the box
    and, with auto_remove (the default), removes it."""

    def __init__(
        self,
        image: str | None = None,
        rootfs_path: str | None = None,
        memory_mib: int | None = None,
        cpus: int | None = None,
        runtime: Boxlite | None = None,
        name: str | None = None,
        auto_remove: bool = True,
        reuse_existing: bool = False,
        **box_options: Any,
    ) -> None:
        given: dict[str, Any] = {
            "image": image, "rootfs_path": rootfs_path, "memory_mib": memory_mib, "cpus": cpus, "name": name,
        }
        fields = {k: v for k, v in given.items() if v is not None}
        self.options = BoxOptions(**fields, auto_remove=auto_remove, **box_options)
        self._runtime = runtime
        self._reuse = reuse_existing
        self._box: Box | None = None

    @property
    def runtime(self) -> Boxlite:
        if self._runtime is None:
            self._runtime = Boxlite.default()
        return self._runtime

    @property
    def box(self) -> Box:
        if self._box is None:
            raise InvalidStateError("the box has not been started", fix="use `async with SimpleBox(...)` or "
                                    "`await box.start()` first")
        return self._box

    @property
    def id(self) -> str:
        return self.box.id

    async def start(self) -> SimpleBox:
        if self._box is not None:
            await self._box.start()
            return self
        if self._reuse and self.options.name:
            existing = await self.runtime.get(self.options.name)
            if existing is not None:
                await existing.start()
                self._box = existing
                return self
        self._box = await self._create()
        return self

    async def _create(self) -> Box:
        return await self.runtime.create(self.options)

    async def stop(self) -> None:
        if self._box is None:
            return
        box, self._box = self._box, None
        if self.options.auto_remove:
            await self.runtime.remove(box.id, force=True) if await self.runtime.get(box.id) else None
        else:
            await box.stop()

    async def __aenter__(self) -> SimpleBox:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())

    def info(self) -> BoxInfo:
        """The box's state now (usable as `box.info()` or `await box.info()`)."""
        return self.box.info()

    async def metrics(self) -> BoxMetrics:
        return await self.box.metrics()

    async def exec(
        self,
        cmd: str,
        *args: str,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: float | None = None,
        cwd: str | None = None,
        check: bool = False,
        stdin: bytes | str | None = None,
    ) -> ExecResult:
        """Run a command to completion and return its exit code and output.

        A non-zero exit is returned, not raised, unless check=True (then ExecError). A timeout kills the
        command's process group and raises TimeoutError (its partial output is on the error).
        """
        if stdin is not None and not isinstance(stdin, bytes | str):
            raise ExecutionError(f"stdin must be bytes or str, got {type(stdin).__name__}",
                                 fix="pass the input as bytes or text, or None for no input")
        execution = await self.box.exec(cmd, list(args), env=env, user=user, cwd=cwd, timeout=timeout,
                                        stdin=stdin is not None)
        if stdin is not None:
            await execution.write_stdin(stdin)
            await execution.close_stdin()
        out, err, status = await execution.collect()
        result = ExecResult(exit_code=status.exit_code, stdout=out.decode(errors="replace"),
                            stderr=err.decode(errors="replace"), error_message=status.error)
        command = " ".join([cmd, *args])
        if status.timed_out:
            error = TimeoutError(f"command {command!r} timed out after {timeout} s; its process group was killed",
                                 fix="raise the timeout, or make the command finish sooner")
            error.result = result  # type: ignore[attr-defined]
            raise error
        if check and status.exit_code != 0:
            raise ExecError(command, status.exit_code, result.stderr, fix="see the error's stderr; check=False "
                            "returns the result instead of raising")
        return result

    async def copy_in(self, host_path: str | os.PathLike[str], container_dest: str, *, overwrite: bool = True,
                      follow_symlinks: bool = False) -> None:
        """Copy a host file or directory into the box (see Box.copy_in)."""
        await self.box.copy_in(host_path, container_dest, overwrite=overwrite, follow_symlinks=follow_symlinks)

    async def copy_out(self, container_src: str, host_dest: str | os.PathLike[str], *, overwrite: bool = True,
                       follow_symlinks: bool = False) -> None:
        """Copy a file or directory out of the box to the host (see Box.copy_out)."""
        await self.box.copy_out(container_src, host_dest, overwrite=overwrite, follow_symlinks=follow_symlinks)
