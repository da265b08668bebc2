"""boxlite.images: OCI layouts -> ext4 disks. Tiny layouts are built here in tmp_path; no VM needed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from boxlite._errors import ImageError
from boxlite.images import DEFAULT_IMAGE, Image, ImageStore
from boxlite.images.oci import host_architecture

DEBUGFS = shutil.which("debugfs") or "/usr/sbin/debugfs"
TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"

pytestmark = pytest.mark.skipif(
    not os.path.exists(DEBUGFS) or (shutil.which("mke2fs") is None and not os.path.exists("/usr/sbin/mke2fs")),
    reason="needs e2fsprogs (mke2fs, debugfs)",
)


# -- building layers and layouts -----------------------------------------------------------------


def reg(name: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 1_700_000_000
    return info, data


def directory(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, gid
    return info, b""


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, b""


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, b""


def device(name: str, major: int, minor: int) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, major, minor, 0o666
    return info, b""


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def put_json(layout: Path, media_type: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"mediaType": media_type, **put_blob(layout, json.dumps(value).encode())}


def set_index(layout: Path, *descriptors: dict[str, Any]) -> None:
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": list(descriptors)}))


def read_manifest(layout: Path) -> dict[str, Any]:
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest: dict[str, Any] = json.loads((layout / "blobs" / "sha256" / digest[7:]).read_text())
    return manifest


def make_layout(
    layout: Path,
    layers: list[bytes],
    *,
    compress: list[bool] | None = None,
    media_types: list[str] | None = None,
    run_config: dict[str, Any] | None = None,
) -> str:
    """Write an OCI layout with the given uncompressed layer tars; returns the manifest digest."""
    compress = compress or [False] * len(layers)
    layout.mkdir(parents=True, exist_ok=True)
    layer_descs, diff_ids = [], []
    for i, (plain, gz) in enumerate(zip(layers, compress, strict=True)):
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
        blob = gzip.compress(plain) if gz else plain
        media_type = media_types[i] if media_types else (TAR_GZIP if gz else TAR)
        layer_descs.append({"mediaType": media_type, **put_blob(layout, blob)})
    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "config": run_config
        if run_config is not None
        else {"Env": ["PATH=/usr/bin:/bin", "FOO=bar"], "WorkingDir": "/srv", "User": "1000", "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": put_json(layout, CONFIG, config),
        "layers": layer_descs,
    }
    manifest_desc = put_json(layout, MANIFEST, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    set_index(layout, manifest_desc)
    return str(manifest_desc["digest"])


def debugfs(disk: Path, request: str) -> str:
    result = subprocess.run([DEBUGFS, "-R", request, str(disk)], capture_output=True, text=True, check=True)
    return result.stdout


def names_in(disk: Path, path: str) -> set[str]:
    out = debugfs(disk, f"ls -l {path}")
    return {line.split()[-1] for line in out.splitlines() if line.strip()} - {".", ".."}


def assert_no_leftovers(home: Path) -> None:
    images = home / "images"
    assert list((images / "tmp").iterdir()) == [] if (images / "tmp").exists() else True
    disks = images / "disks"
    assert not disks.exists() or list(disks.iterdir()) == []
    manifests = images / "manifests"
    assert not manifests.exists() or list(manifests.iterdir()) == []


BASE_LAYER = [
    directory("./"),
    directory("etc"),
    reg("etc/hello", b"hello world\n"),
    directory("bin"),
    reg("bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755),
]


# -- tests -----------------------------------------------------------------------------------------


def test_import_layout_builds_an_ext4_disk(tmp_path: Path) -> None:
    digest = make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)])
    home = tmp_path / "home"
    lines: list[str] = []
    image = ImageStore(home).import_layout(tmp_path / "oci", progress=lines.append)

    assert isinstance(image, Image)
    assert image.digest == digest
    assert image.reference == f"oci-layout:{(tmp_path / 'oci').resolve()}@{digest}"
    assert image.disk_path == home / "images" / "disks" / f"{digest[7:]}.ext4"
    assert image.disk_path.is_file() and image.disk_path.stat().st_size == image.disk_bytes
    assert image.disk_bytes % (1024 * 1024) == 0 and image.disk_bytes >= 256 * 1024 * 1024
    assert image.env == ["PATH=/usr/bin:/bin", "FOO=bar"]
    assert (image.working_dir, image.user, image.entrypoint, image.cmd) == ("/srv", "1000", [], ["sh"])
    assert {"etc", "bin"} <= names_in(image.disk_path, "/")
    assert debugfs(image.disk_path, "cat /etc/hello") == "hello world\n"
    assert " 100755 " in debugfs(image.disk_path, "ls -l /bin")
    assert any(line.startswith("unpacking layer 1/1 sha256:") for line in lines)
    assert any(line.startswith("building disk ") for line in lines)
    assert (home / "images" / "manifests" / f"{digest[7:]}.json").is_file()
    assert list((home / "images" / "tmp").iterdir()) == []
    assert [i.digest for i in ImageStore(home).list()] == [digest]


def test_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    lower = make_tar(
        [
            directory("a"),
            reg("a/keep", b"k"),
            reg("a/gone", b"g"),
            directory("a/gonedir"),
            reg("a/gonedir/x", b"x"),
            directory("d"),
            reg("d/old1", b"1"),
            directory("d/sub"),
            reg("d/sub/old2", b"2"),
        ]
    )
    upper = make_tar(
        [
            reg("a/.wh.gone"),
            reg("a/.wh.gonedir"),
            reg("d/new1", b"n1"),  # same layer, before the marker: must survive
            reg("d/.wh..wh..opq"),
            reg("d/new2", b"n2"),
            reg("a/.wh.never-existed"),
        ]
    )
    # the lower layer is gzip with a plain-tar mediaType: compression is detected from the bytes
    make_layout(tmp_path / "oci", [lower, upper], compress=[True, False], media_types=[TAR, TAR_GZIP])
    image = ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    assert names_in(image.disk_path, "/a") == {"keep"}
    assert names_in(image.disk_path, "/d") == {"new1", "new2"}


def test_links_modes_and_ownership(tmp_path: Path) -> None:
    layer = make_tar(
        [
            directory("data", mode=0o750, uid=1000, gid=1000),
            reg("data/file", b"payload", mode=0o4755, uid=1000, gid=1001),
            hardlink("data/hard", "data/file"),
            symlink("data/soft", "file"),
            symlink("abs", "/data/file"),
            device("dev/null", 1, 3),
        ]
    )
    make_layout(tmp_path / "oci", [layer])
    image = ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    disk = image.disk_path

    stat_file = debugfs(disk, "stat /data/file")
    assert "User:  1000   Group:  1001" in stat_file
    assert "Mode:  04755" in stat_file
    assert "Links: 2" in stat_file
    inode = debugfs(disk, "ls -l /data").split("\n")
    inodes = {line.split()[-1]: line.split()[0] for line in inode if line.strip()}
    assert inodes["file"] == inodes["hard"]
    assert "Type: symlink" in debugfs(disk, "stat /data/soft")
    assert 'Fast link dest: "file"' in debugfs(disk, "stat /data/soft")
    assert 'Fast link dest: "/data/file"' in debugfs(disk, "stat /abs")
    stat_dir = debugfs(disk, "stat /data")
    assert "User:  1000   Group:  1000" in stat_dir and "Mode:  0750" in stat_dir
    if os.geteuid() == 0:
        assert "Type: character special" in debugfs(disk, "stat /dev/null")


def test_later_layers_replace_entries(tmp_path: Path) -> None:
    lower = make_tar([directory("x"), reg("x/f", b"1"), reg("y", b"file"), symlink("z", "/etc")])
    upper = make_tar([reg("x", b"now a file"), directory("y"), reg("y/in", b"i"), reg("z", b"no longer a link")])
    make_layout(tmp_path / "oci", [lower, upper])
    image = ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    assert debugfs(image.disk_path, "cat /x") == "now a file"
    assert names_in(image.disk_path, "/y") == {"in"}
    assert debugfs(image.disk_path, "cat /z") == "no longer a link"


def test_symlinks_inside_the_image_are_followed_within_the_root(tmp_path: Path) -> None:
    # Debian has var/run -> /run; a later layer writing var/run/x must land in ROOT/run/x
    lower = make_tar([directory("run"), directory("var"), symlink("var/run", "/run"), symlink("lib", "usr/lib")])
    upper = make_tar([reg("var/run/pidfile", b"1"), directory("usr"), directory("usr/lib"), reg("lib/libx.so", b"")])
    make_layout(tmp_path / "oci", [lower, upper])
    image = ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    assert names_in(image.disk_path, "/run") == {"pidfile"}
    assert names_in(image.disk_path, "/usr/lib") == {"libx.so"}


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param(lambda out: [reg("/etc/evil", b"x")], id="absolute-path"),
        pytest.param(lambda out: [reg("../evil", b"x")], id="dotdot"),
        pytest.param(lambda out: [directory("a"), reg("a/../../evil", b"x")], id="nested-dotdot"),
        pytest.param(lambda out: [symlink("link", str(out)), reg("link/evil", b"x")], id="symlink-absolute"),
        pytest.param(lambda out: [symlink("up", "../../../../../../.."), reg("up/evil", b"x")], id="symlink-relative"),
        pytest.param(lambda out: [reg("ok", b"x"), hardlink("hard", "/etc/passwd")], id="hardlink-absolute"),
        pytest.param(lambda out: [hardlink("hard", "../outside/target")], id="hardlink-dotdot"),
    ],
)
def test_malicious_layers_are_rejected_and_write_nothing_outside(tmp_path: Path, entries: Any) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("t")
    layer = make_tar(entries(outside))
    make_layout(tmp_path / "oci", [make_tar(BASE_LAYER), layer])
    home = tmp_path / "home"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ImageError):
        ImageStore(home).import_layout(tmp_path / "oci")
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == before
    assert not (home / "images" / "evil").exists() and not (home / "evil").exists()
    assert_no_leftovers(home)


def layer_blob_path(layout: Path) -> Path:
    return layout / "blobs" / "sha256" / read_manifest(layout)["layers"][0]["digest"][7:]


def test_digest_mismatch_is_rejected(tmp_path: Path) -> None:
    make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)])
    blob = layer_blob_path(tmp_path / "oci")
    blob.write_bytes(blob.read_bytes().replace(b"hello world", b"HELLO world"))  # still a valid tar
    with pytest.raises(ImageError, match="failed verification"):
        ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    assert_no_leftovers(tmp_path / "home")


def test_corrupt_compressed_layer_reports_the_digest_mismatch(tmp_path: Path) -> None:
    make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)], compress=[True])
    blob = layer_blob_path(tmp_path / "oci")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="failed verification"):
        ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    assert_no_leftovers(tmp_path / "home")


def test_tampered_manifest_is_rejected(tmp_path: Path) -> None:
    digest = make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)])
    blob = tmp_path / "oci" / "blobs" / "sha256" / digest[7:]
    blob.write_bytes(blob.read_bytes().replace(b'"schemaVersion": 2', b'"schemaVersion":  2'))
    with pytest.raises(ImageError, match="failed verification"):
        ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")


def test_second_import_is_cached(tmp_path: Path) -> None:
    make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)])
    store = ImageStore(tmp_path / "home")
    first = store.import_layout(tmp_path / "oci")
    mtime = first.disk_path.stat().st_mtime_ns
    lines: list[str] = []
    started = time.monotonic()
    second = store.import_layout(tmp_path / "oci", progress=lines.append)
    assert time.monotonic() - started < 0.5
    assert second.digest == first.digest and second == first
    assert second.disk_path.stat().st_mtime_ns == mtime
    assert lines == []
    # and through get(), by the reference it was imported under, by digest, and in a fresh store
    assert ImageStore(tmp_path / "home").get(first.reference) == first
    assert ImageStore(tmp_path / "home").get(first.digest).digest == first.digest
    assert store.get(f"oci-layout:{tmp_path / 'oci'}").digest == first.digest


def test_concurrent_imports_build_once(tmp_path: Path) -> None:
    make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)])
    lines: list[str] = []
    results: list[Image] = []

    def run() -> None:
        results.append(ImageStore(tmp_path / "home").import_layout(tmp_path / "oci", progress=lines.append))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r.digest for r in results}) == 1
    assert sum(line.startswith("building disk") for line in lines) == 1


def test_unreachable_registry_is_an_image_error_naming_the_host(tmp_path: Path) -> None:
    # ".invalid" never resolves (RFC 2606), so this fails the same way with or without a network.
    with pytest.raises(ImageError, match=r"registry\.invalid") as info:
        ImageStore(tmp_path / "home").get("registry.invalid/team/app:3.19")
    assert "rootfs_path" in str(info.value)


def test_index_with_several_platforms_picks_the_host(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    digest = make_layout(layout, [make_tar(BASE_LAYER)])
    index = json.loads((layout / "index.json").read_text())
    ours = dict(index["manifests"][0], platform={"os": "linux", "architecture": host_architecture()})
    other = {**put_blob(layout, b"{}"), "mediaType": MANIFEST, "platform": {"os": "linux", "architecture": "s390x"}}
    set_index(layout, put_json(layout, INDEX, {"schemaVersion": 2, "mediaType": INDEX, "manifests": [other, ours]}))
    image = ImageStore(tmp_path / "home").import_layout(layout)
    assert image.digest == digest


def test_zstd_layers_need_the_zstandard_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_layout(tmp_path / "oci", [b"\x28\xb5\x2f\xfd" + b"\0" * 64])
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    with pytest.raises(ImageError, match="zstandard"):
        ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    assert_no_leftovers(tmp_path / "home")


def test_zstandard_is_a_declared_dependency() -> None:
    """zstd layers must work on a fresh install (`pip install boxlite`), not only where someone added the module."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    requirements = pyproject["project"]["dependencies"]
    names = [re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0] for requirement in requirements]
    assert "zstandard" in names


