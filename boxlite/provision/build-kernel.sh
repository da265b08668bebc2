#!/bin/sh
# Build the minimal guest kernel (Linux 6.1 from Debian's linux-source-6.1) as an uncompressed PVH vmlinux.
# Usage: build-kernel.sh SOURCE_TARBALL WORKDIR OUTPUT
# Everything the guest needs is built in (no modules), so the VM boots straight to init with no initramfs.
set -eu
src=$1 work=$2 out=$3
mkdir -p "$work"
cd "$work"
if [ ! -f .extracted ]; then
    echo "extracting $(basename "$src")"
    tar -xf "$src" --strip-components=1
    touch .extracted
fi
make -s tinyconfig
y="64BIT SMP PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE BLK_DEV_INITRD BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS
DEVTMPFS DEVTMPFS_MOUNT TMPFS MULTIUSER FUTEX EPOLL SIGNALFD TIMERFD EVENTFD SHMEM AIO FILE_LOCKING POSIX_TIMERS
UNIX98_PTYS CGROUPS MEMCG NAMESPACES PID_NS NET_NS UTS_NS IPC_NS USER_NS SECCOMP SECCOMP_FILTER HYPERVISOR_GUEST
PARAVIRT KVM_GUEST PVH PCI ACPI NET UNIX INET PACKET VIRTIO_NET VSOCKETS VIRTIO_VSOCKETS VIRTIO VIRTIO_MENU VIRTIO_PCI
VIRTIO_MMIO VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_BALLOON VIRTIO_BLK VIRTIO_CONSOLE HW_RANDOM HW_RANDOM_VIRTIO EXT4_FS
EXT4_USE_FOR_EXT2 EXT4_FS_POSIX_ACL EXT4_FS_SECURITY OVERLAY_FS NET_9P NET_9P_VIRTIO 9P_FS FUSE_FS VIRTIO_FS RTC_CLASS RTC_DRV_CMOS INOTIFY_USER
PROC_SYSCTL BLOCK BLK_DEV DEVPTS_MULTIPLE_INSTANCES CGROUP_PIDS CGROUP_SCHED FAIR_GROUP_SCHED CPUSETS
POSIX_MQUEUE SYSVIPC FHANDLE CRYPTO CRYPTO_CRC32C PROC_PID_CPUSET TASKSTATS IPV6 NETDEVICES NET_CORE
VIRTIO_INPUT PRINTK_TIME MEMBARRIER RSEQ ADVISE_SYSCALLS KALLSYMS HIGH_RES_TIMERS NO_HZ_IDLE
PVPANIC PVPANIC_MMIO"
n="MODULES"
args=""
for o in $y; do args="$args --enable $o"; done
for o in $n; do args="$args --disable $o"; done
# shellcheck disable=SC2086
./scripts/config $args
make -s olddefconfig
# olddefconfig may drop options whose dependencies are missing: fail loudly rather than boot a kernel without them.
for o in PVH VIRTIO_MMIO VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_BLK EXT4_FS VIRTIO_VSOCKETS SERIAL_8250_CONSOLE DEVTMPFS UNIX; do
    grep -q "^CONFIG_$o=y" .config || { echo "kernel config lost CONFIG_$o" >&2; exit 1; }
done
echo "compiling kernel with $(nproc) jobs (a few minutes)"
make -s -j"$(nproc)" vmlinux
cp vmlinux "$out.tmp"
strip --strip-debug "$out.tmp" 2>/dev/null || true
mv "$out.tmp" "$out"
echo "kernel ready: $out"
