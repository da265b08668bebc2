"""One real box booted from an image pulled from the local registry (the default image plus a layer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ocitools import derived_layout, directory, make_tar, push, reg

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


@pytest.fixture
def vm_assets(provisioned_home: Path) -> Path:
    layout = provisioned_home / "images" / "layouts" / "default"
    if not (layout / "index.json").is_file():
        pytest.skip(f"the default image layout {layout} is missing (run `boxlite setup`)")
    return provisioned_home


async def test_box_boots_from_a_pulled_image(registry: str, repo: str, vm_assets: Path, tmp_path: Path) -> None:
    extra = make_tar([directory("srv"), directory("srv/app"), reg("srv/app/hello.txt", b"hello from a pull\n")])
    config = {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=pulled"],
        "WorkingDir": "/srv/app",
        "Cmd": ["python3"],
    }
    layout = derived_layout(vm_assets / "images" / "layouts" / "default", tmp_path / "oci", extra, config)
    ref = f"{registry}/{repo}:1"
    digest = push(layout, ref)

    home = tmp_path / "home"
    home.mkdir()
    for sub in ("assets", "cache"):  # the provisioned kernel and guest root; images are pulled fresh
        (home / sub).symlink_to(vm_assets / sub, target_is_directory=True)
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=home))
    async with runtime, boxlite.SimpleBox(image=ref, runtime=runtime) as box:
        result = await box.exec("sh", "-c", 'echo "$GREETING $(pwd)"; cat hello.txt; python3 -c "print(6*7)"')
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "pulled /srv/app\nhello from a pull\n42\n"
        info = await box.box.info()
        assert info.image == ref
        with pytest.raises(boxlite.InvalidStateError, match="used by"):
            runtime.images.remove(ref)
    assert [i.digest for i in runtime.images.list()] == [digest]
