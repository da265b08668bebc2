"""Built-in images, made locally from Debian packages (no container registry involved).

Each built-in image is a recipe (BuiltinImage): a Debian suite, a package list and a run config. mmdebstrap
writes a minimal (`--variant=minbase`) root filesystem with those packages as a tarball; the tarball is
wrapped as a one-layer OCI image layout (kept under HOME/images/layouts/<key>), which the store imports like
any other layout: cached by manifest digest and tagged with the image's name.

Reproducible: the same package versions give the same image digest.
  * mmdebstrap runs with SOURCE_DATE_EPOCH set to a fixed constant (the Debian 12 "bookworm" release day), so
    its tarball is sorted, owned 0:0 and its file times are clamped to that moment; its own cleanup removes the
    files that vary from run to run (dpkg/apt logs, /var/cache/ldconfig/aux-cache, machine ids, package lists).
  * /etc/resolv.conf and /etc/hostname, which mmdebstrap copies from the host, are replaced with fixed content
    (an empty resolv.conf, hostname "boxlite"), so hosts with different network settings agree.
  * the layout around the tarball is deterministic: the config's `created` is the same constant, JSON blobs
    are written with sorted keys, and nothing else (paths, host names, build times) goes into them.
  * a recipe's wheels (pure-Python, for what bookworm packages too old: ipywidgets) are pinned by version and
    sha256. The host's pip downloads them (with its settings: index, proxy, certificates) into
    HOME/images/wheels, where they stay; the image's own pip installs them offline in a customize hook, with
    SOURCE_DATE_EPOCH set, so their .pyc files are hash-checked ones with no build time in them.
The package versions come from this host's apt sources (whatever mirror or snapshot they name); the sources
file is copied into the image by mmdebstrap, so hosts configured with the same sources and seeing the same
package versions build the same digest. A new package version (a point release, a security update) gives a
new digest, but a built image keeps its name until it is removed: `get` rebuilds a cached image only when its
recipe (packages, wheels, hooks, run config: BuiltinImage.recipe) has changed since its layout was saved.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxlite._errors import ImageError
from boxlite.images._files import allocated_bytes, remove_path, scratch_name
from boxlite.images.model import CODEBOX_IMAGE, DEFAULT_IMAGE
from boxlite.images.oci import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_TAR,
    MEDIA_OCI_MANIFEST,
    host_architecture,
)

SUITE = "bookworm"
# 2023-06-10T00:00:00Z, the day Debian 12 "bookworm" was released. A constant (not derived from the packages)
# so that the build needs nothing but the package set; files newer than this are clamped to it in the tarball.
SOURCE_DATE_EPOCH = 1686355200
BASE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_ENV = [BASE_PATH, "LANG=C.UTF-8"]
DEFAULT_WORKDIR = "/root"
DEFAULT_CMD = ["python3"]
# The default image's packages. python-is-python3 is Debian's /usr/bin/python -> python3 symlink: examples (ours,
# upstream BoxLite's) run `python`, as they would in the python:* images of Docker Hub.
PACKAGES = ("python3", "python-is-python3", "ca-certificates")
# Bumped whenever the way built-in images are made changes (hooks, options), so saved layouts are rebuilt.
RECIPE_VERSION = 1
RECIPE_ANNOTATION = "io.boxlite.builtin.recipe"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

# Files mmdebstrap copies from the host, replaced with fixed content (see the module docstring).
_CUSTOMIZE_HOOKS = (
    'rm -f "$1/etc/resolv.conf" && : > "$1/etc/resolv.conf"',
    'rm -f "$1/etc/hostname" && echo boxlite > "$1/etc/hostname"',
)

_HOST_DEB822 = Path("/etc/apt/sources.list.d/debian.sources")
_HOST_SOURCES_LIST = Path("/etc/apt/sources.list")
_ONE_LINE_DEB = re.compile(r"^deb(\s+\[[^\]]*\])?\s+\S+\s+" + SUITE + r"(-updates|-security|/updates)?\s")

# Where the wheels are staged: a directory of the build's scratch directory, which is mmdebstrap's working
# directory (so the hook names it by a relative path, the same on every host), copied to /tmp in the chroot.
_WHEELS_STAGE = "boxlite-wheels"
_WHEELS_IN_CHROOT = f"/tmp/{_WHEELS_STAGE}"
_WHEEL_HOOKS = (
    f"copy-in {_WHEELS_STAGE} /tmp",
    # Offline, with nothing from the host's environment or pip settings; /usr/local/lib/python3.11/dist-packages.
    'umask 022 && chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 '
    f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH} python3 -m pip install --isolated --no-index --no-deps "
    "--no-cache-dir --disable-pip-version-check --no-input --root-user-action=ignore --break-system-packages "
    f"--find-links {_WHEELS_IN_CHROOT} -r {_WHEELS_IN_CHROOT}/requirements.txt",
    f'rm -rf "$1{_WHEELS_IN_CHROOT}"',
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Wheel:
    """A pure-Python wheel installed into a built-in image on top of its Debian packages."""

    filename: str  # as on PyPI, e.g. "ipywidgets-8.1.9-py3-none-any.whl"
    sha256: str

    @property
    def requirement(self) -> str:
        """Its line in a pip requirements file: pinned by version and by hash."""
        name, version = self.filename.split("-")[:2]
        return f"{name}=={version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class BuiltinImage:
    """One entry of the catalog: the packages a built-in image is made of and how its boxes run."""

    name: str  # the reference it is tagged with, e.g. "boxlite/python:3.11-bookworm"
    key: str  # its directory under HOME/images/layouts/ and its lock's name
    description: str
    packages: tuple[str, ...]
    env: tuple[str, ...] = tuple(DEFAULT_ENV)
    working_dir: str = DEFAULT_WORKDIR
    cmd: tuple[str, ...] = tuple(DEFAULT_CMD)
    build_time: str = "about a minute"  # shown while building
    suite: str = SUITE
    wheels: tuple[Wheel, ...] = ()  # installed with pip after the packages (see the module docstring)

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]

    def run_config(self) -> dict[str, Any]:
        return {"Env": list(self.env), "WorkingDir": self.working_dir, "Cmd": list(self.cmd)}

    def created_by(self) -> str:
        made = f"mmdebstrap --variant=minbase --include={','.join(self.packages)} {self.suite}"
        if self.wheels:
            made += "; pip install " + " ".join(wheel.requirement.split(" ")[0] for wheel in self.wheels)
        return made

    def hooks(self) -> tuple[str, ...]:
        """mmdebstrap's customize hooks, in order."""
        return _CUSTOMIZE_HOOKS + (_WHEEL_HOOKS if self.wheels else ())

    def recipe(self) -> str:
        """A digest of everything that decides the image's content other than the package versions."""
        recipe = {
            "version": RECIPE_VERSION,
            "suite": self.suite,
            "packages": list(self.packages),
            "config": self.run_config(),
            "hooks": list(self.hooks()),
            "source_date_epoch": SOURCE_DATE_EPOCH,
        }
        if self.wheels:  # (only then: an image without wheels keeps the recipe, and so the layout, it had)
            recipe["wheels"] = [[wheel.filename, wheel.sha256] for wheel in self.wheels]
        data = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(data).hexdigest()


