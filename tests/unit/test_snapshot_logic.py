"""Snapshot and template logic that needs no VM: keys, when a template may serve, staleness, disk copies."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest

from boxlite import BoxOptions
from boxlite._snapshots import FORMAT, SnapshotInfo, stale_reason, template_allowed, template_key
from boxlite.engine import Accel, VmSpec, qemu_argv
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
