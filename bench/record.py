"""Writing a bench run's raw results: one JSON file per run under bench/results/, named by its start time and
script (`20261207T141500Z-run.json`), committed with the code; bench/report.py makes RESULTS.md's tables from them.

The document:
    {"script": "run", "command": "python3 bench/run.py --runs 3", "started_utc": ISO time, "duration_s": s,
     "host": {"cpus", "accel", "load_avg_start", "load_avg_end", "commit"}, "args": {...}, "rows": {name: row}}
(a row is described in bench/measure.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


def result_name(script: str, started: datetime) -> str:
    """The file name of a run of `script` started at `started` (UTC): sorts by time."""
    if not script.isidentifier():
        raise ValueError(f"script name {script!r} must be a plain identifier (it names result files)")
    return f"{started.astimezone(UTC).strftime(STAMP_FORMAT)}-{script}.json"


def parse_result_name(name: str) -> tuple[datetime, str] | None:
    """(start time, script) of a result file name, or None for any other file."""
    stem, dot, ext = name.partition(".")
    stamp, dash, script = stem.partition("-")
    if ext != "json" or not dot or not dash or not script.isidentifier():
        return None
    try:
        return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC), script
    except ValueError:
        return None


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(RESULTS_DIR.parent), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass
class Run:
    """One run of a bench script: start it, add rows, then write() its JSON."""

    script: str
    args: dict[str, Any]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)
    _load0: float = field(default_factory=lambda: round(os.getloadavg()[0], 2))

    def add(self, name: str, row: dict[str, Any]) -> dict[str, Any]:
        self.rows[name] = row
        return row

    def document(self) -> dict[str, Any]:
        host = {"cpus": os.cpu_count(), "load_avg_start": self._load0, "load_avg_end": round(os.getloadavg()[0], 2),
                "commit": _commit(), **self.host}
        return {"script": self.script, "command": " ".join(["python3", f"bench/{Path(sys.argv[0]).name}",
                                                            *sys.argv[1:]]),
                "started_utc": self.started.isoformat(timespec="seconds"),
                "duration_s": round(time.monotonic() - self._t0, 1), "host": host, "args": self.args,
                "rows": self.rows}

    def write(self, results_dir: Path = RESULTS_DIR, also: Path | None = None) -> Path:
        """Write the document to results_dir (and to `also`, the script's --json, when given); returns the path."""
        text = json.dumps(self.document(), indent=1) + "\n"
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / result_name(self.script, self.started)
        path.write_text(text)
        if also is not None:
            also.write_text(text)
        print(f"raw results: {path}", file=sys.stderr)
        return path