def test_zstd_layers_unpack(tmp_path: Path) -> None:
    import zstandard  # a declared dependency: a fresh install has it, so this test never skips

    plain = make_tar(BASE_LAYER)
    layout = tmp_path / "oci"
    make_layout(layout, [plain])
    # swap the layer blob for its zstd-compressed form (diff_id stays the plain tar's digest)
    manifest = read_manifest(layout)
    manifest["layers"][0] = {"mediaType": TAR + "+zstd", **put_blob(layout, zstandard.ZstdCompressor().compress(plain))}
    set_index(layout, put_json(layout, MANIFEST, manifest))
    image = ImageStore(tmp_path / "home").import_layout(layout)
    assert debugfs(image.disk_path, "cat /etc/hello") == "hello world\n"


def test_wrong_diff_id_is_rejected(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    make_layout(layout, [make_tar(BASE_LAYER)], compress=[True])
    manifest = read_manifest(layout)
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    manifest["config"] = put_json(layout, CONFIG, config)
    set_index(layout, put_json(layout, MANIFEST, manifest))
    with pytest.raises(ImageError, match="failed verification"):
        ImageStore(tmp_path / "home").import_layout(layout)
    assert_no_leftovers(tmp_path / "home")


def test_missing_layout_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        ImageStore(tmp_path / "home").import_layout(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match=r"index\.json"):
        ImageStore(tmp_path / "home").import_layout(tmp_path / "empty")


FAKE_MMDEBSTRAP = """#!{python}
import io, sys, tarfile
print("I: automatically chosen mode: root", file=sys.stderr)
if {fail}:
    print("E: apt-get update failed", file=sys.stderr)
    sys.exit(1)
target = [a for a in sys.argv[1:] if a.endswith(".tar")][0]
with tarfile.open(target, "w") as tf:
    info = tarfile.TarInfo("./usr/bin/python3")
    data = b"#!/bin/sh\\n"
    info.size, info.mode = len(data), 0o755
    tf.addfile(info, io.BytesIO(data))
print("I: success in 0.1 seconds", file=sys.stderr)
"""


def install_fake_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, fail: bool) -> None:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    script = bin_dir / "mmdebstrap"
    script.write_text(FAKE_MMDEBSTRAP.format(python=sys.executable, fail=fail))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


