"""The state database: every box's configuration and life, in SQLite under the home directory.

Several processes share it (the user's programs, the CLI, each box's shim), so it runs in WAL mode with a
busy timeout, and every change is one short transaction. This module stays free of heavy imports: the shim
loads it on every box start.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boxlite._errors import AlreadyExistsError, NotFoundError, StorageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS boxes (
    id            TEXT PRIMARY KEY,
    name          TEXT UNIQUE,
    status        TEXT NOT NULL,
    config        TEXT NOT NULL,
    image         TEXT NOT NULL,
    box_dir       TEXT NOT NULL,
    created_at    REAL NOT NULL,
    started_at    REAL,
    stopped_at    REAL,
    engine        TEXT,
    engine_reason TEXT,
    shim_pid      INTEGER,
    shim_start    INTEGER,
    vmm_pid       INTEGER,
    boot_id       TEXT,
    guest_boot_ms REAL,
    create_ms     REAL,
    error         TEXT,
    boot          TEXT
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# The states a box moves through (those of the reference design).
CONFIGURED, STARTING, RUNNING, STOPPING, STOPPED, FAILED = (
    "configured", "starting", "running", "stopping", "stopped", "failed")
ACTIVE = (STARTING, RUNNING, STOPPING)


@dataclass
class BoxRecord:
    id: str
    name: str | None
    status: str
    config: dict[str, Any]
    image: dict[str, Any]
    box_dir: str
    created_at: float
    started_at: float | None = None
    stopped_at: float | None = None
    engine: str | None = None
    engine_reason: str | None = None
    shim_pid: int | None = None
    shim_start: int | None = None
    vmm_pid: int | None = None
    boot_id: str | None = None
    guest_boot_ms: float | None = None
    create_ms: float | None = None
    error: str | None = None
    # "cold" (booted) or "restored" (from a snapshot or template), for the latest start.
    boot: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_COLUMNS = [f for f in BoxRecord.__dataclass_fields__ if f != "extra"]


def host_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start_ticks(pid: int) -> int | None:
    """The start time of a process (clock ticks since boot), so a recycled pid is never mistaken for ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int | None, start_ticks: int | None) -> bool:
    if not pid:
        return False
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and (start_ticks is None or ticks == start_ticks)


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(boxes)")}
            if "boot" not in columns:  # a database made before snapshots existed
                with contextlib.suppress(sqlite3.OperationalError):  # another process added it meanwhile
                    self._db.execute("ALTER TABLE boxes ADD COLUMN boot TEXT")
        except (sqlite3.Error, OSError) as exc:  # OSError: the home is a file, or cannot be made
            raise StorageError(f"cannot open the state database {path}: {exc}",
                               fix="check that the home directory is writable (BOXLITE_HOME)") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"state database error: {exc}", fix=f"check {self.path}") from exc

    @staticmethod
    def _row(row: tuple[Any, ...]) -> BoxRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["config"] = json.loads(values["config"])
        values["image"] = json.loads(values["image"])
        return BoxRecord(**values)

    def insert(self, rec: BoxRecord) -> None:
        values = [getattr(rec, c) for c in _COLUMNS]
        values[_COLUMNS.index("config")] = json.dumps(rec.config)
        values[_COLUMNS.index("image")] = json.dumps(rec.image)
        with self._tx() as db:
            if rec.name and db.execute("SELECT 1 FROM boxes WHERE name = ?", (rec.name,)).fetchone():
                raise AlreadyExistsError(f"box already exists: {rec.name}",
                                         fix="choose another name, or remove the existing box first")
            db.execute(f"INSERT INTO boxes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       values)

    def update(self, box_id: str, **fields: Any) -> None:
        if not fields:
            return
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE boxes SET {assignments} WHERE id = ?", [*fields.values(), box_id])

    def delete(self, box_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM boxes WHERE id = ?", (box_id,))

    def find(self, id_or_name: str) -> BoxRecord | None:
        """By exact id, exact name, or a unique id prefix (as Docker allows)."""
        if not isinstance(id_or_name, str) or "\0" in id_or_name:
            return None
        try:
            id_or_name.encode()  # ids and names are ASCII; argv's undecodable bytes arrive as lone surrogates
        except UnicodeEncodeError:
            return None
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM boxes WHERE id = ? OR name = ?",
                                    (id_or_name, id_or_name)).fetchall()
            if not rows and len(id_or_name) >= 4:
                rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM boxes WHERE substr(id, 1, ?) = ?",
                                        (len(id_or_name), id_or_name)).fetchall()
        if len(rows) > 1:
            raise NotFoundError(f"box not found: {id_or_name} is ambiguous ({len(rows)} boxes match)",
                                fix="give more characters of the id, or the name")
        return self.reconcile(self._row(rows[0])) if rows else None

    def name_taken(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM boxes WHERE name = ?", (name,)).fetchone() is not None

    def get(self, id_or_name: str) -> BoxRecord:
        rec = self.find(id_or_name)
        if rec is None:
            raise NotFoundError(f"box not found: {id_or_name}", fix="`boxlite ls -a` lists the boxes that exist")
        return rec

    def all(self) -> list[BoxRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM boxes ORDER BY created_at").fetchall()
        return [self.reconcile(self._row(r)) for r in rows]

    def reconcile(self, rec: BoxRecord) -> BoxRecord:
        """Correct a record whose VM is gone: after a host reboot it is stopped; after a crash, failed."""
        if rec.status not in ACTIVE:
            return rec
        if rec.boot_id and rec.boot_id != host_boot_id():
            changes: dict[str, Any] = {"status": STOPPED, "stopped_at": time.time(), "shim_pid": None,
                                       "vmm_pid": None}
        elif rec.shim_pid and not process_alive(rec.shim_pid, rec.shim_start):
            changes = {"status": FAILED, "stopped_at": time.time(), "shim_pid": None, "vmm_pid": None,
                       "error": rec.error or "the box's supervisor process died unexpectedly"}
        else:
            return rec
        assignments = ", ".join(f"{k} = ?" for k in changes)
        with self._tx() as db:
            # Only the process that makes the change counts it (several may notice the same dead shim).
            changed = db.execute(f"UPDATE boxes SET {assignments} WHERE id = ? AND status = ? AND shim_pid IS ?",
                                 [*changes.values(), rec.id, rec.status, rec.shim_pid]).rowcount
            if changed and changes["status"] == FAILED and rec.status != STOPPING:
                # Its shim was killed before it could count the failure itself.
                db.execute("INSERT INTO counters (name, value) VALUES ('boxes_failed', 1) "
                           "ON CONFLICT(name) DO UPDATE SET value = value + 1")
        for key, value in changes.items():
            setattr(rec, key, value)
        return rec

    def bump(self, name: str, by: int = 1) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def bump_each(self, *names: str) -> None:
        """Add one to each counter, in one transaction (one disk sync: this runs once per command)."""
        with self._tx() as db:
            db.executemany("INSERT INTO counters (name, value) VALUES (?, 1) "
                           "ON CONFLICT(name) DO UPDATE SET value = value + 1", [(n,) for n in names])

    def delete_counters(self, prefix: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM counters WHERE substr(name, 1, ?) = ?", (len(prefix), prefix))

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())


def default_home() -> Path:
    return Path(os.environ.get("BOXLITE_HOME") or Path.home() / ".boxlite")
