"""Built-in images (boxlite.images.builtin): the catalog, deterministic layouts, and the store's build/cache/lock
path with a stand-in mmdebstrap (the real one is exercised by tests/vm/test_builtin_images.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import boxlite.images.builtin as builtin
from boxlite import cli_images
from boxlite._errors import ImageError
from boxlite.images import BUILTIN_IMAGES, CODEBOX_IMAGE, DEFAULT_IMAGE, ImageStore
from boxlite.images.builtin import SOURCE_DATE_EPOCH, write_single_layer_layout
from boxlite.images.oci import OciLayout

DEBUGFS = shutil.which("debugfs") or "/usr/sbin/debugfs"
needs_e2fsprogs = pytest.mark.skipif(
    not os.path.exists(DEBUGFS) or (shutil.which("mke2fs") is None and not os.path.exists("/usr/sbin/mke2fs")),
    reason="needs e2fsprogs (mke2fs, debugfs)",
)


# -- the catalog -------------------------------------------------------------------------------------------


def test_catalog_names_and_default_first() -> None:
    assert ImageStore.builtin_names() == [DEFAULT_IMAGE, CODEBOX_IMAGE]
    assert DEFAULT_IMAGE == "boxlite/python:3.11-bookworm"
    assert CODEBOX_IMAGE == "boxlite/codebox:3.11-bookworm"
    assert len({spec.key for spec in BUILTIN_IMAGES.values()}) == len(BUILTIN_IMAGES)
    assert BUILTIN_IMAGES[DEFAULT_IMAGE].key == "default"  # existing homes keep their layouts/default


def test_default_image_recipe() -> None:
    spec = BUILTIN_IMAGES[DEFAULT_IMAGE]
    assert spec.packages == ("python3", "python-is-python3", "ca-certificates")
    assert spec.run_config() == {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
        "WorkingDir": "/root",
        "Cmd": ["python3"],
    }


def test_codebox_recipe() -> None:
    spec = BUILTIN_IMAGES[CODEBOX_IMAGE]
    for package in ("python3", "python-is-python3", "python3-ipykernel", "python3-numpy", "python3-pandas",
                    "python3-matplotlib", "ca-certificates"):
        assert package in spec.packages
    assert "python3-munkres" in spec.packages  # keeps scipy (and a C++ toolchain) out
    assert spec.run_config() == {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                "MPLBACKEND=Agg"],
        "WorkingDir": "/root",
        "Cmd": ["python3"],
    }
    assert spec.recipe() != BUILTIN_IMAGES[DEFAULT_IMAGE].recipe()


def test_codebox_adds_ipywidgets_8_1_as_pinned_wheels() -> None:
    spec = BUILTIN_IMAGES[CODEBOX_IMAGE]
    assert "python3-ipywidgets" not in spec.packages  # bookworm's 6.0.0 is what modern front ends cannot render
    names = {wheel.filename.split("-")[0]: wheel.filename.split("-")[1] for wheel in spec.wheels}
    assert names["ipywidgets"].startswith("8.1.") and "comm" in names
    assert all(len(wheel.sha256) == 64 and wheel.filename.endswith("-py3-none-any.whl") for wheel in spec.wheels)
    first = spec.wheels[0]
    assert first.requirement == f"ipywidgets=={names['ipywidgets']} --hash=sha256:{first.sha256}"
    assert "pip install ipywidgets==" in spec.created_by()
    # The wheels are part of the recipe: a saved CodeBox layout made without them (or with others) is rebuilt.
    assert spec.recipe() != dataclasses.replace(spec, wheels=()).recipe()
    assert spec.recipe() != dataclasses.replace(spec, wheels=spec.wheels[:1]).recipe()
    # The default image has none, and its recipe leaves no "wheels" entry: it changes only when its packages,
    # hooks or config do (python-is-python3 changed it from sha256:cf90b4a3...; every home rebuilds it once).
    assert BUILTIN_IMAGES[DEFAULT_IMAGE].wheels == ()
    assert BUILTIN_IMAGES[DEFAULT_IMAGE].recipe() == \
        "sha256:6b1abf1a35b8b9c1ca6bdbe655015461707936ae0a17527bfcda0f8a45f819a1"


def test_mmdebstrap_is_run_reproducibly() -> None:
    spec = BUILTIN_IMAGES[CODEBOX_IMAGE]
    cmd = builtin.mmdebstrap_command("mmdebstrap", spec, Path("/x/rootfs.tar"), ["SRC"])
    assert cmd[:3] == ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(spec.packages)]
    assert cmd[-3:] == ["bookworm", "/x/rootfs.tar", "SRC"]
    hooks = [arg for arg in cmd if arg.startswith("--customize-hook=")]
    assert any("/etc/resolv.conf" in h for h in hooks) and any("/etc/hostname" in h for h in hooks)
    # the wheels: copied in from the build's directory (a relative path, the same on every host), installed by
    # the image's pip offline, with hash-checked .pyc files (SOURCE_DATE_EPOCH), then removed
    assert hooks[-3:] == [f"--customize-hook={hook}" for hook in builtin._WHEEL_HOOKS]
    copy_in, pip, remove = builtin._WHEEL_HOOKS
    assert copy_in == "copy-in boxlite-wheels /tmp"
    assert "--no-index" in pip and "--isolated" in pip and "env -i" in pip
    assert f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}" in pip
    assert remove == 'rm -rf "$1/tmp/boxlite-wheels"'
    assert not any("pip" in h for h in builtin.mmdebstrap_command("mmdebstrap", BUILTIN_IMAGES[DEFAULT_IMAGE],
                                                                   Path("/x/rootfs.tar"), []))
    env = builtin.mmdebstrap_environment()
    assert env["SOURCE_DATE_EPOCH"] == "1686355200" == str(SOURCE_DATE_EPOCH)
    assert builtin.fixed_created() == "2023-06-10T00:00:00Z"


# -- deterministic layouts -----------------------------------------------------------------------------------


def stand_in_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, SOURCE_DATE_EPOCH
            tf.addfile(info, io.BytesIO(data))
    return path


def blob_files(layout: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((layout / "blobs" / "sha256").iterdir())}


def wrap(tmp_path: Path, name: str, tar: Path, **kwargs: Any) -> tuple[str, Path]:
    layout = tmp_path / name
    copy = tmp_path / f"{name}.tar"
    shutil.copyfile(tar, copy)
    args: dict[str, Any] = {"run_config": {"Cmd": ["python3"]}, "created_by": "mmdebstrap x", "ref_name": "t"}
    args.update(kwargs)
    return write_single_layer_layout(layout, copy, **args), layout


def test_identical_tars_give_identical_digests(tmp_path: Path) -> None:
    tar = stand_in_tar(tmp_path / "rootfs.tar", {"./etc/hello": b"hello\n", "./usr/bin/python3": b"#!/bin/sh\n"})
    first, layout_a = wrap(tmp_path, "a", tar)
    second, layout_b = wrap(tmp_path, "b", tar, annotations={"io.example": "only in index.json"})
    assert first == second
    assert blob_files(layout_a) == blob_files(layout_b)
    layer_hex = hashlib.sha256(tar.read_bytes()).hexdigest()
    assert layer_hex in blob_files(layout_a)
    config = next(json.loads(data) for data in blob_files(layout_a).values() if b'"rootfs"' in data)
    assert config["created"] == config["history"][0]["created"] == "2023-06-10T00:00:00Z"
    assert config["rootfs"]["diff_ids"] == [f"sha256:{layer_hex}"]


def test_anything_else_changes_the_digest(tmp_path: Path) -> None:
    tar = stand_in_tar(tmp_path / "rootfs.tar", {"./etc/hello": b"hello\n"})
    other_tar = stand_in_tar(tmp_path / "other.tar", {"./etc/hello": b"hello!\n"})
    digests = {
        wrap(tmp_path, "base", tar)[0],
        wrap(tmp_path, "content", other_tar)[0],
        wrap(tmp_path, "config", tar, run_config={"Cmd": ["sh"]})[0],
        wrap(tmp_path, "created", tar, created="2024-01-01T00:00:00Z")[0],
    }
    assert len(digests) == 4


# -- the store, with a stand-in mmdebstrap -------------------------------------------------------------------

FAKE_MMDEBSTRAP = """#!{python}
import io, json, os, sys, tarfile, time
print("I: automatically chosen mode: root", file=sys.stderr)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "epoch": os.environ.get("SOURCE_DATE_EPOCH")}}) + "\\n")
if os.path.exists({fail!r}):
    print("E: apt-get update failed", file=sys.stderr)
    sys.exit(1)
