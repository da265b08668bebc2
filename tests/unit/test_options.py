"""Options: invalid values fail at construction with a ConfigError that says what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import boxlite
from boxlite import BoxOptions, ConfigError, Options

HOST_CPUS = os.cpu_count() or 1


def test_defaults() -> None:
    opts = BoxOptions()
    assert (opts.image, opts.rootfs_path, opts.cpus, opts.memory_mib) == (None, None, 1, 512)
    assert opts.env == {}
    assert opts.auto_remove is True and opts.detach is False


@pytest.mark.parametrize("cpus", [0, -1, HOST_CPUS + 1, 1000])
def test_cpus_out_of_range(cpus: int) -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(cpus=cpus)
    assert str(info.value).startswith(f"configuration error: CPU count must be between 1 and {HOST_CPUS}")
    assert info.value.fix


@pytest.mark.parametrize("cpus", sorted({1, HOST_CPUS}))
def test_cpus_in_range(cpus: int) -> None:
    assert BoxOptions(cpus=cpus).cpus == cpus


@pytest.mark.parametrize("memory", [127, 65537, 0, -512])
def test_memory_out_of_range(memory: int) -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(memory_mib=memory)
    assert "memory_mib must be between 128 and 65536" in str(info.value)


@pytest.mark.parametrize("memory", [128, 65536])
def test_memory_bounds_are_inclusive(memory: int) -> None:
    assert BoxOptions(memory_mib=memory).memory_mib == memory


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(cpus="two")
    assert "cpus" in str(info.value)
    assert "'two'" in str(info.value)


@pytest.mark.parametrize("size", [0, -1, 2049])
def test_disk_size_out_of_range(size: float) -> None:
    with pytest.raises(ConfigError, match="disk_size_gb"):
        BoxOptions(disk_size_gb=size)


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(cpu=2)
    assert "unknown option 'cpu'" in str(info.value)
    assert "cpus" in str(info.value)  # the valid options are listed
    with pytest.raises(ConfigError, match="unknown option 'home'"):
        Options(home="/tmp")


def test_relative_rootfs_path() -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(rootfs_path="relative/layout")
    assert "rootfs_path must be an absolute path" in str(info.value)
    assert "relative/layout" in str(info.value)


def test_rootfs_path_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        BoxOptions(rootfs_path=str(tmp_path / "missing"))
    assert BoxOptions(rootfs_path=str(tmp_path)).rootfs_path == str(tmp_path)


def test_image_and_rootfs_path_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(image=boxlite.DEFAULT_IMAGE, rootfs_path=str(tmp_path))
    assert "either image or rootfs_path, not both" in str(info.value)


def test_env_as_pairs_and_as_dict() -> None:
    assert BoxOptions(env=[("A", "1"), ("B", "two words")]).env == {"A": "1", "B": "two words"}
    assert BoxOptions(env=(("A", 1),)).env == {"A": "1"}
    assert BoxOptions(env={"A": "1"}).env == {"A": "1"}


@pytest.mark.parametrize("env", [["A=1"], [("A", "1", "extra")], [("A",)], "A=1"])
def test_bad_env(env: object) -> None:
    with pytest.raises(ConfigError):
        BoxOptions(env=env)


@pytest.mark.parametrize("name", ["", "-leading-dash", ".hidden", "has space", "slash/name", "a" * 65,
                                  "semi;colon", "tab\tname"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(name=name)
    assert "invalid box name" in str(info.value)


@pytest.mark.parametrize("name", ["a", "web-1", "db_2.test", "A" * 64, "0start"])
def test_good_names(name: str) -> None:
    assert BoxOptions(name=name).name == name


def test_working_dir_must_be_absolute() -> None:
    with pytest.raises(ConfigError, match="working_dir must be an absolute path"):
        BoxOptions(working_dir="tmp")
    assert BoxOptions(working_dir="/srv").working_dir == "/srv"


def test_runtime_options() -> None:
    # Unset means "auto, unless BOXLITE_ACCEL says otherwise".
    assert Options().accel in (None, "auto")
    assert Options(accel="tcg").accel == "tcg"
    with pytest.raises(ConfigError, match="accel"):
        Options(accel="xen")
    with pytest.raises(ConfigError, match="boot_timeout_s must be positive"):
        Options(boot_timeout_s=0)


def test_home_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Options(home_dir=Path("h")).home_dir == tmp_path.resolve() / "h"
    assert Options(home_dir="~/x").home_dir == Path.home().resolve() / "x"


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        BoxOptions(cpus=0, memory_mib=1)
    assert "CPU count" in str(info.value) and "memory_mib" in str(info.value)


def test_invalid_assignment_is_a_config_error() -> None:
    """validate_assignment is on, so assignments are validated too, and must fail like construction does."""
    opts = BoxOptions()
    with pytest.raises(ConfigError):
        opts.cpus = 0
    with pytest.raises(ConfigError):
        opts.name = "bad name"
