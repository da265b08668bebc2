"""How a VM is started: accelerator detection and the QEMU microvm command line.

The engine is deliberately small: it turns a `VmSpec` into the argv of the processes that make up one VM
(the VMM and, where needed, a user-space vsock device). The per-box shim runs and supervises them.
"""

from boxlite.engine.accel import Accel, detect_accel
from boxlite.engine.qemu import VmSpec, qemu_argv, vsock_device_argv

__all__ = ["Accel", "VmSpec", "detect_accel", "qemu_argv", "vsock_device_argv"]