DEFAULT = BuiltinImage(
    name=DEFAULT_IMAGE,
    key="default",
    description="Python 3.11 on a minimal Debian bookworm",
    packages=PACKAGES,
)

CODEBOX = BuiltinImage(
    name=CODEBOX_IMAGE,
    key="codebox",
    description="Python 3.11 with ipykernel, ipywidgets, numpy, pandas, matplotlib (Agg backend) and pip",
    packages=(
        "python3",
        "python-is-python3",  # `python` on PATH, as in the default image
        "python3-ipykernel",
        "python3-numpy",
        "python3-pandas",
        "python3-matplotlib",
        # python3-fonttools (a matplotlib dependency) needs "python3-scipy | python3-munkres": naming munkres
        # keeps apt from picking scipy, which would drag in pythran, g++, boost and OpenBLAS headers (~570 MiB).
        "python3-munkres",
        # pip for CodeBox.install_packages (from an index with a network, or from wheels copied into the box).
        "python3-pip",
        "ca-certificates",
        # Not python3-ipywidgets: bookworm has 6.0.0 (2017), whose widget models ("jupyter-js-widgets" ~2.1)
        # current front ends (ipywidgets 7/8 managers) do not render, and it pulls in the classic notebook
        # server (+47 packages, ~83 MiB). ipywidgets 8.1 comes as wheels (below) instead.
    ),
    env=(BASE_PATH, "LANG=C.UTF-8", "MPLBACKEND=Agg"),
    build_time="a minute or two",
    wheels=(
        # ipywidgets 8.1: widget protocol 2.1, models "2.0.0", what JupyterLab 4 (jupyterlab_widgets 3.0) and
        # Notebook 7 render. It needs comm, IPython and traitlets (bookworm's 8.5 and 5.5 will do). With
        # bookworm's ipykernel 6.17 (older than 6.18, the first built on `comm`) ipywidgets opens its comms
        # through ipykernel.comm itself (ipywidgets/comm.py); the kernel launcher (boxlite/_codebox.py) points
        # comm.create_comm there too, for libraries that use `comm` directly.
        Wheel("ipywidgets-8.1.9-py3-none-any.whl", "f2b8cbcaae10252b809fbe4d7470db75c09b769a32cbf816d20e5ca6d3c5a79d"),
        Wheel("comm-0.2.3-py3-none-any.whl", "c615d91d75f7f04f095b30d1c1711babd43bdc6419c1be9886a85f2f4e489417"),
        # Front-end assets only (unused in a box, ~10 MiB), but ipywidgets requires them: with them pip sees a
        # consistent install, and `pip install` of a widget library works offline and fetches nothing more.
        Wheel("widgetsnbextension-4.0.16-py3-none-any.whl",
              "a31a8774885b96fe825462f5d6496166f0c7cae111195b6465c801d230eb5a4e"),
        Wheel("jupyterlab_widgets-3.0.17-py3-none-any.whl",
              "40ac1e9955acf116c4d995d9bfa082d86ad9ec6d91c4f134827cf5e0a5eb75e0"),
    ),
)

