"""Snapshot and template logic that needs no VM: keys, when a template may serve, staleness, disk copies."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest

from boxlite import BoxOptions, ConfigError
from boxlite._netopts import NetworkSpec
from boxlite._snapshots import (
    FORMAT,
    SnapshotInfo,
    fit_options,
    machine_config,
    stale_reason,
    template_allowed,
    template_key,
)
from boxlite.engine import Accel, VmSpec, qemu_argv
from boxlite.engine.network import inline_config, plan_network
from boxlite.engine.qemu import kernel_cmdline
from boxlite.engine.snapshot import copy_sparse

KEY_ARGS: dict[str, object] = {
    "image_digest": "sha256:aa", "kernel": "/a/vmlinux-6.1-k1", "guest_root": "/a/guest-root-g1.ext4",
    "qemu": "QEMU 7.2", "accel": "tcg", "cpus": 1, "memory_mib": 256, "disk_size_bytes": 1 << 30,
    "transport": "serial", "tsc_khz": 2_600_000, "tag": "",
}


def test_template_key_changes_with_everything_the_machine_depends_on() -> None:
    base = template_key(**KEY_ARGS)  # type: ignore[arg-type]
    assert base == template_key(**KEY_ARGS)  # type: ignore[arg-type]
    changes = {"image_digest": "sha256:bb", "kernel": "/a/vmlinux-6.1-k2", "guest_root": "/a/guest-root-g2.ext4",
               "qemu": "QEMU 10.0", "accel": "kvm", "cpus": 2, "memory_mib": 512, "disk_size_bytes": 2 << 30,
               "transport": "vsock", "tsc_khz": 3_000_000, "tag": "codebox"}
    for name, value in changes.items():
        assert template_key(**{**KEY_ARGS, name: value}) != base, name  # type: ignore[arg-type]


def test_template_allowed_only_when_no_vm_affecting_option_is_outside_the_key() -> None:
    assert template_allowed(BoxOptions())
    assert template_allowed(BoxOptions(cpus=1, memory_mib=256, env={"A": "1"}, working_dir="/tmp", name="x",
                                       auto_remove=False, detach=True, user="nobody", cmd=["sh"]))
    assert not template_allowed(BoxOptions(snapshot="s1"))


def _info(tmp_path: Path, **changes: object) -> SnapshotInfo:
    kernel, root = tmp_path / "vmlinux", tmp_path / "guest-root.ext4"
    kernel.touch()
    root.touch()
    values: dict[str, object] = {
        "name": "t", "kind": "template", "path": str(tmp_path / "t"), "created_at": 0.0, "source_box": None,
        "image": "img", "image_digest": "sha256:aa", "cpus": 1, "memory_mib": 256, "disk_size_bytes": 1,
        "accel": "tcg", "transport": "serial", "kernel": str(kernel), "guest_root": str(root), "qemu_version": "q",
        "cmdline": "console=ttyS0", "tsc_khz": None, "guest_uptime_s": 3.0, "image_record": {}, "state_bytes": 1,
        "disk_bytes": 1, "paused_ms": 1.0, "key": "k1",
    }
    values.update(changes)
    return SnapshotInfo(**values)  # type: ignore[arg-type]


def test_stale_when_agent_kernel_format_or_key_changed(tmp_path: Path) -> None:
    info = _info(tmp_path)
    assert stale_reason(info) is None
    assert stale_reason(info, "k1") is None
    assert "changed" in (stale_reason(info, "k2") or "")
    assert "guest root" in (stale_reason(_info(tmp_path, guest_root=str(tmp_path / "gone.ext4"))) or "")
    assert "kernel" in (stale_reason(_info(tmp_path, kernel=str(tmp_path / "gone"))) or "")
    assert "format" in (stale_reason(_info(tmp_path, format=FORMAT + "x")) or "")


def test_copy_sparse_keeps_content_and_holes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    rng = random.Random(1)
    chunks = {0: rng.randbytes(4096), 5 << 20: rng.randbytes(70000), 40 << 20: rng.randbytes(100)}
    with open(src, "wb") as f:
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)
        f.truncate(64 << 20)
    copy_sparse(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks * 512 < 1 << 20  # the holes stayed holes


def _spec(**changes: object) -> VmSpec:
    base = VmSpec(
        qemu=Path("/usr/bin/qemu-system-x86_64"), kernel=Path("/a/vmlinux"), guest_root=Path("/a/guest.ext4"),
        box_disk=Path("/b/disk.qcow2"), box_dir=Path("/b"), accel=Accel("tcg", "test"), cpus=1, memory_mib=256,
        hostname="box1", ready_port=2696, vhost_user_socket=Path("/b/vhost.sock"), transport="serial",
    )
    return dataclasses.replace(base, **changes)


def test_serial_transport_has_a_migratable_portal_port_and_no_vhost_user() -> None:
    argv = qemu_argv(_spec())
    joined = " ".join(argv)
    assert "virtio-serial-device" in joined
    assert "virtserialport,chardev=portal,name=boxlite.portal" in joined
    assert "socket,id=portal,fd={fd:portal}" in joined  # one end of a socket pair the shim holds
    assert "vhost-user" not in joined and "memory-backend-memfd" not in joined
    assert "boxlite.transport=serial" in kernel_cmdline(_spec())


def test_restore_repeats_the_snapshot_command_line_and_reads_the_state_fd() -> None:
    argv = qemu_argv(_spec(cmdline="console=ttyS0 boxlite.hostname=template", incoming_fd=7, tb_size_mib=64))
    assert argv[argv.index("-append") + 1] == "console=ttyS0 boxlite.hostname=template"
    assert argv[argv.index("-incoming") + 1] == "fd:7"
    assert "tcg,tb-size=64" in argv


def test_snapshot_option_rejects_bad_names() -> None:
    from boxlite._errors import ConfigError
    from boxlite._snapshots import _valid_name

    with pytest.raises(ConfigError):
        _valid_name("../x")
    assert _valid_name("snap-1.a_b") == "snap-1.a_b"


# -- a snapshot restores only onto a machine it fits (issue 13) -------------------------------------------------
def _snapshot(tmp_path: Path, network: str = "enabled", **changes: object) -> SnapshotInfo:
    """A snapshot whose kernel command line holds the guest configuration a box of `network` is booted with."""
    plan = plan_network("abcdef123456", NetworkSpec(mode=network), [], [], Path("/usr/bin/passt"))  # type: ignore[arg-type]
    values: dict[str, object] = {"kind": "snapshot", "name": "s1", "image": "alpine:latest", "cpus": 1,
                                 "memory_mib": 256, "disk_size_bytes": 1 << 30,
                                 "image_record": {"disk_bytes": 1 << 30, "reference": "alpine:latest"},
                                 "cmdline": f"console=hvc0 quiet {inline_config(plan)}"}
    values.update(changes)
    return _info(tmp_path, **values)


def test_fit_takes_the_snapshots_machine_for_what_is_unset(tmp_path: Path) -> None:
    fitted = fit_options(_snapshot(tmp_path), BoxOptions(snapshot="s1", env={"A": "1"}, name="x"))
    assert (fitted.cpus, fitted.memory_mib, fitted.network.kind, fitted.env) == (1, 256, "nat", {"A": "1"})
    # A snapshot of a box without a network restores without one: the device set must be the same.
    assert fit_options(_snapshot(tmp_path, "disabled"), BoxOptions(snapshot="s1")).network.kind == "none"
    # Options that say what the snapshot already is are fine.
    same = BoxOptions(snapshot="s1", cpus=1, memory_mib=256, image="alpine:latest", network="enabled",
                      disk_size_gb=1, ports=[], volumes=[])
    assert fit_options(_snapshot(tmp_path), same).network.kind == "nat"
    # disk_size_gb below the image's own size means the image's size (as for a cold boot).
    assert fit_options(_snapshot(tmp_path), BoxOptions(snapshot="s1", disk_size_gb=0.5)).disk_size_gb == 0.5
    assert machine_config(_snapshot(tmp_path))["network"]["kind"] == "nat"
    assert machine_config(_snapshot(tmp_path, cmdline="console=hvc0")) == {}


@pytest.mark.parametrize("network, changes, message", [
    ("enabled", {"ports": [(8080, 80)]}, "cannot publish ports"),
    ("enabled", {"ports": [{"guest_port": 80}]}, "cannot publish ports"),
    ("enabled", {"network": "disabled"}, "taken with network 'enabled'.*cannot have network 'disabled'"),
    ("disabled", {"network": "enabled"}, "taken with network 'disabled'"),
    ("enabled", {"network": {"allow_net": ["example.org:443"]}}, "cannot have an allow_net list"),
    ("enabled", {"volumes": [("{tmp}", "/data", True)]}, "cannot have volumes"),
    ("enabled", {"disk_size_gb": 2}, "disk of 1 GiB.*disk_size_gb=2"),
    ("enabled", {"memory_mib": 512}, "memory_mib=256.*memory_mib=512"),
    ("enabled", {"cpus": 2}, "cpus=1.*cpus=2"),
    ("enabled", {"image": "python:slim"}, "is of image alpine:latest, not python:slim"),
])
def test_fit_refuses_what_the_snapshots_machine_cannot_have(tmp_path: Path, network: str,
                                                            changes: dict[str, object], message: str) -> None:
    if "volumes" in changes:
        changes = {"volumes": [(str(tmp_path), "/data", True)]}
    if "cpus" in changes:  # set without BoxOptions' own check, which refuses cpus=2 on a one-CPU host
        opts = BoxOptions(snapshot="s1").model_copy(update=changes)
    else:
        opts = BoxOptions(snapshot="s1", **changes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message) as caught:
        fit_options(_snapshot(tmp_path, network), opts)
    assert caught.value.fix


def test_fit_refuses_a_rootfs_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rootfs_path"):
        fit_options(_snapshot(tmp_path), BoxOptions(snapshot="s1", rootfs_path=str(tmp_path)))