time.sleep(float(os.environ.get("FAKE_MMDEBSTRAP_SLEEP", "0")))
include = [a for a in sys.argv[1:] if a.startswith("--include=")][0].split("=", 1)[1]
target = [a for a in sys.argv[1:] if a.endswith(".tar")][0]
epoch = int(os.environ["SOURCE_DATE_EPOCH"])
files = [("./etc/packages", include.encode()), ("./usr/bin/python3", b"#!/bin/sh\\n")]
if any(a == "--customize-hook=copy-in boxlite-wheels /tmp" for a in sys.argv):  # what pip would install
    stage = "boxlite-wheels"  # relative to the working directory, as mmdebstrap takes it
    files.append(("./etc/wheels", "\\n".join(sorted(os.listdir(stage))).encode()))
    files.append(("./etc/requirements", open(os.path.join(stage, "requirements.txt"), "rb").read()))
with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tf:
    for name, data in files:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o755, epoch
        tf.addfile(info, io.BytesIO(data))
print("I: success in 0.1 seconds", file=sys.stderr)
"""


# A stand-in `pip download`: "downloads" every file of the index directory into -d, as long as the
# requirements file pins hashes; exits 1 when the fail flag exists.
FAKE_PIP = """
import json, os, shutil, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.path.exists({fail!r}):
    print("ERROR: Could not find a version that satisfies the requirement ipywidgets==8.1.9", file=sys.stderr)
    sys.exit(1)
