"""The box one BoxLite Python kernel runs its cells in: made (or found again) at kernel start, restarted,
replaced or removed on request, and removed when the kernel shuts down unless it is to persist."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from typing import Any

from boxlite import Boxlite, BoxliteError, CodeBox, InvalidStateError
from codebox_kernel.settings import KernelSettings


def default_box_name(connection_file: str) -> str:
    """One name per connection file: Jupyter keeps the file across restarts, so the restarted kernel process
    finds the same box (files kept, fresh interpreter)."""
    digest = hashlib.sha256(os.path.abspath(connection_file).encode()).hexdigest()[:12]
    return f"jupyter-{digest}"


class NotebookBox:
    def __init__(self, settings: KernelSettings, name: str, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.name = name
        self._say = say
        self.runtime: Boxlite | None = None
        self.codebox: CodeBox | None = None
        self.starts = 0

    @property
    def started(self) -> bool:
        return self.codebox is not None

    def require(self) -> CodeBox:
        if self.codebox is None:
            raise InvalidStateError(f"box {self.name} is not running", fix="run `%boxlite restart` to start one")
        return self.codebox

    def _new_codebox(self) -> CodeBox:
        if self.runtime is None:
            self.runtime = Boxlite.default()
        options: dict[str, Any] = dict(self.settings.box_options())
        options["name"] = self.name
        return CodeBox(runtime=self.runtime, reuse_existing=True, auto_remove=not self.settings.persist,
                       detach=True, **options)

    async def start(self) -> CodeBox:
        """Start the box (booting, restoring its template, or finding it running) and its kernel.

        A box found running belonged to this kernel's previous process (a restart): it gets a fresh interpreter.
        One that cannot be started again (its VM failed, say) is replaced by a new box, and that is said."""
        self.runtime = self.runtime or Boxlite.default()
        existing = await self.runtime.get(self.name)
        codebox = self._new_codebox()
        try:
            await codebox.start()
        except BoxliteError as exc:
            if existing is None:
                raise
            self._say(f"box {self.name} could not be started again ({exc}); starting a new one\n")
            await self.runtime.remove(existing.id, force=True)
            codebox = self._new_codebox()
            await codebox.start()
        else:
            if existing is not None and existing.info().status == "running":
                await codebox.restart()  # the previous kernel process's interpreter: a restart wants a new one
        self.codebox = codebox
        self.starts += 1
        return codebox

    async def restart_kernel(self) -> None:
        await self.require().restart()

    async def remove(self) -> None:
        """Stop and remove the box (files in it are lost)."""
        codebox, self.codebox = self.codebox, None
        if self.runtime is None:
            return
        if codebox is not None:
            with contextlib.suppress(BoxliteError):
                await codebox.kernel.disconnect()
        box = await self.runtime.get(self.name)
        if box is not None:
            await self.runtime.remove(box.id, force=True)

    async def shutdown(self, restart: bool) -> None:
        """At the end of this kernel process: keep the box running for the next process when restarting,
        stop it when it persists, remove it otherwise."""
        codebox, self.codebox = self.codebox, None
        if codebox is not None:
            with contextlib.suppress(BoxliteError):
                await codebox.kernel.disconnect()
        if self.runtime is None:
            return
        try:
            if restart:
                return
            box = await self.runtime.get(self.name)
            if box is None:
                return
            if self.settings.persist:
                await box.stop()
            else:
                await self.runtime.remove(box.id, force=True)
        finally:
            with contextlib.suppress(BoxliteError):
                await self.runtime.close()
