"""The built-in images for real: built from Debian packages with mmdebstrap, then boxes booted from them.

The image is built in the real home (~/.boxlite, or $BOXLITE_HOME), where it stays cached: only the first run
pays for the build (about a minute or two, plus the disk). The `runtime` fixture's home shares those images.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.images import CODEBOX_IMAGE, DEFAULT_IMAGE, Image, ImageStore
from boxlite.images._files import human_size

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="module")
def codebox_image(real_home: Path) -> Iterator[Image]:
    store = ImageStore(real_home)
    cached = dict((spec.name, image) for spec, image in store.builtin_images())[CODEBOX_IMAGE]
    if cached is None and shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (needed once, to build the CodeBox image)")
    lines: list[str] = []
    started = time.monotonic()
    image = store.get(CODEBOX_IMAGE, progress=lines.append)
    took = time.monotonic() - started
    on_disk = image.disk_path.stat().st_blocks * 512
    print(f"\n{CODEBOX_IMAGE} {image.digest}: {'built' if cached is None else 'cached'} in {took:.1f} s, "
          f"disk {human_size(image.disk_bytes)} ({human_size(on_disk)} on disk)")
    if cached is None:
        print("\n".join(lines))
    yield image


@pytest.mark.timeout(1800)
async def test_codebox_boots_and_imports_the_scientific_stack(
    codebox_image: Image, runtime: boxlite.Boxlite
) -> None:
    assert codebox_image.reference == CODEBOX_IMAGE
    assert "MPLBACKEND=Agg" in codebox_image.env
    async with boxlite.SimpleBox(image=CODEBOX_IMAGE, runtime=runtime, name="codebox-test") as box:
        r = await box.exec("python3", "-c", "import numpy, pandas, matplotlib, ipykernel; print(numpy.__version__)",
                           timeout=300)
        assert r.exit_code == 0, r.stderr
        assert r.stdout.strip().startswith("1.")  # bookworm ships numpy 1.24

        plot = (
            "import matplotlib, matplotlib.pyplot as plt, pandas as pd, ipykernel\n"
            "from ipykernel.comm import Comm\n"
            "df = pd.DataFrame({'x': [1, 2, 3], 'y': [2, 4, 8]})\n"
            "df.plot(x='x', y='y'); plt.savefig('/tmp/p.png')\n"
            "print(matplotlib.get_backend(), ipykernel.__version__, open('/tmp/p.png', 'rb').read(4))\n"
        )
        r = await box.exec("python3", "-c", plot, timeout=300)
        assert r.exit_code == 0, r.stderr
        backend, _kernel_version, png = r.stdout.split(maxsplit=2)
        assert backend.lower() == "agg" and png.strip() == r"b'\x89PNG'"


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", [DEFAULT_IMAGE, CODEBOX_IMAGE])
async def test_python_is_on_path(name: str, real_home: Path, runtime: boxlite.Boxlite) -> None:
    """Examples (the seed's, upstream BoxLite's) run `python`, not `python3`: it works in every built-in image."""
    ImageStore(real_home).get(name)  # made now if missing (a home made before python-is-python3 rebuilds it)
    async with boxlite.SimpleBox(image=name, runtime=runtime) as box:
        r = await box.exec("python", "-c", "import sys; print(sys.executable, sys.version_info.major)", timeout=300)
        assert r.exit_code == 0, r.stderr
        assert r.stdout == "/usr/bin/python 3\n"
