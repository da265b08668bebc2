"""Resolve a user spec ("name", "uid", "uid:gid", "name:group") against the image's own passwd and group files."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    name: str


class UnknownUser(Exception):  # noqa: N818 - reads as the condition it reports
    pass


_cache: dict[str, tuple[tuple[int, int], list[list[str]]]] = {}


def _read_table(path: str) -> list[list[str]]:
    """The rows of a colon-separated table, re-read only when the file changes (a stat per command)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    key = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    with open(path, encoding="utf-8", errors="replace") as f:
        rows = [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    _cache[path] = (key, rows)
    return rows


def resolve(root: str, spec: str) -> Identity:
    passwd = [row for row in _read_table(f"{root}/etc/passwd") if len(row) >= 7]
    groups = [row for row in _read_table(f"{root}/etc/group") if len(row) >= 4]
    user_part, _, group_part = (spec or "root").partition(":")

    entry = next((row for row in passwd if row[0] == user_part), None)
    if entry is None and user_part.isdigit():
        entry = next((row for row in passwd if row[2] == user_part), None)
    if entry is None and not user_part.isdigit():
        raise UnknownUser(f"unable to find user {user_part}: no matching entries in passwd file")
    uid = int(entry[2]) if entry else int(user_part)
    gid = int(entry[3]) if entry else uid
    name = entry[0] if entry else user_part
    home = entry[5] if entry else "/"

    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            group = next((row for row in groups if row[0] == group_part), None)
            if group is None:
                raise UnknownUser(f"unable to find group {group_part}: no matching entries in group file")
            gid = int(group[2])
    extra = tuple(sorted({int(row[2]) for row in groups if name in row[3].split(",")} - {gid}))
    return Identity(uid=uid, gid=gid, groups=extra, home=home, name=name)