BUILTIN_IMAGES: Mapping[str, BuiltinImage] = {image.name: image for image in (DEFAULT, CODEBOX)}


def builtin_image(reference: str) -> BuiltinImage | None:
    """The catalog entry named reference, or None."""
    return BUILTIN_IMAGES.get(reference)


# -- building ------------------------------------------------------------------------------------


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


def layout_is_current(spec: BuiltinImage, layout_dir: Path) -> bool:
    """True when layout_dir holds a layout built from spec's current recipe (so it can be imported as is)."""
    try:
        index = json.loads((layout_dir / "index.json").read_text())
        annotations = index["manifests"][0]["annotations"]
        return bool(annotations.get(RECIPE_ANNOTATION) == spec.recipe())
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False


def build_layout(spec: BuiltinImage, dest: Path, tmp_dir: Path, progress: Progress,
                 wheels_dir: Path | None = None) -> None:
    """Build spec's OCI layout into dest (replacing whatever is there).

    spec's wheels are downloaded into wheels_dir (default: tmp_dir's sibling "wheels") unless already there.
    """
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageError(
            f"cannot build the built-in image {spec.name}: mmdebstrap is not installed",
            fix="apt-get install mmdebstrap (or pass rootfs_path with an OCI layout directory)",
        )
    tmp_dir.mkdir(parents=True, exist_ok=True)
    work = scratch_name(tmp_dir, f"{spec.key}-layout").absolute()
    work.mkdir()
    try:
        tar_path = work / "rootfs.tar"
        what = "default image" if spec.name == DEFAULT_IMAGE else "built-in image"
        progress(f"building {what} {spec.name} from Debian packages ({spec.build_time}, once)")
        if spec.wheels:
            wheels = fetch_wheels(spec.wheels, wheels_dir or tmp_dir.parent / "wheels", work, progress)
            stage_wheels(spec.wheels, wheels, work / _WHEELS_STAGE)
        started = time.monotonic()
        _run_mmdebstrap(mmdebstrap, spec, tar_path, progress, cwd=work)
        progress(f"mmdebstrap finished in {time.monotonic() - started:.0f} s; wrapping the root filesystem "
                 "as an OCI layout")
        layout = work / "layout"
        write_single_layer_layout(
            layout,
            tar_path,
            run_config=spec.run_config(),
            created_by=spec.created_by(),
            ref_name=spec.tag,
            annotations={RECIPE_ANNOTATION: spec.recipe()},
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_path(dest)
        os.rename(layout, dest)
    finally:
        remove_path(work)


# -- wheels ---------------------------------------------------------------------------------------------


def fetch_wheels(wheels: tuple[Wheel, ...], cache: Path, tmp_dir: Path, progress: Progress) -> dict[Wheel, Path]:
    """Each wheel's file in cache, checked against its sha256; pip downloads the ones missing.

    pip runs with this host's settings (index, proxy, certificates), as `pip download` would.
    """
    cache.mkdir(parents=True, exist_ok=True)
    missing = [wheel for wheel in wheels if _sha256(cache / wheel.filename) != wheel.sha256]
    if missing:
        progress(f"downloading {', '.join(wheel.filename for wheel in missing)} with pip")
        work = Path(tempfile.mkdtemp(prefix="wheels-", dir=tmp_dir))
        try:
            requirements = work / "requirements.txt"
            requirements.write_text("".join(wheel.requirement + "\n" for wheel in missing))
            cmd = [*_pip_command(), "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                   "--no-input", "--require-hashes", "-r", str(requirements), "-d", str(work / "files")]
            try:
                done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                      errors="replace", timeout=900)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise ImageError(f"could not run pip to download wheels: {e}",
                                 fix="check that this host can reach PyPI (pip download works)") from e
            if done.returncode != 0:
                tail = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-4:]
                raise ImageError(
                    f"pip download failed with exit code {done.returncode}: " + " | ".join(tail),
                    fix="check that this host can reach PyPI, or the index its pip is set up with "
                    "(pip download works)",
                )
            # pip checked the hashes; the files are matched by content, whatever the index named them.
            by_hash = {_sha256(path): path for path in (work / "files").iterdir()}
            for wheel in missing:
                if wheel.sha256 not in by_hash:
                    raise ImageError(f"pip did not download {wheel.filename} (sha256 {wheel.sha256})",
                                     fix="check the index this host's pip is set up with")
                os.replace(by_hash[wheel.sha256], cache / wheel.filename)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {wheel: cache / wheel.filename for wheel in wheels}


