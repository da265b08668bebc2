"""Helpers shared by the provisioning steps: running build commands with progress, locks, atomic files."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from boxlite._errors import EngineError, StorageError

Progress = Callable[[str], None]


def run_logged(argv: list[str], log: Path, progress: Progress, *, what: str, cwd: Path | None = None,
               echo: Callable[[str], bool] | None = None) -> None:
    """Run a build command, keep its whole output in `log`, pass selected lines to `progress`."""
    with open(log, "ab") as log_file:
        start = log_file.tell()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd)
        except FileNotFoundError:
            raise EngineError(f"{what} needs {argv[0]}, which is not installed",
                              fix=f"install the Debian package that provides {argv[0]}, or rerun `boxlite setup`"
                              ) from None
        assert proc.stdout is not None
        for raw in proc.stdout:
            log_file.write(raw)
            line = raw.decode(errors="replace").rstrip()
            if echo is not None and echo(line):
                progress(line)
        code = proc.wait()
    if code != 0:
        with open(log, "rb") as f:
            f.seek(start)
            tail = f.read().decode(errors="replace").strip().splitlines()[-5:]
        raise StorageError(
            f"{what} failed (exit {code}): " + " | ".join(tail),
            fix=f"see the full log in {log}; rerun `boxlite setup` after fixing the cause",
        )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so two processes never build the same asset at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def digest_of(*parts: bytes | str | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
                if part.is_dir() else [part]
            for f in files:
                h.update(str(f.relative_to(part) if part.is_dir() else f.name).encode())
                h.update(f.read_bytes())
        else:
            h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:16]


def debian_mirror() -> str:
    """The Debian mirror this host's apt already uses, so nothing here names a package host of its own."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if path.suffix == ".sources" and words[:1] == ["URIs:"]:
                uri = words[1]
            elif words[:1] == ["deb"]:
                uri = next((w for w in words[1:] if "://" in w), "")
            else:
                continue
            if uri and "security" not in uri and "/debian" in uri:
                return uri.rstrip("/")
    raise StorageError("no Debian mirror found in /etc/apt", fix="configure apt sources for Debian")