assert args[0] == "download" and "--require-hashes" in args and "--no-deps" in args
assert all("--hash=sha256:" in line for line in open(args[args.index("-r") + 1]))
dest = args[args.index("-d") + 1]
os.makedirs(dest, exist_ok=True)
for name in os.listdir({index!r}):
    shutil.copyfile(os.path.join({index!r}, name), os.path.join(dest, name))
"""


class FakeMmdebstrap:
    """mmdebstrap and pip stand-ins; the CodeBox image's wheels are replaced by stand-ins the fake index serves."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bin_dir = tmp_path / "fakebin"
        bin_dir.mkdir()
        self.log = tmp_path / "mmdebstrap.log"
        self.fail_flag = tmp_path / "mmdebstrap.fail"
        script = bin_dir / "mmdebstrap"
        script.write_text(FAKE_MMDEBSTRAP.format(python=sys.executable, log=str(self.log), fail=str(self.fail_flag)))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

        self.index = tmp_path / "fake-index"
        self.index.mkdir()
        self.pip_log = tmp_path / "pip.log"
        self.pip_fail_flag = tmp_path / "pip.fail"
        pip = bin_dir / "fake_pip.py"
        pip.write_text(FAKE_PIP.format(log=str(self.pip_log), fail=str(self.pip_fail_flag), index=str(self.index)))
        monkeypatch.setattr(builtin, "_pip_command", lambda: [sys.executable, str(pip)])
        real = BUILTIN_IMAGES[CODEBOX_IMAGE]
        wheels = []
        for wheel in real.wheels:
            content = f"stand-in for {wheel.filename}".encode()
            (self.index / wheel.filename).write_bytes(content)
            wheels.append(builtin.Wheel(wheel.filename, hashlib.sha256(content).hexdigest()))
        self.wheels = tuple(wheels)
        monkeypatch.setitem(BUILTIN_IMAGES, CODEBOX_IMAGE, dataclasses.replace(real, wheels=self.wheels))

    def runs(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def pip_runs(self) -> list[list[str]]:
        if not self.pip_log.exists():
            return []
        return [json.loads(line) for line in self.pip_log.read_text().splitlines()]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMmdebstrap:
    return FakeMmdebstrap(tmp_path, monkeypatch)


@needs_e2fsprogs
def test_codebox_is_built_tagged_and_cached(tmp_path: Path, fake: FakeMmdebstrap) -> None:
    home = tmp_path / "home"
    store = ImageStore(home)
    assert [image for _, image in store.builtin_images()] == [None, None]
    lines: list[str] = []
    image = store.get(CODEBOX_IMAGE, progress=lines.append)
    assert lines[0] == f"building built-in image {CODEBOX_IMAGE} from Debian packages (a minute or two, once)"
    assert "mmdebstrap: automatically chosen mode: root" in lines
    assert image.reference == CODEBOX_IMAGE and image.cmd == ["python3"] and image.working_dir == "/root"
    assert "MPLBACKEND=Agg" in image.env
    [run] = fake.runs()
    assert run["epoch"] == str(SOURCE_DATE_EPOCH)
    assert "--include=" + ",".join(BUILTIN_IMAGES[CODEBOX_IMAGE].packages) in run["argv"]
    # cached: a second store finds it without building; it is listed under its name only
    again = ImageStore(home)
    assert again.get(CODEBOX_IMAGE) == image and len(fake.runs()) == 1
    assert [i.reference for i in again.list()] == [CODEBOX_IMAGE]
    assert [name for name, _ in again.references()] == [CODEBOX_IMAGE]
    assert dict((spec.name, img) for spec, img in again.builtin_images()) == {DEFAULT_IMAGE: None,
                                                                              CODEBOX_IMAGE: image}
    assert again.pull(CODEBOX_IMAGE) == image  # a built-in name never goes to a registry
    assert (home / "images" / "layouts" / "codebox" / "index.json").is_file()
    assert list((home / "images" / "tmp").iterdir()) == []


@needs_e2fsprogs
def test_same_packages_give_the_same_digest_in_two_homes(tmp_path: Path, fake: FakeMmdebstrap) -> None:
    first = ImageStore(tmp_path / "one").get(CODEBOX_IMAGE)
    second = ImageStore(tmp_path / "two").get(CODEBOX_IMAGE)
    assert len(fake.runs()) == 2
    assert first.digest == second.digest
    default = ImageStore(tmp_path / "one").get(DEFAULT_IMAGE)
    assert default.digest != first.digest  # other packages, other config


@needs_e2fsprogs
def test_two_concurrent_gets_build_once(tmp_path: Path, fake: FakeMmdebstrap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MMDEBSTRAP_SLEEP", "0.5")
    home = tmp_path / "home"
    results: list[str] = []
    lines: list[list[str]] = [[], []]

    def get(n: int) -> None:
        results.append(ImageStore(home).get(CODEBOX_IMAGE, progress=lines[n].append).digest)

    threads = [threading.Thread(target=get, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 2 and results[0] == results[1]
    assert len(fake.runs()) == 1
    waited = [ls for ls in lines if ls and ls[0].startswith("waiting for another process")]
    assert len(waited) == 1 and not any(line.startswith("building") for line in waited[0])


@needs_e2fsprogs
def test_saved_layout_is_reused_until_the_recipe_changes(
    tmp_path: Path, fake: FakeMmdebstrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    store = ImageStore(home)
    image = store.get(CODEBOX_IMAGE)
    removed = store.remove(CODEBOX_IMAGE)
    assert removed.untagged == [CODEBOX_IMAGE] and removed.deleted == image.digest
    assert store.get(CODEBOX_IMAGE).digest == image.digest and len(fake.runs()) == 1  # imported, not rebuilt
    store.remove(CODEBOX_IMAGE)
    monkeypatch.setattr(builtin, "RECIPE_VERSION", builtin.RECIPE_VERSION + 1)
    assert store.get(CODEBOX_IMAGE).digest == image.digest and len(fake.runs()) == 2  # rebuilt: same content


@needs_e2fsprogs
def test_wheels_are_downloaded_once_checked_and_staged(
    tmp_path: Path, fake: FakeMmdebstrap, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    store = ImageStore(home)
    lines: list[str] = []
    image = store.get(CODEBOX_IMAGE, progress=lines.append)
    assert lines[1].startswith("downloading ipywidgets-8.1.") and lines[1].endswith(" with pip")
    assert len(fake.pip_runs()) == 1
    cache = home / "images" / "wheels"
    assert sorted(p.name for p in cache.iterdir()) == sorted(w.filename for w in fake.wheels)
    # what mmdebstrap found in its working directory: the wheels and a requirements file pinning their hashes
    layout = OciLayout(home / "images" / "layouts" / "codebox")
    _, manifest = layout.resolve_manifest()
    with tarfile.open(layout.blob_path(manifest.layers[0].digest)) as tf:
        staged = tf.extractfile("./etc/wheels").read().decode().splitlines()  # type: ignore[union-attr]
        requirements = tf.extractfile("./etc/requirements").read().decode()  # type: ignore[union-attr]
    assert staged == sorted([*(w.filename for w in fake.wheels), "requirements.txt"])
    assert requirements == "".join(w.requirement + "\n" for w in fake.wheels)
    config = next(json.loads(p.read_bytes()) for p in (layout.path / "blobs" / "sha256").iterdir()
                  if b'"history"' in p.read_bytes())
    assert "pip install ipywidgets==8.1." in config["history"][0]["created_by"]
    # built again (a new recipe): the cached wheels are used, pip is not run
    store.remove(CODEBOX_IMAGE)
    monkeypatch.setattr(builtin, "RECIPE_VERSION", builtin.RECIPE_VERSION + 1)
    assert store.get(CODEBOX_IMAGE).digest == image.digest
    assert len(fake.runs()) == 2 and len(fake.pip_runs()) == 1
    # a cached wheel that no longer matches its hash is downloaded again
    (cache / fake.wheels[0].filename).write_bytes(b"tampered")
    store.remove(CODEBOX_IMAGE)
    monkeypatch.setattr(builtin, "RECIPE_VERSION", builtin.RECIPE_VERSION + 1)
    assert store.get(CODEBOX_IMAGE).digest == image.digest
    assert len(fake.runs()) == 3 and len(fake.pip_runs()) == 2
    assert hashlib.sha256((cache / fake.wheels[0].filename).read_bytes()).hexdigest() == fake.wheels[0].sha256


@needs_e2fsprogs
def test_a_codebox_layout_saved_before_the_wheels_is_rebuilt(tmp_path: Path, fake: FakeMmdebstrap,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    with_wheels = BUILTIN_IMAGES[CODEBOX_IMAGE]
    monkeypatch.setitem(BUILTIN_IMAGES, CODEBOX_IMAGE, dataclasses.replace(with_wheels, wheels=()))
    old = ImageStore(home).get(CODEBOX_IMAGE)
    assert len(fake.runs()) == 1 and fake.pip_runs() == []
    monkeypatch.setitem(BUILTIN_IMAGES, CODEBOX_IMAGE, with_wheels)
    new = ImageStore(home).get(CODEBOX_IMAGE)  # still tagged, but its saved layout is outdated
    assert len(fake.runs()) == 2 and len(fake.pip_runs()) == 1
    assert new.digest != old.digest and new.reference == CODEBOX_IMAGE
    assert ImageStore(home).get(CODEBOX_IMAGE).digest == new.digest and len(fake.runs()) == 2


@needs_e2fsprogs
def test_a_home_built_before_python_is_python3_is_rebuilt_with_it(tmp_path: Path, fake: FakeMmdebstrap,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A home provisioned before `python` was on PATH gets the new images from `boxlite images build` (what
    scripts/setup.sh runs) or the first box: the recipe changed, so the saved layouts are outdated."""
    home = tmp_path / "home"
    current = {name: BUILTIN_IMAGES[name] for name in (DEFAULT_IMAGE, CODEBOX_IMAGE)}
    for name, spec in current.items():
        old_packages = tuple(p for p in spec.packages if p != "python-is-python3")
        monkeypatch.setitem(BUILTIN_IMAGES, name, dataclasses.replace(spec, packages=old_packages))
    old = {name: ImageStore(home).get(name).digest for name in current}
    assert len(fake.runs()) == 2
    for name, spec in current.items():
        monkeypatch.setitem(BUILTIN_IMAGES, name, spec)
    runtime = SimpleNamespace(images=ImageStore(home))
    assert cli_images.cmd_build(SimpleNamespace(names=[]), runtime) == 0  # type: ignore[arg-type]
    runs = fake.runs()
    assert len(runs) == 4
    assert all(any(arg.startswith("--include=") and "python-is-python3" in arg.split("=", 1)[1].split(",")
                   for arg in run["argv"]) for run in runs[2:])
    for name in current:
        image = ImageStore(home).get(name)
        assert image.reference == name and image.digest != old[name]
    assert len(fake.runs()) == 4  # ready now: not built again


@needs_e2fsprogs
@pytest.mark.parametrize("failure", ["pip fails", "wrong content"])
def test_wheel_download_failures_leave_nothing(tmp_path: Path, fake: FakeMmdebstrap, failure: str) -> None:
    if failure == "pip fails":
        fake.pip_fail_flag.touch()
        match = "pip download failed with exit code 1: ERROR: Could not find a version"
    else:
        (fake.index / fake.wheels[1].filename).write_bytes(b"something else")
        match = f"pip did not download {fake.wheels[1].filename}"
    home = tmp_path / "home"
    with pytest.raises(ImageError, match=match):
        ImageStore(home).get(CODEBOX_IMAGE)
    assert fake.runs() == []
    assert not (home / "images" / "layouts" / "codebox").exists()
    assert list((home / "images" / "tmp").iterdir()) == []
    assert fake.wheels[1].filename not in {p.name for p in (home / "images" / "wheels").iterdir()}


@needs_e2fsprogs
def test_prune_drops_layouts_of_removed_builtins_only(tmp_path: Path, fake: FakeMmdebstrap) -> None:
    home = tmp_path / "home"
    store = ImageStore(home)
    store.get(CODEBOX_IMAGE)
    store.get(DEFAULT_IMAGE)
    layouts = home / "images" / "layouts"
    store.prune()
    assert sorted(p.name for p in layouts.iterdir()) == ["codebox", "default"]  # both still named
    store.remove(CODEBOX_IMAGE)
    assert store.prune() > 0
    assert sorted(p.name for p in layouts.iterdir()) == ["default"]
    store.prune(all=True)
    assert list(layouts.iterdir()) == [] and store.list() == []


@needs_e2fsprogs
def test_build_failure_leaves_nothing(tmp_path: Path, fake: FakeMmdebstrap) -> None:
    fake.fail_flag.touch()
    home = tmp_path / "home"
    with pytest.raises(ImageError, match="apt-get update failed"):
        ImageStore(home).get(CODEBOX_IMAGE)
    assert not (home / "images" / "layouts" / "codebox").exists()
    assert list((home / "images" / "tmp").iterdir()) == []
    assert ImageStore(home).list() == []


# -- the command line ---------------------------------------------------------------------------------------------


@needs_e2fsprogs
def test_cli_lists_and_builds_builtins(
    tmp_path: Path, fake: FakeMmdebstrap, capsys: pytest.CaptureFixture[str]
) -> None:
    runtime: Any = SimpleNamespace(images=ImageStore(tmp_path / "home"))
    ls = SimpleNamespace(builtin=True, json=False, quiet_ids=False)
    assert cli_images.cmd_ls(ls, runtime) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["REFERENCE", "DIGEST", "SIZE", "DESCRIPTION"]
    assert out[1].startswith(DEFAULT_IMAGE) and "(not built)" in out[1]
    assert out[2].startswith(CODEBOX_IMAGE) and "(not built)" in out[2]

    assert cli_images.cmd_build(SimpleNamespace(names=[CODEBOX_IMAGE, "python:3.12"]), runtime) != 0
    captured = capsys.readouterr()
    assert "python:3.12 is not a built-in image" in captured.err
    [printed] = captured.out.splitlines()
    assert printed.startswith(f"{CODEBOX_IMAGE} sha256:")

    assert cli_images.cmd_ls(SimpleNamespace(builtin=True, json=True, quiet_ids=False), runtime) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["reference"], r["digest"] is not None) for r in rows] == [(DEFAULT_IMAGE, False), (CODEBOX_IMAGE, True)]
    assert "python3-pandas" in rows[1]["packages"]
