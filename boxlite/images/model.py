"""The Image record: a resolved image whose root filesystem is ready as an ext4 disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DEFAULT_IMAGE = "boxlite/python:3.11-bookworm"  # built-in: python3 on a minimal Debian (see builtin.py)
CODEBOX_IMAGE = "boxlite/codebox:3.11-bookworm"  # built-in: python3 with ipykernel, numpy, pandas, matplotlib


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


@dataclass(frozen=True)
class LayerProgress:
    """One layer's download state during a pull, for progress bars (sent from download threads).

    status: "waiting", "downloading", "done" (fetched now), "cached" (already in the blob store) or "failed".
    """

    index: int  # 1-based position in the manifest
    count: int  # layers in the image
    digest: str
    total_bytes: int
    done_bytes: int
    status: str


@dataclass(frozen=True)
class RemovedImage:
    """What ImageStore.remove did: the names it dropped, the digest it deleted (None if other names remain), and
    the start templates based on that image it discarded with it."""

    untagged: list[str]
    deleted: str | None
    bytes_freed: int
    templates_discarded: list[str] = field(default_factory=list)
