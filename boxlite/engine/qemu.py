"""The QEMU microvm command line for one box, and the vhost-user vsock device that goes with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from boxlite.engine.accel import Accel

GUEST_CID = 3


@dataclass(frozen=True)
class VmSpec:
    qemu: Path
    kernel: Path
    guest_root: Path
    box_disk: Path
    box_dir: Path
    accel: Accel
    cpus: int
    memory_mib: int
    hostname: str
    ready_port: int
    # None: the host kernel's vhost-vsock (guest CID `guest_cid`); else the vhost-user device's socket.
    vhost_user_socket: Path | None
    guest_cid: int = GUEST_CID
    tsc_khz: int | None = None
    # Where unix sockets go (paths are limited to 108 bytes); the box directory when None.
    socket_dir: Path | None = None
    extra_cmdline: list[str] = field(default_factory=list)
    # More devices (network, shared folders: boxlite/engine/network.py), as QEMU arguments.
    devices: list[str] = field(default_factory=list)

    @property
    def console_log(self) -> Path:
        return self.box_dir / "console.log"

    @property
    def qmp_socket(self) -> Path:
        return (self.socket_dir or self.box_dir) / "qmp.sock"


def kernel_cmdline(spec: VmSpec) -> str:
    args = [
        "console=ttyS0", "root=/dev/vda", "rootfstype=ext4", "ro", "init=/sbin/boxlite-init",
        "quiet", "loglevel=4", "panic=-1", "reboot=t", "nomodule", "random.trust_cpu=on",
        f"boxlite.ready_port={spec.ready_port}", f"boxlite.hostname={spec.hostname}",
    ]
    if spec.tsc_khz and spec.accel.name == "tcg":
        # microvm has no HPET or PM timer: without this the guest may hang calibrating the TSC under load.
        args += [f"tsc_early_khz={spec.tsc_khz}", "tsc=reliable"]
    return " ".join(args + spec.extra_cmdline)


def qemu_argv(spec: VmSpec) -> list[str]:
    mem = f"{spec.memory_mib}M"
    machine = "microvm,acpi=off,rtc=on"
    argv = [str(spec.qemu), "-name", f"boxlite-{spec.hostname}", "-nodefaults", "-no-user-config", "-no-reboot",
            "-display", "none", "-smp", str(spec.cpus), "-m", mem]
    if spec.accel.name == "kvm":
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        # 128 MiB of translation cache: measured 0.5 s faster boot than 32 MiB (the agent's imports overflow
        # a small one), for ~80 MiB more RSS.
        argv += ["-accel", "tcg,tb-size=128"]
    if spec.vhost_user_socket is not None:
        # vhost-user devices need guest RAM the device process can map.
        argv += ["-object", f"memory-backend-memfd,id=mem,size={mem},share=on"]
        machine += ",memory-backend=mem"
    argv += ["-M", machine]
    argv += ["-kernel", str(spec.kernel), "-append", kernel_cmdline(spec)]
    argv += ["-chardev", f"file,id=console,path={spec.console_log}", "-serial", "chardev:console"]
    argv += ["-drive", f"id=sys,file={spec.guest_root},format=raw,if=none,readonly=on",
             "-device", "virtio-blk-device,drive=sys"]
    argv += ["-drive", f"id=box,file={spec.box_disk},format=qcow2,if=none,discard=unmap",
             "-device", "virtio-blk-device,drive=box"]
    if spec.vhost_user_socket is not None:
        argv += ["-chardev", f"socket,id=vsock,path={spec.vhost_user_socket}",
                 "-device", "vhost-user-vsock-device,chardev=vsock"]
    else:
        argv += ["-device", f"vhost-vsock-device,guest-cid={spec.guest_cid}"]
    # Entropy from the host: without it the guest's first getrandom() blocks for a second or more under TCG.
    argv += ["-object", "rng-random,id=rng,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng"]
    if spec.devices:
        # Without ACPI, microvm has 8 virtio-mmio transports on IRQs 5-12, filled from the top; the fifth device
        # lands on IRQ 8, the RTC's, and its driver fails to probe ("Flags mismatch irq 8"). A device no
        # driver of ours claims (no SCSI in the guest kernel) takes that slot.
        argv += ["-device", "virtio-scsi-device,id=rtc-irq-hole"]
    argv += spec.devices
    argv += ["-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]
    argv += ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    return argv


def vsock_device_argv(binary: Path, socket: Path, uds_path: Path, guest_cid: int = GUEST_CID) -> list[str]:
    return [str(binary), "--guest-cid", str(guest_cid), "--socket", str(socket), "--uds-path", str(uds_path)]
