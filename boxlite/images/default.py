"""The built-in default image, made locally from Debian packages (no container registry involved).

mmdebstrap writes a minimal bookworm root filesystem with python3 as a tarball; that tarball is wrapped
as a one-layer OCI image layout, which the store then imports like any other layout.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boxlite._errors import ImageError
from boxlite.images._files import remove_path, scratch_name
from boxlite.images.model import DEFAULT_IMAGE
from boxlite.images.oci import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_TAR,
    MEDIA_OCI_MANIFEST,
    host_architecture,
)

SUITE = "bookworm"
PACKAGES = ("python3", "ca-certificates")
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
DEFAULT_WORKDIR = "/root"
DEFAULT_CMD = ["python3"]

_HOST_DEB822 = Path("/etc/apt/sources.list.d/debian.sources")
_HOST_SOURCES_LIST = Path("/etc/apt/sources.list")
_ONE_LINE_DEB = re.compile(r"^deb(\s+\[[^\]]*\])?\s+\S+\s+" + SUITE + r"(-updates|-security|/updates)?\s")


def mirror_arguments() -> tuple[list[str], str | None]:
    """mmdebstrap MIRROR arguments taken from this host's apt sources (no host is named here).

    Returns (arguments, stdin text). With no usable host sources, no MIRROR is passed and mmdebstrap
    uses Debian's default mirror.
    """
    with contextlib.suppress(OSError):
        if SUITE in _HOST_DEB822.read_text():
            return [str(_HOST_DEB822)], None  # an existing file is pasted into the chroot's sources
    with contextlib.suppress(OSError):
        lines = [line for line in _HOST_SOURCES_LIST.read_text().splitlines() if _ONE_LINE_DEB.match(line.strip())]
        if lines:
            return ["-"], "\n".join(lines) + "\n"  # "-" reads sources from standard input
    return [], None


def build_default_layout(dest: Path, tmp_dir: Path, progress: Callable[[str], None]) -> None:
    """Build the default image's OCI layout into dest (replacing whatever is there)."""
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageError(
            f"cannot build the default image {DEFAULT_IMAGE}: mmdebstrap is not installed",
            fix="apt-get install mmdebstrap (or pass rootfs_path with an OCI layout directory)",
        )
    work = scratch_name(tmp_dir, "default-layout")
    work.mkdir(parents=True)
    try:
        tar_path = work / "rootfs.tar"
        progress(f"building default image {DEFAULT_IMAGE} from Debian packages (about a minute, once)")
        _run_mmdebstrap(mmdebstrap, tar_path, progress)
        progress("wrapping the root filesystem as an OCI layout")
        layout = work / "layout"
        write_single_layer_layout(
            layout,
            tar_path,
            run_config={"Env": DEFAULT_ENV, "WorkingDir": DEFAULT_WORKDIR, "Cmd": DEFAULT_CMD},
            created_by=f"mmdebstrap --variant=minbase --include={','.join(PACKAGES)} {SUITE}",
            ref_name=DEFAULT_IMAGE.rsplit(":", 1)[1],
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_path(dest)
        os.rename(layout, dest)
    finally:
        remove_path(work)


def _run_mmdebstrap(mmdebstrap: str, tar_path: Path, progress: Callable[[str], None]) -> None:
    mirrors, stdin_text = mirror_arguments()
    cmd = [
        mmdebstrap,
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(tar_path),
        *mirrors,
    ]
    tail: collections.deque[str] = collections.deque(maxlen=15)
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as e:
        raise ImageError(f"could not run mmdebstrap: {e}", fix="apt-get install mmdebstrap") from e
    try:
        if stdin_text is not None and proc.stdin is not None:
            proc.stdin.write(stdin_text)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail.append(line)
            if line.startswith("I: removing tempdir"):
                progress("mmdebstrap: removing its temporary chroot")
            elif line.startswith(("I: ", "W: ", "E: ")) and "tempdir" not in line:
                progress(f"mmdebstrap: {line[3:]}")
        returncode = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if returncode != 0:
        raise ImageError(
            f"mmdebstrap failed with exit code {returncode}: " + " | ".join(list(tail)[-4:]),
            fix="check that this host can reach its Debian package mirror (apt-get update works), "
            "or pass rootfs_path with an OCI layout directory",
        )


def write_single_layer_layout(
    layout: Path, layer_tar: Path, *, run_config: dict[str, Any], created_by: str, ref_name: str
) -> str:
    """Write an OCI layout whose one uncompressed layer is layer_tar (moved in). Returns the manifest digest."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_digest, layer_size = _file_digest(layer_tar)
    os.rename(layer_tar, blobs / layer_digest.split(":", 1)[1])
    arch = host_architecture()
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": created, "created_by": created_by}],
    }
    config_digest, config_size = _put_json(blobs, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_OCI_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = _put_json(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": ref_name},
            }
        ],
    }
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    (layout / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return manifest_digest


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def _put_json(blobs: Path, value: dict[str, Any]) -> tuple[str, int]:
    data = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    hex_digest = hashlib.sha256(data).hexdigest()
    (blobs / hex_digest).write_bytes(data)
    return f"sha256:{hex_digest}", len(data)
