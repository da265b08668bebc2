"""A guest root rebuilt inside `create()` (a new agent version over a cached base) fails as a BoxliteError that
names the log and the fix, and leaves nothing half-made: no staging tree, no partial disk, no box.

The failures are real: a base whose chroot has no python3, and a home whose assets and cache the user cannot
write (as root, the test owns them to `nobody` and drops root's override capabilities with setpriv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import boxlite
from boxlite.provision.guest_root import _base_key, guest_root_path

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _need_qemu() -> None:
    # find_assets looks for QEMU before the guest root; without it create() fails earlier, as it should.
    if shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None:
        pytest.skip("QEMU is not installed (scripts/setup.sh installs it)")


def _home_with_a_cached_base(home: Path) -> Path:
    """A home whose cache holds a guest base (an empty tree: no python3 in it) and no guest root yet."""
    base = home / "cache" / f"guest-base-{_base_key()}"
    (base / "usr" / "lib" / "python3" / "dist-packages").mkdir(parents=True)
    (home / "assets").mkdir()
    return base


def _leftovers(home: Path) -> list[str]:
    """Entries a failed rebuild must not leave: staging trees, partial or finished disks."""
    cache = [p.name for p in (home / "cache").iterdir()
             if p.name not in ("guest-root.lock", "guest-root.log") and not p.name.startswith("guest-base-")]
    return sorted(cache + [p.name for p in (home / "assets").iterdir()])


async def test_a_failing_rebuild_in_create_is_a_storage_error_naming_the_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_a_cached_base(home)
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
    try:
        with pytest.raises(boxlite.StorageError) as info:
            await runtime.create(boxlite.BoxOptions())
        assert "chroot" in info.value.detail
        log = home / "cache" / "guest-root.log"
        assert info.value.fix is not None and str(log) in info.value.fix
        assert log.is_file() and log.stat().st_size > 0  # the chroot's own words are kept there
        assert _leftovers(home) == []
        assert not guest_root_path(home / "assets").exists()
        assert await runtime.list_info() == []
    finally:
        await runtime.close()


CREATE_AS_USER = """
import asyncio, json, sys
import boxlite

async def main() -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1]))
    try:
        await runtime.create(boxlite.BoxOptions())
    except boxlite.BoxliteError as exc:
        print(json.dumps({"kind": type(exc).__name__, "detail": exc.detail, "fix": exc.fix}))
    finally:
        await runtime.close()

asyncio.run(main())
"""


def test_an_unwritable_cache_is_a_storage_error_saying_whose_it_is(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_a_cached_base(home)
    if os.geteuid() == 0:
        # assets/ and cache/ belong to another user (as after a `sudo boxlite setup` by someone else), and this
        # root process runs without the capabilities that let root write anywhere.
        for sub in ("assets", "cache"):
            os.chown(home / sub, 65534, 65534)
        prefix = ["setpriv", "--bounding-set=-dac_override,-fowner,-dac_read_search", "--inh-caps=-all"]
    else:
        (home / "cache").chmod(0o555)
        (home / "assets").chmod(0o555)
        prefix = []
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(home), "BOXLITE_HOME": str(home)}
    done = subprocess.run([*prefix, sys.executable, "-c", CREATE_AS_USER, str(home)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout)
    assert error["kind"] == "StorageError", error
    assert "Permission denied" in error["detail"]
    assert "writable" in error["fix"] and str(home / "cache") in error["fix"]
    assert _leftovers(home) == []
