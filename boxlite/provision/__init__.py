"""First-time provisioning (`boxlite setup`): the guest kernel, the shared guest root and host helper binaries.

Everything lands under `<home>/assets`, is keyed by what it was built from, and is built once.
"""

from boxlite.provision._common import Progress
from boxlite.provision.assets import Assets, ensure_assets, find_assets

__all__ = ["Assets", "Progress", "ensure_assets", "find_assets"]
