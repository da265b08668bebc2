"""Removing an image, on real VMs: the start template the first box leaves behind goes with the image; a box
or a snapshot based on the image keeps it.

The image is imported into a home of the test's own (the provisioned kernel and guest root are shared through
symlinks, the images directory is not), so removing it never touches the images other tests use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def own_home(tmp_path: Path, real_home: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    for sub in ("assets", "cache"):
        (home / sub).symlink_to(real_home / sub, target_is_directory=True)
    return home


def _left_in(directory: Path) -> list[str]:
    """What a directory holds besides lock files (".KEY.lock"): templates, and trash a discard left behind."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


@pytest.mark.timeout(900)
async def test_an_image_only_templates_use_is_removed_with_them(own_home: Path, real_home: Path) -> None:
    layout = real_home / "images" / "layouts" / "default"  # the default image's layout, imported under another name
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=own_home))
    async with runtime:
        image = runtime.images.import_layout(layout)
        box = await runtime.create(boxlite.BoxOptions(image=image.reference, auto_remove=False), name="user-box")
        try:
            assert box.info().boot == "cold"
            [template] = runtime.snapshots.templates()  # the first box of its kind leaves one behind
            assert template.image_digest == image.digest and (template.dir / "state").is_file()

            # A live box uses the image: refused, naming the box, and nothing is discarded.
            with pytest.raises(boxlite.InvalidStateError) as caught:
                runtime.images.remove(image.reference)
            assert caught.value.detail.endswith("is used by 1 box(es): user-box")
            assert "boxlite rm -f" in caught.value.fix
            assert template.dir.is_dir() and image.disk_path.is_file()
            await box.snapshot("keep")
        finally:
            await runtime.remove(box.id, force=True)

        # The box is gone, but a user's snapshot still needs the image's disk: refused too.
        with pytest.raises(boxlite.InvalidStateError) as caught:
            runtime.images.remove(image.reference)
        assert caught.value.detail.endswith("is used by 1 box(es): snapshot keep")
        assert "boxlite snapshot rm" in caught.value.fix
        runtime.snapshots.remove("keep")

        # Only the start template is left: the image goes, and the template with it.
        removed = runtime.images.remove(image.reference)
        assert removed.deleted == image.digest and removed.untagged == [image.reference]
        assert removed.templates_discarded == [template.key]
        assert removed.bytes_freed >= template.state_bytes
        assert not template.dir.exists() and not image.disk_path.exists()
        assert runtime.snapshots.templates() == [] and _left_in(own_home / "templates") == []
        assert runtime.images.list() == []

        # Imported again, the image's first box boots cold (no template of the old one is restored).
        again = runtime.images.import_layout(layout)
        assert again.digest == image.digest
        async with boxlite.SimpleBox(image=again.reference, runtime=runtime) as fresh:
            assert fresh.info().boot == "cold"
            result = await fresh.exec("python3", "-c", "print(6*7)")
            assert result.exit_code == 0 and result.stdout == "42\n", result.stderr
