"""OCI images turned into box disks: import OCI layouts, build the default image, cache ext4 disks.

`ImageStore(home).get(DEFAULT_IMAGE)` builds the default image from Debian packages on first use;
`ImageStore(home).import_layout(path)` imports any OCI image layout directory. Both return an Image
whose disk_path is a ready ext4 file.
"""

from boxlite.images.model import DEFAULT_IMAGE, Image
from boxlite.images.store import ImageStore

__all__ = ["DEFAULT_IMAGE", "Image", "ImageStore"]