def test_default_image_pipeline_with_a_stand_in_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_mmdebstrap(tmp_path, monkeypatch, fail=False)
    home = tmp_path / "home"
    lines: list[str] = []
    image = ImageStore(home).get(DEFAULT_IMAGE, progress=lines.append)
    assert lines[0].startswith("building default image boxlite/python:3.11-bookworm")
    assert "mmdebstrap: automatically chosen mode: root" in lines
    assert image.reference == DEFAULT_IMAGE and image.cmd == ["python3"] and image.working_dir == "/root"
    assert names_in(image.disk_path, "/usr/bin") == {"python3"}
    layout = home / "images" / "layouts" / "default"
    manifest = read_manifest(layout)
    assert manifest["layers"][0]["mediaType"] == TAR
    assert ImageStore(home).import_layout(layout).digest == image.digest  # usable as a rootfs_path
    assert list((home / "images" / "tmp").iterdir()) == []


def test_default_image_build_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_mmdebstrap(tmp_path, monkeypatch, fail=True)
    home = tmp_path / "home"
    with pytest.raises(ImageError, match="apt-get update failed"):
        ImageStore(home).get(DEFAULT_IMAGE)
    assert not (home / "images" / "layouts" / "default").exists()
    assert_no_leftovers(home)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_image_is_built_from_debian_packages(tmp_path: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed")
    home = tmp_path / "home"
    lines: list[str] = []
    image = ImageStore(home).get(DEFAULT_IMAGE, progress=lines.append)
    assert lines[0] == "building default image boxlite/python:3.11-bookworm from Debian packages (about a minute, once)"
    assert image.reference == DEFAULT_IMAGE
    assert image.env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
    assert (image.working_dir, image.cmd, image.user, image.entrypoint) == ("/root", ["python3"], "", [])
    assert image.disk_path.is_file()
    assert "python3" in names_in(image.disk_path, "/usr/bin")
    assert "ca-certificates.crt" in names_in(image.disk_path, "/etc/ssl/certs")
    assert (home / "images" / "layouts" / "default" / "index.json").is_file()
    assert list((home / "images" / "tmp").iterdir()) == []
    started = time.monotonic()
    again = ImageStore(home).get(DEFAULT_IMAGE)
    assert time.monotonic() - started < 1 and again == image
    assert [i.reference for i in ImageStore(home).list()] == [DEFAULT_IMAGE]


def test_corrupt_zstd_layer_is_rejected(tmp_path: Path) -> None:
    import zstandard  # a declared dependency (see test_zstandard_is_a_declared_dependency)

    layout = tmp_path / "oci"
    make_layout(layout, [make_tar(BASE_LAYER)])
    blob = layer_blob_path(layout)
    data = bytearray(zstandard.ZstdCompressor().compress(blob.read_bytes()))
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))  # digest no longer matches either: the mismatch is what gets reported
    with pytest.raises(ImageError, match="failed verification"):
        ImageStore(tmp_path / "home").import_layout(layout)
    assert_no_leftovers(tmp_path / "home")


