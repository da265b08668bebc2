"""Where the provisioned assets live, how to find them, and `ensure_assets` that builds what is missing."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from boxlite import _progress
from boxlite._errors import EngineError, StorageError
from boxlite.provision._common import Progress
from boxlite.provision.guest_root import base_ready, ensure_guest_root, guest_root_path
from boxlite.provision.kernel import ensure_kernel, kernel_key
from boxlite.provision.vsock_device import ensure_vsock_device, installed_binary

# passt: the user-mode NAT of boxes whose network is enabled (boxlite/engine/network.py).
APT_PACKAGES = ("qemu-system-x86 qemu-utils mmdebstrap e2fsprogs linux-source-6.1 bc flex bison libelf-dev libssl-dev "
                "passt")


@dataclass(frozen=True)
class Assets:
    qemu: Path
    qemu_img: Path
    kernel: Path
    guest_root: Path
    vsock_device: Path | None


def _tool(name: str) -> Path:
    found = shutil.which(name)
    if not found:
        raise EngineError(f"{name} is not installed", fix=f"apt-get install {APT_PACKAGES}")
    return Path(found)


def ensure_assets(home: Path, progress: Progress = print) -> Assets:
    """Build or fetch everything a box needs. Idempotent: a second run only checks."""
    assets, cache = home / "assets", home / "cache"
    assets.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    qemu, qemu_img = _tool("qemu-system-x86_64"), _tool("qemu-img")
    kernel = ensure_kernel(assets, cache, progress)
    progress(f"kernel: {kernel.name}")
    guest_root = ensure_guest_root(assets, cache, progress)
    vsock = ensure_vsock_device(assets, cache, progress)
    progress(f"vsock device: {vsock}")
    return Assets(qemu=qemu, qemu_img=qemu_img, kernel=kernel, guest_root=guest_root, vsock_device=vsock)


def find_assets(home: Path) -> Assets:
    """The assets a box needs, without a setup run; raise with the fix when any is missing.

    It builds one thing: the guest root of a new version of the agent, when the Debian base it is made from is
    cached (seconds, not a setup run), so changing the agent needs no `boxlite setup`. That build can fail like
    any other. `boxlite doctor` does not call this: it only looks."""
    assets = home / "assets"
    qemu, qemu_img = _tool("qemu-system-x86_64"), _tool("qemu-img")
    kernel = assets / f"vmlinux-6.1-{kernel_key()}"
    guest_root = guest_root_path(assets)
    if not guest_root.exists() and base_ready(home / "cache"):
        # A new version of the agent: re-making the disk from the cached base takes seconds, not a setup run.
        guest_root = ensure_guest_root(assets, home / "cache", _progress.report)
    vsock = installed_binary() or (assets / "vhost-device-vsock")
    missing = [what for what, ok in (("guest kernel", kernel.exists()), ("guest root", guest_root.exists()),
                                     ("vhost-device-vsock", vsock.exists())) if not ok]
    if missing:
        raise StorageError(f"{', '.join(missing)} not provisioned under {assets}",
                           fix="run `boxlite setup` once (it builds them and caches them)")
    return Assets(qemu=qemu, qemu_img=qemu_img, kernel=kernel, guest_root=guest_root, vsock_device=vsock)
