"""Which accelerator this host really has: hardware KVM, or QEMU's software emulation (TCG).

/dev/kvm alone proves nothing: on a PVM host (`kvm_pvm`) it exists, but stock guest kernels cannot boot
under it. Hardware KVM means the CPU advertises vmx/svm and kvm_intel or kvm_amd is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from boxlite._errors import ConfigError, UnsupportedEngineError

AccelName = Literal["kvm", "tcg"]
ACCEL_ENV = "BOXLITE_ACCEL"


@dataclass(frozen=True)
class Accel:
    name: AccelName
    reason: str

    @property
    def label(self) -> str:
        return "qemu-kvm" if self.name == "kvm" else "qemu-tcg"


def _cpu_has_virtualisation() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return " vmx" in flags or " svm" in flags


def hardware_kvm() -> tuple[bool, str]:
    """(usable, why) for hardware KVM on this host."""
    modules = Path("/sys/module")
    if not Path("/dev/kvm").exists():
        return False, "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user (add yourself to the kvm group)"
    if (modules / "kvm_pvm").exists() and not ((modules / "kvm_intel").exists() or (modules / "kvm_amd").exists()):
        return False, "/dev/kvm is PVM (kvm_pvm), which cannot boot a stock guest kernel"
    if not ((modules / "kvm_intel").exists() or (modules / "kvm_amd").exists()):
        return False, "neither kvm_intel nor kvm_amd is loaded"
    if not _cpu_has_virtualisation():
        return False, "the CPU advertises no vmx/svm"
    return True, "hardware KVM (kvm_intel/kvm_amd on a vmx/svm CPU)"


def detect_accel(forced: str | None = None) -> Accel:
    """Pick KVM where it really works, else TCG. `forced` (or $BOXLITE_ACCEL) is "auto", "kvm" or "tcg"."""
    choice = (forced or os.environ.get(ACCEL_ENV) or "auto").lower()
    if choice not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"unknown accelerator {choice!r}", fix='use "auto", "kvm" or "tcg"')
    usable, why = hardware_kvm()
    if choice == "tcg":
        return Accel("tcg", "forced: software emulation (TCG)")
    if choice == "kvm":
        if not usable:
            raise UnsupportedEngineError(f"KVM was asked for but is not usable: {why}",
                                         fix='use accel "auto" or "tcg" on this host')
        return Accel("kvm", "forced: " + why)
    if usable:
        return Accel("kvm", why)
    return Accel("tcg", f"software emulation (TCG): {why}")