# -- removing images: start templates are a cache, boxes and snapshots are not -----------------------------


def put_snapshot(home: Path, kind: str, name: str, image_digest: str) -> Path:
    """A snapshot (kind "snapshot") or start template ("template") directory as SnapshotStore writes it, based on
    image_digest; its state file holds some bytes so that what discarding it frees can be counted."""
    from boxlite._snapshots import SnapshotInfo

    path = home / ("templates" if kind == "template" else "snapshots") / name
    path.mkdir(parents=True)
    (path / "state").write_bytes(os.urandom(256 * 1024))
    info = SnapshotInfo(
        name=name, kind=kind, path=str(path), created_at=time.time(), source_box="b0", image="img",
        image_digest=image_digest, cpus=1, memory_mib=256, disk_size_bytes=1 << 30, accel="tcg", transport="serial",
        kernel="/k", guest_root="/g", qemu_version="QEMU 7.2", cmdline="", tsc_khz=None, guest_uptime_s=1.0,
        image_record={"digest": image_digest}, state_bytes=256 * 1024, disk_bytes=0, paused_ms=1.0,
        key=name if kind == "template" else "",
    )
    (path / "meta.json").write_text(info.model_dump_json())
    return path


def put_box(home: Path, name: str, image_digest: str) -> None:
    from boxlite._state import CONFIGURED, BoxRecord, StateStore

    store = StateStore(home / "boxlite.db")
    store.insert(BoxRecord(id=f"id-{name}", name=name, status=CONFIGURED, config={}, image={"digest": image_digest},
                           box_dir=str(home / "boxes" / name), created_at=time.time()))
    store.close()