def stage_wheels(wheels: tuple[Wheel, ...], files: Mapping[Wheel, Path], stage: Path) -> None:
    """Put the wheels and their requirements file (every one pinned by hash) where the pip hook finds them."""
    stage.mkdir()
    for wheel in wheels:
        shutil.copyfile(files[wheel], stage / wheel.filename)
        if _sha256(stage / wheel.filename) != wheel.sha256:  # changed in the cache since it was checked
            raise ImageError(f"{files[wheel]} does not have the sha256 {wheel.sha256}",
                             fix=f"delete {files[wheel]} and build again")
    (stage / "requirements.txt").write_text("".join(wheel.requirement + "\n" for wheel in wheels))


def _pip_command() -> list[str]:
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ImageError("cannot download the built-in image's wheels: pip is not installed",
                     fix="install pip (apt-get install python3-pip, or python3 -m ensurepip)")


def _sha256(path: Path) -> str | None:
    try:
        return _file_digest(path)[0].split(":", 1)[1]
    except OSError:
        return None


def mmdebstrap_command(mmdebstrap: str, spec: BuiltinImage, tar_path: Path, mirrors: list[str]) -> list[str]:
    return [
        mmdebstrap,
        "--variant=minbase",
        f"--include={','.join(spec.packages)}",
        *(f"--customize-hook={hook}" for hook in spec.hooks()),
        spec.suite,
        str(tar_path),
        *mirrors,
    ]


