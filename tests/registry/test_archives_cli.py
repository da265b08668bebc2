"""Local sources (`docker save` tarballs, OCI archives, OCI layouts) and `boxlite images ...` on the command line."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from ocitools import debugfs, directory, make_layout, make_tar, push, reg

import boxlite
from boxlite._errors import ImageError
from boxlite._state import CONFIGURED, BoxRecord, StateStore
from boxlite.cli import main
from boxlite.images import ImageStore

LAYERS = [
    make_tar([directory("./"), directory("etc"), reg("etc/hello", b"from an archive\n")]),
    make_tar([directory("usr"), reg("usr/second", b"2")]),
]
RUN_CONFIG = {"Env": ["PATH=/bin", "A=1"], "WorkingDir": "/etc", "User": "7", "Cmd": ["cat", "hello"]}

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


def skopeo_copy(source: str, dest: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", source, dest], check=True, capture_output=True, timeout=120)


@needs_skopeo
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_docker_save_archive(tmp_path: Path, compressed: bool) -> None:
    layout = make_layout(tmp_path / "oci", LAYERS, run_config=RUN_CONFIG)
    archive = tmp_path / "saved.tar"
    skopeo_copy(f"oci:{layout}:latest", f"docker-archive:{archive}:example.com/team/app:1.0")
    names = {m.name for m in __import__("tarfile").open(archive)}
    assert "manifest.json" in names and not any(n.startswith("blobs/") for n in names)  # the old `docker save` form
    if compressed:
        archive.with_suffix(".tar.gz").write_bytes(gzip.compress(archive.read_bytes()))
        archive = archive.with_suffix(".tar.gz")
    home = tmp_path / "home"
    store = ImageStore(home)
    [image] = store.load(archive)
    assert image.reference == "example.com/team/app:1.0"
    assert (image.env, image.working_dir, image.user) == (["PATH=/bin", "A=1"], "/etc", "7")
    assert image.cmd == ["cat", "hello"]
    assert debugfs(image.disk_path, "cat /etc/hello") == "from an archive\n"
    # the loaded name is found locally: no registry is asked (example.com is not reachable from here)
    assert store.get("example.com/team/app:1.0").digest == image.digest
    assert store.load(archive)[0].digest == image.digest  # loading again builds nothing new
    assert len(store.list()) == 1


@needs_skopeo
def test_oci_archive_and_rootfs_path(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "oci", LAYERS)
    archive = tmp_path / "image.oci.tar"
    skopeo_copy(f"oci:{layout}:latest", f"oci-archive:{archive}:latest")
    home = tmp_path / "home"
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
    opts = boxlite.BoxOptions(rootfs_path=str(archive))  # an archive file is a valid rootfs_path
    image = runtime._resolve_image(opts)
    assert image.reference == f"archive:{archive}@{image.digest}"
    assert debugfs(image.disk_path, "cat /usr/second") == "2"
    assert runtime.images.get(image.reference).digest == image.digest
    # an OCI layout directory loads too
    assert runtime.images.load(layout)[0].digest == image.digest


def test_broken_archives_are_image_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageError, match="not a readable image archive"):
        ImageStore(tmp_path / "home").load(junk)
    empty = tmp_path / "empty.tar"
    import tarfile

    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ImageError, match=r"neither index\.json nor manifest\.json"):
        ImageStore(tmp_path / "home").load(empty)
    with pytest.raises(boxlite.ConfigError, match="not a directory"):
        boxlite.BoxOptions(rootfs_path=str(tmp_path / "missing.tar"))


# -- the command line -----------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_images_cli(registry: str, repo: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digest = push(make_layout(tmp_path / "oci", LAYERS), f"{registry}/{repo}:1")
    home = str(tmp_path / "home")
    ref = f"{registry}/{repo}:1"

    code, out, err = run_cli(capsys, "--home", home, "images", "pull", ref)
    assert code == 0, err
    assert out.strip() == f"{ref} {digest}"
    assert f"pulling {ref}" in err and "layer 1/2" in err and "downloaded" in err  # plain lines: no TTY here

    code, out, _ = run_cli(capsys, "--home", home, "images", "ls")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split() == ["REFERENCE", "DIGEST", "SIZE", "CREATED"]
    assert row.startswith(ref) and digest[:19] in row
    code, out, _ = run_cli(capsys, "--home", home, "images", "ls", "--json")
    assert json.loads(out)[0]["digest"] == digest
    code, out, _ = run_cli(capsys, "--home", home, "images", "ls", "-q")
    assert out.strip() == digest

    # a box using the image blocks its removal, and is named
    db = StateStore(Path(home) / "boxlite.db")
    db.insert(BoxRecord(id="abc123abc123", name="busy-box", status=CONFIGURED, config={},
                        image={"digest": digest, "reference": ref}, box_dir=str(tmp_path / "box"),
                        created_at=time.time()))
    code, _, err = run_cli(capsys, "--home", home, "images", "rm", ref)
    assert code == 125 and "used by 1 box(es): busy-box" in err
    db.delete("abc123abc123")

    code, out, _ = run_cli(capsys, "--home", home, "images", "rm", ref)
    assert code == 0 and f"Untagged: {ref}" in out and f"Deleted: {digest}" in out
    code, out, _ = run_cli(capsys, "--home", home, "images", "prune", "-a")
    assert code == 0 and out.startswith("Total reclaimed space:")

    code, _, err = run_cli(capsys, "--home", home, "images", "pull", f"{registry}/{repo}:missing")
    assert code == 125 and "failed to pull image: 404 Not Found" in err


@needs_skopeo
def test_images_load_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = make_layout(tmp_path / "oci", LAYERS)
    archive = tmp_path / "saved.tar"
    skopeo_copy(f"oci:{layout}:latest", f"docker-archive:{archive}:app:2")
    code, out, err = run_cli(capsys, "--home", str(tmp_path / "home"), "images", "load", "-i", str(archive))
    assert code == 0, err
    assert out.startswith("Loaded image: app:2 sha256:")
    code, out, _ = run_cli(capsys, "--home", str(tmp_path / "home"), "images", "ls")
    assert "app:2" in out
