"""The QEMU microvm command line for one box, and the vhost-user vsock device that goes with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from boxlite.engine.accel import Accel
from boxlite.engine.descriptors import (
    CONNECT,
    DEVICE,
    KERNEL,
    LISTEN,
    LOG,
    PAIR,
    PROGRAM,
    READ,
    READ_WRITE,
    Descriptor,
    FdSets,
    fd,
)

GUEST_CID = 3
# Bump whenever the machine (its devices, their options, the kernel parameters) changes: snapshots of another
# machine version cannot be restored (their key includes it).
MACHINE_VERSION = "3"


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
    # The raw image disk the box's qcow2 overlay is backed by (None: the overlay stands alone).
    box_disk_backing: Path | None = None
    tsc_khz: int | None = None
    # Where unix sockets go (paths are limited to 108 bytes); the box directory when None.
    socket_dir: Path | None = None
    extra_cmdline: list[str] = field(default_factory=list)
    # More devices (network, shared folders: boxlite/engine/network.py), as QEMU arguments, and the
    # descriptors they refer to.
    devices: list[str] = field(default_factory=list)
    device_descriptors: list[Descriptor] = field(default_factory=list)
    # "vsock": the portal on vsock (vhost_user_socket or the kernel's); "serial": on a virtio-serial port whose
    # chardev is one end of a socket pair whose other end the shim keeps. Only "serial" VMs can be snapshotted
    # (vhost-user vsock is unmigratable).
    transport: str = "vsock"
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


def qcow2_backing_file(qcow2: Path) -> Path | None:
    """The file a qcow2 overlay is backed by, from its header (bytes 8-19: offset and length of the name).
    Box overlays are always made over a raw image disk (`qemu-img create -F raw`)."""
    with open(qcow2, "rb") as f:
        header = f.read(20)
        if header[:4] != b"QFI\xfb":
            return None
        offset, length = int.from_bytes(header[8:16], "big"), int.from_bytes(header[16:20], "big")
        if not offset or not length:
            return None
        f.seek(offset)
        name = f.read(length).decode()
    return qcow2.parent / name  # a relative name is relative to the overlay; an absolute one stays as it is


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


@dataclass(frozen=True)
class QemuLaunch:
    """QEMU's command line (with descriptor placeholders) and the descriptors the shim opens for it."""

    argv: list[str]
    descriptors: list[Descriptor]


def qemu_launch(spec: VmSpec) -> QemuLaunch:
    """QEMU reaches every file and socket of the box through a descriptor (boxlite/engine/descriptors.py), so
    it needs no access to any path of ours and can run as a user of its own."""
    vhost_user = spec.transport == "vsock" and spec.vhost_user_socket is not None
    files: list[Descriptor] = []
    sets = FdSets()

    def in_set(name: str, kind: str, path: Path) -> str:
        files.append(Descriptor(name, kind, str(path)))
        return sets.add(name)

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
    files.append(Descriptor("kernel", KERNEL, str(spec.kernel)))
    argv += ["-kernel", f"/proc/self/fd/{fd('kernel')}", "-append", spec.cmdline or kernel_cmdline(spec)]
    devices = ["-chardev", f"file,id=console,path={in_set('console', LOG, spec.console_log)}",
               "-serial", "chardev:console"]
    devices += ["-blockdev", f"driver=file,node-name=sys-file,filename={in_set('sys', READ, spec.guest_root)},"
                "read-only=on",
                "-blockdev", "driver=raw,node-name=sys,file=sys-file,read-only=on",
                "-device", "virtio-blk-device,drive=sys"]
    # The overlay's backing file is given explicitly: QEMU would otherwise open the name in its header.
    backing = ""
    if spec.box_disk_backing is not None:
        devices += ["-blockdev", f"driver=file,node-name=base-file,"
                    f"filename={in_set('base', READ, spec.box_disk_backing)},read-only=on",
                    "-blockdev", "driver=raw,node-name=base,file=base-file,read-only=on"]
        backing = ",backing=base"
    devices += ["-blockdev", f"driver=file,node-name=box-file,filename={in_set('box', READ_WRITE, spec.box_disk)},"
                "discard=unmap",
                "-blockdev", f"driver=qcow2,node-name=box,file=box-file{backing},discard=unmap",
                "-device", "virtio-blk-device,drive=box"]
    if spec.transport == "serial":
        files.append(Descriptor("portal", PAIR))
        devices += ["-device", "virtio-serial-device,max_ports=2",
                    "-chardev", f"socket,id=portal,fd={fd('portal')}",
                    "-device", "virtserialport,chardev=portal,name=boxlite.portal"]
    elif vhost_user:
        # The shim connects to the device's socket (the device is up by then) and hands QEMU the connection.
        files.append(Descriptor("vhost-user", CONNECT, str(spec.vhost_user_socket)))
        devices += ["-chardev", f"socket,id=vsock,fd={fd('vhost-user')}",
                    "-device", "vhost-user-vsock-device,chardev=vsock"]
    else:
        files.append(Descriptor("vhost", DEVICE, "/dev/vhost-vsock"))
        devices += ["-device", f"vhost-vsock-device,guest-cid={spec.guest_cid},vhostfd={fd('vhost')}"]
    # Entropy from the host: without it the guest's first getrandom() blocks for a second or more under TCG.
    devices += ["-object", "rng-random,id=rng,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng"]
    if spec.devices:
        # Without ACPI, microvm has 8 virtio-mmio transports on IRQs 5-12, filled from the top; the fifth device
        # lands on IRQ 8, the RTC's, and its driver fails to probe ("Flags mismatch irq 8"). A device no
        # driver of ours claims (no SCSI in the guest kernel) takes that slot.
        devices += ["-device", "virtio-scsi-device,id=rtc-irq-hole"]
    devices += spec.devices
    files += spec.device_descriptors
    # QMP on a socket the shim binds (in the box's private directory) and QEMU only accepts on.
    files.append(Descriptor("qmp", LISTEN, str(spec.qmp_socket)))
    devices += ["-chardev", f"socket,id=qmp,fd={fd('qmp')},server=on,wait=off", "-mon", "chardev=qmp,mode=control"]
    devices += ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    if spec.incoming_fd is not None:
        devices += ["-incoming", f"fd:{spec.incoming_fd}"]
    return QemuLaunch(argv=argv + sets.args + devices, descriptors=files)


def qemu_argv(spec: VmSpec) -> list[str]:
    """QEMU's command line alone (placeholders unfilled)."""
    return qemu_launch(spec).argv


def vsock_device_argv(binary: Path, socket: Path, uds_path: Path, guest_cid: int = GUEST_CID) -> list[str]:
    return [str(binary), "--guest-cid", str(guest_cid), "--socket", str(socket), "--uds-path", str(uds_path)]


def vsock_device_launch(binary: Path, socket: Path, uds_path: Path, guest_cid: int = GUEST_CID) -> QemuLaunch:
    """The vhost-user vsock device run from a descriptor of its binary (boxlite/engine/descriptors.py)."""
    argv = vsock_device_argv(Path(f"/proc/self/fd/{fd('vsock-device')}"), socket, uds_path, guest_cid)
    return QemuLaunch(argv=argv, descriptors=[Descriptor("vsock-device", PROGRAM, str(binary))])