def mmdebstrap_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "TZ": "UTC", "LC_ALL": "C.UTF-8"})
    return env


def _run_mmdebstrap(mmdebstrap: str, spec: BuiltinImage, tar_path: Path, progress: Progress,
                    cwd: Path | None = None) -> None:
    mirrors, stdin_text = mirror_arguments()
    cmd = mmdebstrap_command(mmdebstrap, spec, tar_path, mirrors)
    tail: collections.deque[str] = collections.deque(maxlen=15)
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=mmdebstrap_environment(),
            cwd=cwd,  # where special hooks' outside paths start (the staged wheels)
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
            elif line.startswith(("I: running --customize-hook", "I: running special hook")):
                progress(f"mmdebstrap: running a customize hook ({_hook_purpose(line)})")
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


def _hook_purpose(line: str) -> str:
    if "pip install" in line:
        return "pip installs the wheels, offline"
    if _WHEELS_STAGE in line:
        return "copying the wheels in" if "copy-in" in line else "removing the copied wheels"
    return "fixed /etc/resolv.conf, /etc/hostname"


# -- the OCI layout around the tarball -----------------------------------------------------------------


def fixed_created() -> str:
    """The `created` time of every built-in image: SOURCE_DATE_EPOCH, so that it does not change the digest."""
    return datetime.datetime.fromtimestamp(SOURCE_DATE_EPOCH, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_single_layer_layout(
    layout: Path,
    layer_tar: Path,
    *,
    run_config: dict[str, Any],
    created_by: str,
    ref_name: str,
    created: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> str:
    """Write an OCI layout whose one uncompressed layer is layer_tar (moved in). Returns the manifest digest.

    Deterministic: the same tar, run config, created_by and created (default: SOURCE_DATE_EPOCH) give the same
    blobs and so the same manifest digest. annotations go on index.json's entry only (not into the digest).
    """
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_digest, layer_size = _file_digest(layer_tar)
    os.rename(layer_tar, blobs / layer_digest.split(":", 1)[1])
    arch = host_architecture()
    created = created or fixed_created()
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
                "annotations": {REF_NAME_ANNOTATION: ref_name, **(annotations or {})},
            }
        ],
    }
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}) + "\n")
    (layout / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
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


# -- locks and cleanup ---------------------------------------------------------------------------------


def lock_path(locks_dir: Path, spec: BuiltinImage) -> Path:
    return locks_dir / f"builtin-{spec.key}.lock"


@contextlib.contextmanager
def building_lock(locks_dir: Path, spec: BuiltinImage, progress: Progress) -> Iterator[None]:
    """Hold spec's build lock (exclusive), saying so when another process is building it and we must wait."""
    path = lock_path(locks_dir, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process that is building {spec.name}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def prune_layouts(layouts_dir: Path, locks_dir: Path, keep: set[str]) -> int:
    """Delete the saved layouts under layouts_dir whose key is not in keep; returns the bytes freed.

    A layout being built right now (its build lock is held) is left alone.
    """
    try:
        entries = sorted(layouts_dir.iterdir())
    except FileNotFoundError:
        return 0
    locks_dir.mkdir(parents=True, exist_ok=True)
    freed = 0
    for entry in entries:
        if entry.name in keep or entry.name.startswith("."):
            continue
        fd = os.open(locks_dir / f"builtin-{entry.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            size = allocated_bytes(entry)
            remove_path(entry)
            freed += size
        finally:
            os.close(fd)
    return freed
