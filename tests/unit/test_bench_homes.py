"""bench/homes.py: a bench home shares the provisioned assets, cache and images, and nothing else: no template."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from homes import SHARED, bench_home, template_count
from run import expect_boot

import boxlite


def provisioned(tmp_path: Path) -> Path:
    real = tmp_path / "real"
    for sub in (*SHARED, "templates/abc", "boxes/b1"):
        (real / sub).mkdir(parents=True)
    return real


def test_a_bench_home_links_assets_cache_images_and_has_no_templates(tmp_path: Path) -> None:
    real = provisioned(tmp_path)
    assert template_count(real) == 1
    with bench_home(real) as home:
        assert home != real
        assert sorted(p.name for p in home.iterdir()) == sorted(SHARED)
        for sub in SHARED:
            assert (home / sub).is_symlink() and (home / sub).resolve() == (real / sub).resolve()
        assert template_count(home) == 0
        (home / "templates" / "k").mkdir(parents=True)
        assert template_count(home) == 1
    assert not home.exists()  # nothing of a bench run is left behind
    assert template_count(real) == 1  # the real home's templates are untouched


def test_a_bench_home_needs_a_provisioned_home(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "assets").mkdir(parents=True)
    with pytest.raises(boxlite.ConfigError, match="cache"), bench_home(real):
        pass


def test_a_row_stops_the_run_when_the_box_did_not_start_as_it_says() -> None:
    expect_boot("cold_start", "cold", "cold")
    with pytest.raises(RuntimeError, match="cold_start measures a cold start, but the box started 'restored'"):
        expect_boot("cold_start", "restored", "cold")
