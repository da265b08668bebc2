"""OCI images turned into box disks: pull from registries, load archives, import OCI layouts, cache ext4 disks.

`ImageStore(home).get(ref)` returns a ready Image (disk_path is an ext4 file): built-in images (DEFAULT_IMAGE,
CODEBOX_IMAGE; `ImageStore.builtin_names()` lists them) are built from Debian packages on first use,
`oci-layout:DIR` / `archive:FILE` are imported, and any registry reference (`python:slim`,
`127.0.0.1:5000/team/app:1.0`, `host/x@sha256:...`) is pulled when not cached.
`pull`, `load`, `remove`, `prune` and `list` manage the cache (see store.py for its layout, config.py for
registry settings: mirrors, plain-http hosts, credentials).
"""

from boxlite.images.builtin import BUILTIN_IMAGES, BuiltinImage
from boxlite.images.config import RegistryConfig
from boxlite.images.model import CODEBOX_IMAGE, DEFAULT_IMAGE, Image, LayerProgress, RemovedImage
from boxlite.images.reference import Reference, parse_reference
from boxlite.images.store import ImageStore

__all__ = [
    "BUILTIN_IMAGES",
    "CODEBOX_IMAGE",
    "DEFAULT_IMAGE",
    "BuiltinImage",
    "Image",
    "ImageStore",
    "LayerProgress",
    "Reference",
    "RegistryConfig",
    "RemovedImage",
    "parse_reference",
]
