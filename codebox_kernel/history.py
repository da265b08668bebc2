"""The kernel's input history, kept by the host kernel from the cells it relays, and its answers to
`history_request` (`tail`, `range`, `search`), shaped as ipykernel's: `[session, line, input]`, or
`[session, line, [input, output]]` with `output`.

The box's IPython keeps its history in memory (its SQLite file on the box's disk cost more per cell than a
small cell itself under emulation, see boxlite/_codebox.py), so it forgets every cell when its interpreter is
replaced, and a new console has nothing to go back to. The host sees every cell go by anyway: it keeps them in
an SQLite file of its own, on the host's disk (`kernel-history.sqlite` in the BoxLite home), as IPython keeps
its history.sqlite: one session per interpreter, shared by every BoxLite Python kernel of that home, so a new
console or a restarted kernel gets the cells of earlier sessions on its up-arrow, as with a stock ipykernel.

The input is the cell as typed (IPython's `raw`); the answer to `raw=False` is the same text, since the host
does not see IPython's transformed source. A cell's output is the text of its result, when it had one.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("codebox_kernel")

FILE_NAME = "kernel-history.sqlite"
# IPython does not store these (history.py's `_exit_re`): rewinding onto one is a nuisance.
EXIT_RE = re.compile(r"(exit|quit)(\s*\(.*\))?$")
DEFAULT_TAIL = 10
# A result's text longer than this is not kept (a big table's repr would bloat the file for little use).
MAX_OUTPUT_CHARS = 64 * 1024
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (session INTEGER PRIMARY KEY AUTOINCREMENT, start TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (session INTEGER NOT NULL, line INTEGER NOT NULL, source TEXT NOT NULL,
                                    output TEXT);
CREATE INDEX IF NOT EXISTS history_order ON history (session, line);
"""
# Rows as IPython orders them; rowid breaks ties (a `%boxlite` cell shares its line with the cell before it).
NEWEST_FIRST = "ORDER BY session DESC, line DESC, rowid DESC"
OLDEST_FIRST = "ORDER BY session, line, rowid"


@dataclass(frozen=True)
class Entry:
    session: int
    line: int
    source: str
    output: str | None = None

    def as_list(self, output: bool) -> list[Any]:
        return [self.session, self.line, [self.source, self.output] if output else self.source]


class History:
    """Every cell run by BoxLite Python kernels with this file (in memory without one), oldest first."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._db = _open(path)
        self._session: int | None = None  # made when the interpreter's first cell is recorded

    def new_session(self) -> None:
        """The box's interpreter was replaced: the next cell begins a new session (numbered from 1 again)."""
        self._session = None

    @property
    def session(self) -> int:
        """The current session's number (the one the next new session gets, while it has no cell yet)."""
        if self._session is not None:
            return self._session
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sessions'").fetchone()
        return int(row[0]) + 1 if row else 1

    def record(self, source: str, line: int, output: str | None = None) -> None:
        """A cell that ran (an execute_request with store_history, not silent) as execution_count `line`."""
        source = source.rstrip("\n")
        if EXIT_RE.match(source.strip()):
            return
        if output is not None and len(output) > MAX_OUTPUT_CHARS:
            output = None
        try:
            with self._db:
                if self._session is None:
                    self._session = self._db.execute("INSERT INTO sessions (start) VALUES (datetime('now'))"
                                                     ).lastrowid
                self._db.execute("INSERT INTO history VALUES (?, ?, ?, ?)", (self._session, line, source, output))
        except sqlite3.Error as exc:  # called from the relay: a cell's reply must not fail for its history
            log.warning("a cell could not be added to the kernel's history: %s", exc)

    def close(self) -> None:
        self._db.close()

    # -- history_request ------------------------------------------------------------------------------------
    def answer(self, content: dict[str, Any]) -> dict[str, Any]:
        """The content of a history_reply to a history_request's `content`."""
        try:
            found = self._find(content)
        except sqlite3.Error as exc:
            log.warning("the kernel's history could not be read: %s", exc)
            found = []
        return {"status": "ok", "history": [e.as_list(bool(content.get("output", False))) for e in found]}

    def _find(self, content: dict[str, Any]) -> list[Entry]:
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
        return found

    def tail(self, n: int) -> list[Entry]:
        """The last `n` cells, oldest first; the current session's come before older sessions' (as IPython)."""
        if n <= 0:
            return []
        current = self._select(f"WHERE session = ? {NEWEST_FIRST} LIMIT ?", (self.session, n))
        older = self._select(f"WHERE session != ? {NEWEST_FIRST} LIMIT ?", (self.session, n))
        return (current + older)[:n][::-1]

    def range(self, session: int, start: int = 1, stop: int | None = None) -> list[Entry]:
        """Lines [start, stop) of `session` (0 or less: counted back from the current one; a negative start or
        stop counts back from the session's end, as IPython's does for the current session)."""
        if session <= 0:
            session += self.session
        if start < 0 or (stop is not None and stop < 0):
            row = self._db.execute("SELECT MAX(line) FROM history WHERE session = ?", (session,)).fetchone()
            end = (row[0] or 0) + 1
            start = start + end if start < 0 else start
            stop = stop + end if stop is not None and stop < 0 else stop
        if stop:
            return self._select(f"WHERE session = ? AND line >= ? AND line < ? {OLDEST_FIRST}",
                                (session, start, stop))
        return self._select(f"WHERE session = ? AND line >= ? {OLDEST_FIRST}", (session, start))

    def search(self, pattern: str, n: int | None = None, unique: bool = False) -> list[Entry]:
        """Cells matching a glob `pattern` (SQLite's GLOB, as IPython's), oldest first; `unique` keeps the latest
        of equal inputs; `n` keeps the last n."""
        sql, params = "WHERE source GLOB ?", [pattern]
        if unique:
            sql += " GROUP BY source"
        if n is None:
            return self._select(f"{sql} {OLDEST_FIRST}", tuple(params), latest=unique)
        return self._select(f"{sql} {NEWEST_FIRST} LIMIT ?", (*params, n), latest=unique)[::-1] if n > 0 else []

    def _select(self, where: str, params: tuple[Any, ...], latest: bool = False) -> list[Entry]:
        # With GROUP BY, MAX() makes SQLite take the other columns from each group's latest row (as IPython).
        columns = "session, line, source, output" + (", MAX(session * 131072 + line)" if latest else "")
        rows = self._db.execute(f"SELECT {columns} FROM history {where}", params).fetchall()
        return [Entry(int(r[0]), int(r[1]), str(r[2]), r[3]) for r in rows]


def default_path() -> Path | None:
    """The history file in the BoxLite home (None when the home cannot be found: history stays in memory)."""
    try:
        from boxlite import Boxlite

        return Path(Boxlite.default().home) / FILE_NAME
    except Exception as exc:  # no history file is no reason not to run the kernel
        log.warning("cannot find the BoxLite home for the kernel's history: %s", exc)
        return None


def _open(path: str | os.PathLike[str] | None) -> sqlite3.Connection:
    """The history database; in memory when there is no path or the file cannot be used (IPython does the same)."""
    if path is not None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # the code typed is nobody else's business
            os.close(fd)
            db = sqlite3.connect(str(path), timeout=1.0, check_same_thread=False)
            # WAL without a sync per cell: a crash may lose the last cells, never the file (a few us per cell).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            return db
        except (OSError, sqlite3.Error) as exc:
            log.warning("the kernel's history file %s cannot be used (%s): history is kept in memory", path, exc)
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.executescript(SCHEMA)
    return db


def _int(value: Any) -> int | None:
    """A request's number; None when it is missing or not a number (then the default applies)."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
