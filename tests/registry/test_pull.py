"""Pulling from real registries (Debian's docker-registry on 127.0.0.1, pushed to with skopeo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ocitools import (
    PASSWORD,
    USER,
    Proxy,
    debugfs,
    device,
    directory,
    free_port,
    make_layout,
    make_multiarch_layout,
    make_tar,
    push,
    reg,
    registry_blob_file,
    symlink,
)

import boxlite
from boxlite._errors import ConfigError, ImageError, StorageError
from boxlite.images import ImageStore, LayerProgress
from boxlite.images.oci import host_architecture

BASE = [directory("./"), directory("etc"), reg("etc/hello", b"hello from the registry\n"), directory("bin")]
RUN_CONFIG = {
    "Env": ["PATH=/usr/bin:/bin", "GREETING=hi"],
    "WorkingDir": "/srv",
    "User": "1000:1000",
    "Entrypoint": ["/bin/tool"],
    "Cmd": ["--help"],
}


def two_layers(tag: bytes) -> list[bytes]:
    return [make_tar(BASE), make_tar([directory("srv"), reg("srv/tag", tag), reg("bin/tool", b"#!/bin/sh\n", 0o755)])]


def assert_nothing_partial(home: Path) -> None:
    images = home / "images"
    for sub in ("manifests", "disks", "refs"):
        assert not (images / sub).exists() or list((images / sub).iterdir()) == [], sub
    assert not (images / "tmp").exists() or list((images / "tmp").iterdir()) == []


def blob_files(home: Path) -> set[str]:
    directory = home / "images" / "blobs" / "sha256"
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


# -- the basics -------------------------------------------------------------------------------------


def test_pull_by_tag_then_cached(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    digest = push(make_layout(tmp_path / "oci", two_layers(b"v1"), run_config=RUN_CONFIG), f"{registry}/{repo}:1.0")
    store = ImageStore(home)
    lines: list[str] = []
    events: list[LayerProgress] = []
    image = store.get(f"{registry}/{repo}:1.0", lines.append, on_layer=events.append)

    assert image.digest == digest
    assert image.reference == f"{registry}/{repo}:1.0"
    assert (image.env, image.working_dir, image.user) == (RUN_CONFIG["Env"], "/srv", "1000:1000")
    assert (image.entrypoint, image.cmd) == (["/bin/tool"], ["--help"])
    assert debugfs(image.disk_path, "cat /etc/hello") == "hello from the registry\n"
    assert debugfs(image.disk_path, "cat /srv/tag") == "v1"
    assert lines[0] == f"pulling {registry}/{repo}:1.0"
    assert any(line.startswith("building disk") for line in lines)
    done = {e.index for e in events if e.status == "done"}
    assert done == {1, 2} and all(e.count == 2 for e in events)
    # the manifest, config and both layers are in the shared blob store
    assert len(blob_files(home)) == 4

    # a second get is answered from the cache; a second pull asks the registry and finds nothing new
    assert store.get(f"{registry}/{repo}:1.0").digest == digest
    again: list[str] = []
    assert store.pull(f"{registry}/{repo}:1.0", again.append).digest == digest
    assert any("up to date" in line for line in again)
    assert [i.digest for i in store.list()] == [digest]


def test_pull_by_digest(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    digest = push(make_layout(tmp_path / "oci", two_layers(b"pinned")), f"{registry}/{repo}:moving")
    push(make_layout(tmp_path / "oci2", two_layers(b"newer")), f"{registry}/{repo}:moving")  # the tag moves on
    store = ImageStore(home)
    image = store.pull(f"{registry}/{repo}@{digest}")
    assert image.digest == digest and image.reference == f"{registry}/{repo}@{digest}"
    assert debugfs(image.disk_path, "cat /srv/tag") == "pinned"
    assert store.pull(f"{registry}/{repo}:moving").digest != digest

    absent = "sha256:" + "0" * 64
    with pytest.raises(ImageError, match="failed to pull image: 404 Not Found"):
        store.pull(f"{registry}/{repo}@{absent}")


def test_multi_arch_index_resolves_to_this_host(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    layout = make_multiarch_layout(tmp_path / "oci", {
        "arm64": [make_tar([*BASE, reg("etc/arch", b"arm64")])],
        host_architecture(): [make_tar([*BASE, reg("etc/arch", host_architecture().encode())])],
        "s390x": [make_tar([*BASE, reg("etc/arch", b"s390x")])],
    })
    index_digest = push(layout, f"{registry}/{repo}:multi", all_images=True)
    store = ImageStore(home)
    image = store.pull(f"{registry}/{repo}:multi")
    assert debugfs(image.disk_path, "cat /etc/arch") == host_architecture()
    assert image.digest != index_digest  # the platform manifest, not the index
    # the index digest also works as a pin
    assert store.pull(f"{registry}/{repo}@{index_digest}").digest == image.digest

    foreign = make_multiarch_layout(tmp_path / "foreign", {
        "arm64": [make_tar(BASE)], "s390x": [make_tar([*BASE, reg("x", b"")])],
    })
    push(foreign, f"{registry}/{repo}:foreign", all_images=True)
    with pytest.raises(ImageError, match=rf"none for linux/{host_architecture()}: linux/arm64, linux/s390x"):
        store.pull(f"{registry}/{repo}:foreign")


def test_missing_tag_and_repository(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    push(make_layout(tmp_path / "oci", two_layers(b"x")), f"{registry}/{repo}:exists")
    store = ImageStore(home)
    with pytest.raises(ImageError) as info:
        store.get(f"{registry}/{repo}:nope")
    assert not isinstance(info.value, StorageError)
    assert str(info.value).startswith("image error: failed to pull image: 404 Not Found: MANIFEST_UNKNOWN")
    assert f"{registry}/{repo}:nope" in str(info.value)
    with pytest.raises(ImageError, match="404 Not Found"):
        store.get(f"{registry}/{repo}-never-pushed:latest")
    assert_nothing_partial(home)


def test_bad_reference_syntax_is_a_config_error(home: Path) -> None:
    with pytest.raises(ConfigError, match="must be lowercase"):
        boxlite.BoxOptions(image="127.0.0.1:5000/Upper/case:1")
    with pytest.raises(ConfigError, match="invalid image reference"):
        ImageStore(home).get("bad image name")


def test_unreachable_registry_names_the_host_and_the_fix(home: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ImageError) as info:
        ImageStore(home).get(f"127.0.0.1:{port}/some/image:1")
    text = str(info.value)
    assert f"cannot reach registry 127.0.0.1:{port}" in text
    assert "BOXLITE_REGISTRY_MIRRORS" in text and "rootfs_path" in text
    assert_nothing_partial(home)


# -- authentication ---------------------------------------------------------------------------------


def test_basic_auth(
    basic_registry: str, repo: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = push(make_layout(tmp_path / "oci", two_layers(b"basic")), f"{basic_registry}/{repo}:1",
                  creds=f"{USER}:{PASSWORD}")
    ref = f"{basic_registry}/{repo}:1"

    with pytest.raises(ImageError, match="needs credentials") as info:
        ImageStore(home).pull(ref)
    assert f"BOXLITE_REGISTRY_AUTH={basic_registry}=USER:PASSWORD" in str(info.value)

    wrong = ImageStore(home, registries=[{"host": basic_registry, "username": USER, "password": "wrong"}])
    with pytest.raises(ImageError, match=f"401 Unauthorized.*credentials of user '{USER}' were rejected"):
        wrong.pull(ref)
    assert_nothing_partial(home)

    good = ImageStore(home, registries=[{"host": basic_registry, "username": USER, "password": PASSWORD}])
    assert good.pull(ref).digest == digest

    # the same credentials from the environment, and from Docker's config.json
    monkeypatch.setenv("BOXLITE_REGISTRY_AUTH", f"{basic_registry}={USER}:{PASSWORD}")
    assert ImageStore(tmp_path / "home2").pull(ref).digest == digest
    monkeypatch.delenv("BOXLITE_REGISTRY_AUTH")
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    import base64

    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {basic_registry: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    assert ImageStore(tmp_path / "home3").pull(ref).digest == digest


def test_token_auth(token_registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    creds = [{"host": token_registry, "username": USER, "password": PASSWORD}]
    private = push(make_layout(tmp_path / "oci", two_layers(b"token")), f"{token_registry}/{repo}:1",
                   creds=f"{USER}:{PASSWORD}")
    public = push(make_layout(tmp_path / "pub", two_layers(b"public")), f"{token_registry}/public/{repo}:1",
                  creds=f"{USER}:{PASSWORD}")

    # anonymous: a token for public/* (the Docker Hub dance), none for the private repository
    assert ImageStore(home).pull(f"{token_registry}/public/{repo}:1").digest == public
    with pytest.raises(ImageError, match="401 Unauthorized"):
        ImageStore(home).pull(f"{token_registry}/{repo}:1")
    wrong = [{"host": token_registry, "username": USER, "password": "nope"}]
    with pytest.raises(ImageError, match="rejected the credentials"):
        ImageStore(tmp_path / "h2", registries=wrong).pull(f"{token_registry}/{repo}:1")
    image = ImageStore(tmp_path / "h3", registries=creds).pull(f"{token_registry}/{repo}:1")
    assert image.digest == private and debugfs(image.disk_path, "cat /srv/tag") == "token"


def test_mirror_serves_docker_hub_short_names(registry: str, repo: str, home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # Docker Hub is unreachable here; a mirror configured for it answers `NAME:1` as library/NAME
    name = repo.replace("/", "-")
    digest = push(make_layout(tmp_path / "oci", two_layers(b"mirror")), f"{registry}/library/{name}:1")
    monkeypatch.setenv("BOXLITE_REGISTRY_MIRRORS", f"http://{registry}")
    image = ImageStore(home).get(f"{name}:1")
    assert image.digest == digest and image.reference == f"docker.io/library/{name}:1"
    # and through the runtime's options, with no environment at all
    monkeypatch.delenv("BOXLITE_REGISTRY_MIRRORS")
    options = boxlite.Options(home_dir=tmp_path / "rt", image_registries=[{"host": "docker.io", "mirrors": [registry]}])
    assert boxlite.Boxlite(options).images.get(f"{name}:1").digest == digest
    # and from HOME/registries.json
    (tmp_path / "filehome").mkdir()
    (tmp_path / "filehome" / "registries.json").write_text(json.dumps(
        {"image_registries": [{"host": "docker.io", "mirrors": [f"http://{registry}"]}]}))
    assert ImageStore(tmp_path / "filehome").get(f"docker.io/library/{name}:1").digest == digest


# -- damaged transfers and hostile content -------------------------------------------------------------


def test_corrupted_blob_is_rejected(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "oci", two_layers(repo.encode()))
    push(layout, f"{registry}/{repo}:1")
    manifest = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry}/{repo}:1"],
        capture_output=True, check=True).stdout)
    layer = manifest["layers"][1]["digest"]  # unique to this test (it holds the repository name)
    data_file = registry_blob_file("anonymous", layer)
    data = bytearray(data_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    data_file.write_bytes(bytes(data))

    with pytest.raises(ImageError, match=f"{layer} failed verification") as info:
        ImageStore(home).pull(f"{registry}/{repo}:1")
    assert "nothing was kept" in str(info.value)
    assert layer.split(":")[1] not in blob_files(home)
    assert_nothing_partial(home)


def test_registry_going_away_mid_pull(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024)  # incompressible, so the layer blob stays about 3 MiB
    digest = push(make_layout(tmp_path / "oci", [make_tar([*BASE, reg("big", big)])]), f"{registry}/{repo}:1")
    proxy = Proxy(registry)
    proxy.cut_blob_after = 1024 * 1024
    ref = f"{proxy.host}/{repo}:1"
    store = ImageStore(home)
    with pytest.raises(ImageError) as info:
        store.pull(ref)
    assert proxy.went_away.is_set()
    text = str(info.value)
    assert proxy.host in text and "the connection broke after 1048576 of" in text, text
    assert_nothing_partial(home)
    assert not any(name.startswith(".") for name in blob_files(home))

    again = Proxy(registry, port=proxy.port)  # the registry is back
    try:
        image = store.pull(ref)
    finally:
        again.stop()
    assert image.digest == digest
    assert debugfs(image.disk_path, "stat /big").count(f"Size: {len(big)}") == 1


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param([reg("../../evil", b"x")], id="path-traversal"),
        pytest.param([symlink("escape", "/../../../../tmp"), reg("escape/evil", b"x")], id="symlink-escape"),
        pytest.param([symlink("up", "../../.."), reg("up/evil", b"x")], id="relative-symlink-escape"),
        pytest.param([directory("tmp"), device("tmp/disk", b"4", 8, 0)], id="device-node"),
    ],
)
def test_hostile_layers_are_rejected(registry: str, repo: str, home: Path, tmp_path: Path, entries: list) -> None:
    push(make_layout(tmp_path / "oci", [make_tar(BASE), make_tar(entries)]), f"{registry}/{repo}:1")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ImageError, match=r"unsafe|outside"):
        ImageStore(home).pull(f"{registry}/{repo}:1")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/tmp/evil").exists()
    assert_nothing_partial(home)


# -- sharing and concurrency -------------------------------------------------------------------------------


_PULLER = textwrap.dedent("""
    import sys
    from boxlite.images import ImageStore
    print(ImageStore(sys.argv[1]).pull(sys.argv[2]).digest)
