"""Layer details the registry work filled in: extended attributes carried onto the disk, device-node policy."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from boxlite._errors import ImageError
from boxlite.images import ImageStore
from boxlite.images.oci import host_architecture
from boxlite.images.unpack import member_xattrs

DEBUGFS = shutil.which("debugfs") or "/usr/sbin/debugfs"
pytestmark = pytest.mark.skipif(not os.path.exists(DEBUGFS), reason="needs e2fsprogs (debugfs)")


def layout_with(tmp_path: Path, members: list[tarfile.TarInfo]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in members:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    plain = buf.getvalue()
    layout = tmp_path / "oci"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer = gzip.compress(plain)
    config = {"architecture": host_architecture(), "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()]}}
    manifest = {"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                **put(json.dumps(config).encode())},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(layer)}]}
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(json.dumps(manifest).encode())}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    return layout


def file_member(name: str, pax: dict[str, str] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode = 1, 0o755
    info.pax_headers = pax or {}
    return info


def test_member_xattrs_reads_schily_and_libarchive_records() -> None:
    capability = b"\x01\x00\x00\x02\x00\x20\x00\x00"
    info = file_member("bin/ping", {
        "SCHILY.xattr.security.capability": capability.decode("utf-8", "surrogateescape"),
        "LIBARCHIVE.xattr.user.note%3Dx": base64.b64encode(b"hello").decode().rstrip("="),
    })
    assert member_xattrs(info) == [("security.capability", capability), ("user.note=x", b"hello")]


@pytest.mark.skipif(os.geteuid() != 0, reason="setting security.* attributes needs root")
def test_xattrs_reach_the_disk(tmp_path: Path) -> None:
    capability = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    layout = layout_with(tmp_path, [file_member("ping", {
        "SCHILY.xattr.security.capability": capability.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.origin": "registry",
    })])
    image = ImageStore(tmp_path / "home").import_layout(layout)
    import subprocess

    listing = subprocess.run([DEBUGFS, "-R", "ea_list /ping", str(image.disk_path)], capture_output=True,
                             text=True, check=True).stdout
    assert "user.origin" in listing and "registry" in listing
    assert "security.capability" in listing


def test_device_nodes_outside_dev_are_rejected(tmp_path: Path) -> None:
    node = tarfile.TarInfo("tmp/sda")
    node.type, node.devmajor, node.devminor, node.mode = tarfile.BLKTYPE, 8, 0, 0o666
    with pytest.raises(ImageError, match="device node outside /dev: 'tmp/sda' \\(block 8:0\\)"):
        ImageStore(tmp_path / "home").import_layout(layout_with(tmp_path, [node]))
    assert not (tmp_path / "home" / "images" / "tmp").exists() or not any((tmp_path / "home/images/tmp").iterdir())
