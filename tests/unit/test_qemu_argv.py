"""The QEMU command line a box is started with."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from boxlite.engine import Accel, VmSpec, qemu_argv, vsock_device_argv
from boxlite.engine.descriptors import referenced
from boxlite.engine.qemu import kernel_cmdline, qcow2_backing_file, qemu_launch, vsock_device_launch

KVM = Accel("kvm", "test")
TCG = Accel("tcg", "test")


def spec(accel: Accel = TCG, vhost_user: bool = True, **changes: object) -> VmSpec:
    base = VmSpec(
        qemu=Path("/usr/bin/qemu-system-x86_64"), kernel=Path("/a/vmlinux"), guest_root=Path("/a/guest.ext4"),
        box_disk=Path("/b/box1/disk.qcow2"), box_dir=Path("/b/box1"), accel=accel, cpus=2, memory_mib=768,
        hostname="box1", ready_port=2696, vhost_user_socket=Path("/b/box1/vhost.sock") if vhost_user else None,
        guest_cid=3 if vhost_user else 1234, tsc_khz=2_600_000, box_disk_backing=Path("/i/image.ext4"),
    )
    return dataclasses.replace(base, **changes)


def option(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag` on the command line."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def fdset_of(argv: list[str], name: str) -> str:
    """The /dev/fdset path QEMU opens descriptor `name` by."""
    [added] = [a for a in option(argv, "-add-fd") if a.startswith("fd={fd:" + name + "},")]
    return "/dev/fdset/" + added.split("set=")[1].split(",")[0]


def test_basics() -> None:
    argv = qemu_argv(spec())
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert option(argv, "-smp") == ["2"]
    assert option(argv, "-m") == ["768M"]
    assert option(argv, "-kernel") == ["/proc/self/fd/{fd:kernel}"]
    assert "-nodefaults" in argv and "-no-reboot" in argv
    assert option(argv, "-M")[0].startswith("microvm")


def test_sandbox_is_on() -> None:
    for s in (spec(), spec(KVM, vhost_user=False)):
        sandbox = option(qemu_argv(s), "-sandbox")
        assert len(sandbox) == 1
        assert sandbox[0].split(",")[0] == "on"
        assert "spawn=deny" in sandbox[0]


def test_vhost_user_needs_shared_memfd_memory() -> None:
    argv = qemu_argv(spec(vhost_user=True))
    memfd = [o for o in option(argv, "-object") if o.startswith("memory-backend-memfd")]
    assert len(memfd) == 1
    assert "share=on" in memfd[0].split(",")
    assert "size=768M" in memfd[0].split(",")
    assert "memory-backend=mem" in option(argv, "-M")[0]
    assert "socket,id=vsock,fd={fd:vhost-user}" in option(argv, "-chardev")
    assert "vhost-user-vsock-device,chardev=vsock" in option(argv, "-device")


def test_kernel_vhost_vsock_has_no_memfd() -> None:
    argv = qemu_argv(spec(vhost_user=False))
    assert not any(o.startswith("memory-backend-memfd") for o in option(argv, "-object"))
    assert "memory-backend" not in option(argv, "-M")[0]
    assert "vhost-vsock-device,guest-cid=1234,vhostfd={fd:vhost}" in option(argv, "-device")


def test_tcg() -> None:
    argv = qemu_argv(spec(TCG))
    accel = option(argv, "-accel")
    assert len(accel) == 1
    assert accel[0].startswith("tcg,tb-size=")
    assert "-cpu" not in argv


def test_kvm() -> None:
    argv = qemu_argv(spec(KVM))
    assert option(argv, "-accel") == ["kvm"]
    assert option(argv, "-cpu") == ["host"]
    i = argv.index("-accel")
    assert argv[i:i + 4] == ["-accel", "kvm", "-cpu", "host"]


def test_disks_are_descriptors_with_an_explicit_backing_file() -> None:
    argv = qemu_argv(spec())
    blockdevs = option(argv, "-blockdev")
    assert f"driver=file,node-name=sys-file,filename={fdset_of(argv, 'sys')},read-only=on" in blockdevs
    assert "driver=raw,node-name=sys,file=sys-file,read-only=on" in blockdevs
    assert f"driver=file,node-name=base-file,filename={fdset_of(argv, 'base')},read-only=on" in blockdevs
    assert f"driver=file,node-name=box-file,filename={fdset_of(argv, 'box')},discard=unmap" in blockdevs
    assert "driver=qcow2,node-name=box,file=box-file,backing=base,discard=unmap" in blockdevs
    assert "-drive" not in argv
    standalone = option(qemu_argv(spec(box_disk_backing=None)), "-blockdev")
    assert "driver=qcow2,node-name=box,file=box-file,discard=unmap" in standalone
    assert not any("base" in b for b in standalone)


def test_every_path_is_a_descriptor() -> None:
    """QEMU is told no path of ours: only descriptors (so it can run as a user who may open none)."""
    for s in (spec(), spec(vhost_user=False), spec(transport="serial", incoming_fd=9)):
        launch = qemu_launch(s)
        text = " ".join(launch.argv[1:])
        assert "/b/" not in text and "/a/" not in text and "/i/" not in text
        opened = {d.name for d in launch.descriptors}
        assert {name for _, name in referenced(launch.argv)} == opened
        paths = {d.name: d.path for d in launch.descriptors}
        assert paths["kernel"] == "/a/vmlinux" and paths["sys"] == "/a/guest.ext4"
        assert paths["box"] == "/b/box1/disk.qcow2" and paths["base"] == "/i/image.ext4"
        assert paths["console"] == "/b/box1/console.log" and paths["qmp"] == "/b/box1/qmp.sock"


def test_console_and_qmp() -> None:
    argv = qemu_argv(spec())
    assert f"file,id=console,path={fdset_of(argv, 'console')}" in option(argv, "-chardev")
    assert "socket,id=qmp,fd={fd:qmp},server=on,wait=off" in option(argv, "-chardev")
    assert option(argv, "-mon") == ["chardev=qmp,mode=control"]


def test_kernel_cmdline() -> None:
    line = option(qemu_argv(spec()), "-append")[0]
    assert line == kernel_cmdline(spec())
    params = line.split()
    assert "boxlite.ready_port=2696" in params
    assert "boxlite.hostname=box1" in params
    assert "init=/sbin/boxlite-init" in params
    assert "tsc_early_khz=2600000" in params


@pytest.mark.parametrize(("accel", "tsc", "expected"), [(TCG, 2_600_000, True), (TCG, None, False),
                                                        (KVM, 2_600_000, False)])
def test_tsc_hint_only_under_tcg(accel: Accel, tsc: int | None, expected: bool) -> None:
    line = kernel_cmdline(spec(accel, tsc_khz=tsc))
    assert ("tsc_early_khz=" in line) is expected


def test_extra_cmdline() -> None:
    assert kernel_cmdline(spec(extra_cmdline=["foo=bar"])).endswith(" foo=bar")


def test_vsock_device_argv() -> None:
    assert vsock_device_argv(Path("/bin/vd"), Path("/s/vhost.sock"), Path("/s/vsock.sock")) == [
        "/bin/vd", "--guest-cid", "3", "--socket", "/s/vhost.sock", "--uds-path", "/s/vsock.sock"]
    assert vsock_device_argv(Path("/bin/vd"), Path("/x"), Path("/y"), guest_cid=9)[2] == "9"
    launch = vsock_device_launch(Path("/bin/vd"), Path("vhost.sock"), Path("vsock.sock"))
    assert launch.argv[0] == "/proc/self/fd/{fd:vsock-device}"
    assert [(d.name, d.kind, d.path) for d in launch.descriptors] == [("vsock-device", "program", "/bin/vd")]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_qcow2_backing_file_is_read_from_the_header(tmp_path: Path) -> None:
    base = tmp_path / "image.ext4"
    base.write_bytes(b"\0" * 65536)
    overlay, alone = tmp_path / "disk.qcow2", tmp_path / "alone.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(alone), "1M"], check=True)
    assert qcow2_backing_file(overlay) == base
    assert qcow2_backing_file(alone) is None
    assert qcow2_backing_file(base) is None  # not a qcow2 at all
