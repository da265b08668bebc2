"""Accelerator detection: forced choices, auto, and what counts as hardware KVM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from boxlite import ConfigError, UnsupportedEngineError
from boxlite.engine import accel
from boxlite.engine.accel import Accel, detect_accel, hardware_kvm


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(accel.ACCEL_ENV, raising=False)


def fake_kvm(monkeypatch: pytest.MonkeyPatch, usable: bool, why: str = "because") -> None:
    monkeypatch.setattr(accel, "hardware_kvm", lambda: (usable, why))


def test_forced_tcg() -> None:
    a = detect_accel("tcg")
    assert a.name == "tcg"
    assert a.label == "qemu-tcg"
    assert "forced" in a.reason


def test_forced_tcg_even_with_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kvm(monkeypatch, True)
    assert detect_accel("tcg").name == "tcg"


def test_forced_kvm_when_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kvm(monkeypatch, False, "no /dev/kvm")
    with pytest.raises(UnsupportedEngineError) as info:
        detect_accel("kvm")
    assert "no /dev/kvm" in str(info.value)
    assert str(info.value).startswith("unsupported engine: ")
    assert info.value.fix


def test_forced_kvm_when_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kvm(monkeypatch, True, "hardware KVM")
    a = detect_accel("kvm")
    assert (a.name, a.label) == ("kvm", "qemu-kvm")


@pytest.mark.parametrize(("usable", "name"), [(True, "kvm"), (False, "tcg")])
def test_auto(monkeypatch: pytest.MonkeyPatch, usable: bool, name: str) -> None:
    fake_kvm(monkeypatch, usable, "the reason")
    for forced in (None, "auto", "AUTO"):
        a = detect_accel(forced)
        assert a.name == name
        assert "the reason" in a.reason


@pytest.mark.parametrize("choice", ["xen", "hvf", ""])
def test_unknown_accelerator(choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if choice == "":
        monkeypatch.setenv(accel.ACCEL_ENV, "bogus")
    with pytest.raises(ConfigError) as info:
        detect_accel(choice or None)
    assert "unknown accelerator" in str(info.value)


def test_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kvm(monkeypatch, True)
    monkeypatch.setenv(accel.ACCEL_ENV, "tcg")
    assert detect_accel().name == "tcg"
    # An explicit argument beats the environment.
    assert detect_accel("kvm").name == "kvm"


@pytest.mark.skipif(not (os.path.exists("/dev/kvm") and os.path.exists("/sys/module/kvm_pvm")
                         and not os.path.exists("/sys/module/kvm_intel") and not os.path.exists("/sys/module/kvm_amd")),
                    reason="this host's /dev/kvm is not PVM")
@pytest.mark.ci_may_skip("a fact about PVM hosts; the fake-/dev tests below cover every kind of host")
def test_this_pvm_host_has_no_usable_kvm() -> None:
    usable, why = hardware_kvm()
    assert not usable
    assert "PVM" in why
    with pytest.raises(UnsupportedEngineError, match="PVM"):
        detect_accel("kvm")
    assert detect_accel("auto").name == "tcg"


# -- hardware_kvm against a fake /dev, /sys/module and /proc/cpuinfo -------------------------------------------
@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real_path, real_access = Path, os.access

    def fake(p: str | os.PathLike[str]) -> Path:
        return real_path(tmp_path, str(p).lstrip("/"))

    monkeypatch.setattr(accel, "Path", fake)
    monkeypatch.setattr(accel.os, "access", lambda p, mode: real_access(fake(p), mode))
    (tmp_path / "sys/module").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu vme de pse\n")
    return tmp_path


def add(root: Path, *rel: str) -> None:
    for r in rel:
        path = root / r
        path.parent.mkdir(parents=True, exist_ok=True)
        if r.startswith("sys/module"):
            path.mkdir()
        else:
            path.touch()


def test_hw_no_dev_kvm(fake_root: Path) -> None:
    assert hardware_kvm() == (False, "no /dev/kvm")


def test_hw_pvm(fake_root: Path) -> None:
    add(fake_root, "dev/kvm", "sys/module/kvm", "sys/module/kvm_pvm")
    usable, why = hardware_kvm()
    assert not usable and "PVM" in why


def test_hw_no_vendor_module(fake_root: Path) -> None:
    add(fake_root, "dev/kvm", "sys/module/kvm")
    usable, why = hardware_kvm()
    assert not usable and "kvm_intel" in why


def test_hw_no_cpu_flag(fake_root: Path) -> None:
    add(fake_root, "dev/kvm", "sys/module/kvm_intel")
    usable, why = hardware_kvm()
    assert not usable and "vmx/svm" in why


@pytest.mark.parametrize(("module", "flag"), [("kvm_intel", "vmx"), ("kvm_amd", "svm")])
def test_hw_usable(fake_root: Path, module: str, flag: str) -> None:
    add(fake_root, "dev/kvm", f"sys/module/{module}", "sys/module/kvm_pvm")
    (fake_root / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu {flag} sse\n")
    usable, _ = hardware_kvm()
    assert usable
    assert detect_accel("auto").name == "kvm"


def test_accel_labels() -> None:
    assert Accel("kvm", "x").label == "qemu-kvm"
    assert Accel("tcg", "x").label == "qemu-tcg"
