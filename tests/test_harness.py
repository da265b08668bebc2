"""The test harness itself: a VM test may skip only where QEMU or the provisioned assets are absent, never on CI
(CI=true, where every skip is a failure), and a broken guest fails it. Each case runs a real VM test of this
repository in a child pytest against a home made for the case; no VM boots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]  # each case starts a child pytest (several seconds on a loaded machine)

REPO = Path(__file__).resolve().parents[1]
A_VM_TEST = "tests/vm/test_exec.py::test_stdout_and_stderr_are_captured_separately"
A_ROOT_ONLY_SKIP = "tests/unit/test_files_logic.py::test_grpc_host_read_error_is_reported"


def run_pytest(node: str, home: Path, ci: str | None, repo: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`pytest node` in a child, in checkout `repo`, with BOXLITE_HOME=home and CI=ci (unset when None)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["BOXLITE_HOME"] = str(home)
    env["PYTHONPATH"] = str(repo)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", node, "-p", "no:cacheprovider", "-q", "-rA"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def summary(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


def test_without_assets_a_vm_test_skips_and_says_why(tmp_path: Path) -> None:
    result = run_pytest(A_VM_TEST, tmp_path / "empty-home", ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in summary(result) and "failed" not in summary(result) and "error" not in summary(result)
    assert "the guest kernel" in result.stdout and "boxlite setup" in result.stdout


def test_on_ci_without_assets_a_vm_test_fails(tmp_path: Path) -> None:
    result = run_pytest(A_VM_TEST, tmp_path / "empty-home", ci="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped" not in summary(result) and "1 error" in summary(result), summary(result)
    assert "CI=true, and this test skipped" in result.stdout and "the guest kernel" in result.stdout


def test_on_ci_a_module_skipped_whole_fails(tmp_path: Path) -> None:
    """pytest.importorskip at import skips a module at collection, before any test's report: CI fails it too."""
    repo = checkout_copy(tmp_path / "checkout")
    (repo / "tests" / "unit" / "test_needs_a_missing_module.py").write_text(
        "import pytest\n\npytest.importorskip('no_such_module_here')\n\n\ndef test_x() -> None:\n    pass\n")
    result = run_pytest("tests/unit/test_needs_a_missing_module.py", tmp_path / "home", ci="true", repo=repo)
    assert result.returncode not in (0, 5) and "skipped" not in summary(result), result.stdout + result.stderr
    assert "CI=true, and this test skipped" in result.stdout and "no_such_module_here" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the test it runs skips only for root")
def test_on_ci_a_test_about_one_kind_of_host_may_still_skip(tmp_path: Path) -> None:
    result = run_pytest(A_ROOT_ONLY_SKIP, tmp_path / "home", ci="true")
    assert result.returncode == 0 and "1 skipped" in summary(result), result.stdout + result.stderr


def checkout_copy(where: Path) -> Path:
    """A copy of this checkout's sources and tests, to change for one case."""
    for name in ("boxlite", "guest", "codebox_kernel", "proto", "tests"):
        shutil.copytree(REPO / name, where / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(REPO / name, where / name)
    return where


def broken_checkout(where: Path) -> Path:
    """A checkout whose agent has one module that does not compile: no guest root can be made from it."""
    (checkout_copy(where) / "guest" / "broken_on_purpose.py").write_text("def broken(:\n")
    return where


def home_without_a_guest_root(provisioned: Path, home: Path) -> Path:
    """The provisioned kernel, vsock device, images and cached Debian base, linked in; no guest root, so the
    first use makes one from the checkout's agent (in this home, never the real one)."""
    for sub, pattern in (("assets", "vmlinux-*"), ("assets", "vhost-device-vsock"), ("cache", "guest-base-*")):
        (home / sub).mkdir(parents=True, exist_ok=True)
        for found in (provisioned / sub).glob(pattern):
            (home / sub / found.name).symlink_to(found.resolve())
    (home / "images").symlink_to(provisioned / "images", target_is_directory=True)
    return home


@pytest.mark.vm
def test_a_broken_guest_fails_the_vm_tests_not_skips_them(provisioned_home: Path, tmp_path: Path) -> None:
    home = home_without_a_guest_root(provisioned_home, tmp_path / "home")
    result = run_pytest(A_VM_TEST, home, ci=None, repo=broken_checkout(tmp_path / "checkout"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "skipped" not in summary(result) and "1 error" in summary(result), result.stdout
    assert "broken_on_purpose.py" in result.stdout  # the compiler's complaint, shown with the failure
    assert not list((home / "assets").glob("guest-root-*")), "no guest root made from a broken agent"
