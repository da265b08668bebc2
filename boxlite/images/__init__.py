"""OCI images turned into box disks: pull from registries, load archives, import OCI layouts, cache ext4 disks.

`ImageStore(home).get(ref)` returns a ready Image (disk_path is an ext4 file): the built-in default image is
built from Debian packages on first use, `oci-layout:DIR` / `archive:FILE` are imported, and any registry
reference (`python:slim`, `127.0.0.1:5000/team/app:1.0`, `host/x@sha256:...`) is pulled when not cached.
`pull`, `load`, `remove`, `prune` and `list` manage the cache (see store.py for its layout, config.py for
registry settings: mirrors, plain-http hosts, credentials).
"""

from boxlite.images.config import RegistryConfig
from boxlite.images.model import DEFAULT_IMAGE, Image, LayerProgress, RemovedImage
from boxlite.images.reference import Reference, parse_reference
from boxlite.images.store import ImageStore

__all__ = [
    "DEFAULT_IMAGE",
    "Image",
    "ImageStore",
    "LayerProgress",
    "Reference",
    "RegistryConfig",
    "RemovedImage",
    "parse_reference",
]
