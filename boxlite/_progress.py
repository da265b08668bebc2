"""Progress of long waits (image builds, guest root rebuilds) for library users.

Messages go to the "boxlite" logger at INFO. A program that configured no logging at all would see nothing
for a minute, so then they are also written to stderr: a long wait always shows progress.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("boxlite")


def report(message: str) -> None:
    log.info(message)
    if not log.hasHandlers():
        print(f"boxlite: {message}", file=sys.stderr, flush=True)
