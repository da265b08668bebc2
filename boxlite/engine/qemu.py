"""The QEMU microvm command line for one box, and the vhost-user vsock device that goes with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from boxlite.engine.accel import Accel

GUEST_CID = 3
# Bump whenever the machine (its devices, their options, the kernel parameters) changes: snapshots of another
# machine version cannot be restored (their key includes it).
MACHINE_VERSION = "2"


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
    # "vsock": the portal on vsock (vhost_user_socket or the kernel's); "serial": on a virtio-serial port whose
    # chardev connects to serial_socket. Only "serial" VMs can be snapshotted (vhost-user vsock is unmigratable).
    transport: str = "vsock"
    serial_socket: Path | None = None
    # Restore a snapshot: QEMU reads the migration stream from this inherited descriptor, then runs.
    incoming_fd: int | None = None
    # The kernel command line, when it must be exactly a snapshot's (None: made from this spec).
    cmdline: str | None = None
    # TCG translation cache; a restored VM boots nothing and does well with a smaller one.
    tb_size_mib: int = 128

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
        # Freed pages are zeroed: a snapshot skips them and a restored VM never touches them (host memory).
        "init_on_free=1",
        f"boxlite.ready_port={spec.ready_port}", f"boxlite.hostname={spec.hostname}",
    ]
    if spec.transport == "serial":
        args.append("boxlite.transport=serial")
    if spec.tsc_khz and spec.accel.name == "tcg":
        # microvm has no HPET or PM timer: without this the guest may hang calibrating the TSC under load.
        args += [f"tsc_early_khz={spec.tsc_khz}", "tsc=reliable"]
    return " ".join(args + spec.extra_cmdline)


def qemu_argv(spec: VmSpec) -> list[str]:
    vhost_user = spec.transport == "vsock" and spec.vhost_user_socket is not None
    mem = f"{spec.memory_mib}M"
    machine = "microvm,acpi=off,rtc=on"
    argv = [str(spec.qemu), "-name", f"boxlite-{spec.hostname}", "-nodefaults", "-no-user-config", "-no-reboot",
            "-display", "none", "-smp", str(spec.cpus), "-m", mem]
    if spec.accel.name == "kvm":
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        # 128 MiB of translation cache: measured 0.5 s faster boot than 32 MiB (the agent's imports overflow
        # a small one), for ~80 MiB more RSS.
        argv += ["-accel", f"tcg,tb-size={spec.tb_size_mib}"]
    if vhost_user:
        # vhost-user devices need guest RAM the device process can map.
        argv += ["-object", f"memory-backend-memfd,id=mem,size={mem},share=on"]
        machine += ",memory-backend=mem"
    argv += ["-M", machine]
    argv += ["-kernel", str(spec.kernel), "-append", spec.cmdline or kernel_cmdline(spec)]
    argv += ["-chardev", f"file,id=console,path={spec.console_log}", "-serial", "chardev:console"]
    argv += ["-drive", f"id=sys,file={spec.guest_root},format=raw,if=none,readonly=on",
             "-device", "virtio-blk-device,drive=sys"]
    argv += ["-drive", f"id=box,file={spec.box_disk},format=qcow2,if=none,discard=unmap",
             "-device", "virtio-blk-device,drive=box"]
    if spec.transport == "serial":
        if spec.serial_socket is None:
            raise ValueError("the serial transport needs serial_socket")
        # QEMU connects to the shim's listening socket at startup (server=off): no race, no retry.
        argv += ["-device", "virtio-serial-device,max_ports=2",
                 "-chardev", f"socket,id=portal,path={spec.serial_socket},server=off",
                 "-device", "virtserialport,chardev=portal,name=boxlite.portal"]
    elif vhost_user:
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
    if spec.incoming_fd is not None:
        argv += ["-incoming", f"fd:{spec.incoming_fd}"]
    return argv


def vsock_device_argv(binary: Path, socket: Path, uds_path: Path, guest_cid: int = GUEST_CID) -> list[str]:
    return [str(binary), "--guest-cid", str(guest_cid), "--socket", str(socket), "--uds-path", str(uds_path)]
