"""The Image record: a resolved image whose root filesystem is ready as an ext4 disk."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

DEFAULT_IMAGE = "boxlite/python:3.11-bookworm"


class Image(BaseModel):
    """A ready image. disk_path is a read-only base: boxes put a qcow2 overlay on top of it."""

    model_config = ConfigDict(frozen=True)

    reference: str
    digest: str
    disk_path: Path
    disk_bytes: int
    env: list[str]
    working_dir: str
    user: str
    entrypoint: list[str]
    cmd: list[str]