@pytest.fixture
def runtime_with_image(tmp_path: Path) -> tuple[Any, Image]:
    import boxlite

    make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)])
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=tmp_path / "home"))
    return runtime, runtime.images.import_layout(tmp_path / "oci")


def test_removing_an_image_only_templates_use_discards_them(runtime_with_image: tuple[Any, Image]) -> None:
    runtime, image = runtime_with_image
    home = runtime.home
    template = put_snapshot(home, "template", "t" * 16, image.digest)
    other = put_snapshot(home, "template", "o" * 16, "sha256:" + "0" * 64)  # another image's: kept
    disk_bytes = image.disk_path.stat().st_blocks * 512
    removed = runtime.images.remove(image.reference)
    assert removed.deleted == image.digest and removed.templates_discarded == ["t" * 16]
    assert removed.bytes_freed >= 256 * 1024 + disk_bytes
    assert not template.exists() and other.exists()
    assert sorted(p.name for p in (home / "templates").iterdir()) == ["o" * 16]  # no trash left behind
    assert runtime.images.list() == [] and not image.disk_path.exists()
    assert [t.name for t in runtime.snapshots.templates()] == ["o" * 16]


@pytest.mark.parametrize("user", ["box", "snapshot"])
def test_an_image_a_box_or_a_snapshot_uses_is_kept_with_its_templates(
    runtime_with_image: tuple[Any, Image], user: str
) -> None:
    import boxlite

    runtime, image = runtime_with_image
    template = put_snapshot(runtime.home, "template", "t" * 16, image.digest)
    if user == "box":
        put_box(runtime.home, "busy-box", image.digest)
        named, fix = "busy-box", "boxlite rm -f BOX"
    else:
        put_snapshot(runtime.home, "snapshot", "keep", image.digest)
        named, fix = "snapshot keep", "boxlite snapshot rm NAME"
    with pytest.raises(boxlite.InvalidStateError) as caught:
        runtime.images.remove(image.reference)
    assert caught.value.detail.endswith(f"is used by 1 box(es): {named}") and fix in caught.value.fix
    assert template.is_dir() and [i.digest for i in runtime.images.list()] == [image.digest]
    runtime.images.prune(all=True)  # keeps it too, and so its templates
    assert template.is_dir() and [i.digest for i in runtime.images.list()] == [image.digest]


def test_prune_discards_the_templates_of_the_images_it_deletes(runtime_with_image: tuple[Any, Image]) -> None:
    runtime, image = runtime_with_image
    template = put_snapshot(runtime.home, "template", "t" * 16, image.digest)
    assert runtime.images.prune(all=False) >= 0 and template.is_dir()  # a named image: not pruned without -a
    assert runtime.images.prune(all=True) >= 256 * 1024
    assert runtime.images.list() == [] and not template.exists()


def test_images_rm_cli_says_which_templates_went(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from boxlite.cli import main

    make_layout(tmp_path / "oci", [make_tar(BASE_LAYER)])
    image = ImageStore(tmp_path / "home").import_layout(tmp_path / "oci")
    put_snapshot(tmp_path / "home", "template", "t" * 16, image.digest)
    assert main(["--home", str(tmp_path / "home"), "images", "rm", image.reference]) == 0
    out = capsys.readouterr().out
    assert f"Deleted: {image.digest}" in out and f"Discarded start template: {'t' * 16}" in out
    assert not (tmp_path / "home" / "templates" / ("t" * 16)).exists()