""")


def test_two_processes_pulling_at_once_download_once(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    layers = [make_tar([*BASE, reg(f"f{i}", os.urandom(256 * 1024))]) for i in range(3)]
    digest = push(make_layout(tmp_path / "oci", layers), f"{registry}/{repo}:1")
    proxy = Proxy(registry)
    proxy.blob_delay = 0.5  # long enough for both processes to want every blob at once
    try:
        procs = [
            subprocess.Popen([sys.executable, "-c", _PULLER, str(home), f"{proxy.host}/{repo}:1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        proxy.stop()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == digest
    # 3 layers + the config, each fetched by exactly one of the two processes
    assert len(proxy.blob_gets) == 4 and set(proxy.blob_gets.values()) == {1}, proxy.blob_gets


def test_layers_are_shared_between_images(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    shared = make_tar([*BASE, reg("shared", os.urandom(64 * 1024))])
    push(make_layout(tmp_path / "a", [shared, make_tar([reg("a", b"a")])]), f"{registry}/{repo}:a")
    push(make_layout(tmp_path / "b", [shared, make_tar([reg("b", b"b")])]), f"{registry}/{repo}:b")
    store = ImageStore(home)
    store.pull(f"{registry}/{repo}:a")
    events: list[LayerProgress] = []
    store.pull(f"{registry}/{repo}:b", on_layer=events.append)
    statuses = {e.index: e.status for e in events}
    assert statuses == {1: "cached", 2: "done"}


# -- the cache: rm, prune, in-use images ---------------------------------------------------------------


def test_remove_and_prune(registry: str, repo: str, home: Path, tmp_path: Path) -> None:
    shared = make_tar([*BASE, reg("shared", os.urandom(64 * 1024))])
    a = push(make_layout(tmp_path / "a", [shared, make_tar([reg("a", os.urandom(32 * 1024))])]), f"{registry}/{repo}:a")
    b = push(make_layout(tmp_path / "b", [shared, make_tar([reg("b", b"b")])]), f"{registry}/{repo}:b")
    users: dict[str, list[str]] = {}
    store = ImageStore(home, in_use=lambda: users)
    store.pull(f"{registry}/{repo}:a")
    image_b = store.pull(f"{registry}/{repo}:b")
    store.pull(f"{registry}/{repo}@{b}")  # a second name for b
    blobs_before = blob_files(home)
    assert len(blobs_before) == 7  # 2 manifests, 2 configs, 3 layers

    users[a] = ["web-1", "worker"]
    with pytest.raises(boxlite.InvalidStateError, match="used by 2 box\\(es\\): web-1, worker"):
        store.remove(f"{registry}/{repo}:a")
    assert store.prune(all=True) > 0  # b goes, a stays: a box uses it
    assert [i.digest for i in store.list()] == [a]
    assert not image_b.disk_path.exists()
    assert len(blob_files(home)) == 4  # a's manifest, config and two layers (the shared one kept)

    users.clear()
    removed = store.remove(f"{registry}/{repo}:a")
    assert removed.deleted == a and removed.bytes_freed > 0
    assert store.list() == [] and blob_files(home) == set()
    with pytest.raises(boxlite.NotFoundError, match="image not found"):
        store.remove(f"{registry}/{repo}:a")
    assert store.get(f"{registry}/{repo}:a").digest == a  # pulled again on demand


def test_disk_full_is_a_storage_error_with_the_free_space(registry: str, repo: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    big = os.urandom(4 * 1024 * 1024)
    push(make_layout(tmp_path / "oci", [make_tar([*BASE, reg("big", big)])]), f"{registry}/{repo}:1")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(StorageError, match=r"not enough disk space .* free under"):
            ImageStore(small).pull(f"{registry}/{repo}:1")
        # past the early check, the write itself hits ENOSPC: still a StorageError showing the free space
        monkeypatch.setattr("boxlite.images.store.require_free", lambda *a: None)
        with pytest.raises(StorageError, match=r"KiB free under|B free under"):
            ImageStore(small).pull(f"{registry}/{repo}:1")
        assert not list((small / "images" / "tmp").iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)
