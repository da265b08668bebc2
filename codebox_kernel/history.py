"""The kernel's input history, kept by the host kernel from the cells it relays, and its answers to
`history_request` (`tail`, `range`, `search`), shaped as ipykernel's: `[session, line, input]`, or
`[session, line, [input, output]]` with `output`.

The box's IPython keeps its history in memory (a history file on the box's disk cost more per cell than a small
cell itself, see boxlite/_codebox.py); the host sees every cell go by anyway, so recording it here costs a list
append per cell and nothing in the box. Sessions are numbered from 1 and a new one begins whenever the box's
interpreter is replaced (a restart, a crash, a new box), as IPython begins one per kernel process. The input is
the cell as typed (IPython's `raw`); unlike IPython's, the answer to `raw=False` is the same text, since the host
does not see IPython's transformed source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

# IPython does not store these (history.py's `_exit_re`): rewinding onto one is a nuisance.
EXIT_RE = re.compile(r"(exit|quit)(\s*\(.*\))?$")
DEFAULT_TAIL = 10


@dataclass(frozen=True)
class Entry:
    session: int
    line: int
    source: str
    output: str | None = None

    def as_list(self, output: bool) -> list[Any]:
        return [self.session, self.line, [self.source, self.output] if output else self.source]


@dataclass
class History:
    """Every cell run since this kernel process started, oldest first."""

    session: int = 1
    entries: list[Entry] = field(default_factory=list)

    def new_session(self) -> None:
        """The box's interpreter was replaced: what comes next is numbered from 1 again, in a new session."""
        if any(e.session == self.session for e in self.entries):
            self.session += 1

    def record(self, source: str, line: int, output: str | None = None) -> None:
        """A cell that ran (an execute_request with store_history, not silent) as execution_count `line`."""
        source = source.rstrip("\n")
        if EXIT_RE.match(source.strip()):
            return
        self.entries.append(Entry(self.session, line, source, output))

    # -- history_request ------------------------------------------------------------------------------------
    def answer(self, content: dict[str, Any]) -> dict[str, Any]:
        """The content of a history_reply to a history_request's `content`."""
        output = bool(content.get("output", False))
        kind = content.get("hist_access_type")
        if kind == "tail":
            n = _int(content.get("n"))
            found = self.tail(DEFAULT_TAIL if n is None else n)
        elif kind == "range":
            start = _int(content.get("start")) or 1  # IPython's line 0 is an empty placeholder
            found = self.range(_int(content.get("session")) or 0, start, _int(content.get("stop")))
        elif kind == "search":
            found = self.search(str(content.get("pattern") or "*"), _int(content.get("n")),
                                bool(content.get("unique", False)))
        else:
            found = []
        return {"status": "ok", "history": [e.as_list(output) for e in found]}

    def tail(self, n: int) -> list[Entry]:
        """The last `n` cells, oldest first; the current session's come before older sessions' (as IPython)."""
        if n <= 0:
            return []
        current = [e for e in self.entries if e.session == self.session]
        older = [e for e in self.entries if e.session != self.session]
        return (current[::-1] + older[::-1])[:n][::-1]

    def range(self, session: int, start: int = 1, stop: int | None = None) -> list[Entry]:
        """Lines [start, stop) of `session` (0 or less: relative to the current one; a negative start or stop
        counts back from the session's end, as IPython's does for the current session)."""
        if session <= 0:
            session += self.session
        lines = [e for e in self.entries if e.session == session]
        end = max((e.line for e in lines), default=0) + 1
        if start < 0:
            start += end
        if stop is not None and stop < 0:
            stop += end
        return [e for e in lines if e.line >= start and (not stop or e.line < stop)]

    def search(self, pattern: str, n: int | None = None, unique: bool = False) -> list[Entry]:
        """Cells matching a glob `pattern` (SQLite GLOB, as IPython: case-sensitive, `*`, `?`, `[...]`),
        oldest first; `unique` keeps the latest of equal inputs; `n` keeps the last n."""
        glob = pattern.replace("[^", "[!")
        found = [e for e in self.entries if fnmatchcase(e.source, glob)]
        if unique:
            latest = {e.source: e for e in found}
            found = sorted(latest.values(), key=lambda e: (e.session, e.line))
        if n is not None:
            found = found[-n:] if n > 0 else []
        return found


def _int(value: Any) -> int | None:
    """A request's number; None when it is missing or not a number (then the default applies)."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
