"""The synchronous API in one place, as upstream BoxLite spells it: `from boxlite.sync_api import SyncCodeBox`.

Every call blocks the caller and runs on the library's own background event loop, so it works in plain
scripts and inside an already-running loop (a Jupyter cell) alike.
"""

from boxlite._sync import SyncBox, SyncBoxlite, SyncCodeBox, SyncExecution, SyncSimpleBox

__all__ = ["SyncBox", "SyncBoxlite", "SyncCodeBox", "SyncExecution", "SyncSimpleBox"]
