"""Box and runtime metrics, and sampling the host processes that make up a box."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from boxlite._state import RUNNING, BoxRecord, process_alive

_TICKS = os.sysconf("SC_CLK_TCK")


class BoxMetrics(BaseModel):
    """One box's counters (monotonic) and resource use (current), with the reference SDK's field names.

    The two CPU figures are over the same interval, the last one: from this Box object's previous `metrics()`
    call to this one, so a panel that asks once a second shows the last second. The first call on a Box object
    (or the first after the box was started again), and a call less than `MIN_CPU_WINDOW_S` (0.5 s) after the
    previous one, wait until that much time has passed and report over it. Never an average since boot.

    - `cpu_percent`: the box's host processes (supervisor, QEMU, helpers); 100 = one host core, as in `top`.
    - `guest_cpu_percent`: the guest kernel's view, busy time over all its vCPUs; 100 = every vCPU busy.

    A command is an `exec()` (so every `SimpleBox.exec`, counted as it starts) or a code cell the kernel ran
    (`CodeBox.run`, a cell of the BoxLite Python kernel; counted when it is answered). An error is a command that
    exited non-zero, or a cell that raised or never finished (its kernel died or was restarted). A cell the
    kernel aborted without running it (after an earlier error, as Jupyter's Run All does) is neither.
    """

    commands_executed_total: int = 0
    exec_errors_total: int = 0
    bytes_sent_total: int = 0
    bytes_received_total: int = 0
    # create() called -> box ready, as the caller saw it (image resolution, disk, VM start, agent ready).
    total_create_duration_ms: float | None = None
    # Measured inside the guest, on its own clock: kernel start -> agent ready (cold boot), or the moment the
    # snapshot was taken -> agent re-identified and ready (restore; the guest's clock resumes from the snapshot).
    # None when it could not be measured (a snapshot whose clock was not read, an agent that did not say).
    guest_boot_duration_ms: float | None = None
    # How the box's latest start happened: "cold" or "restored".
    boot: str | None = None
    # Host view, over the last interval (see above), and the resident memory of the box's host processes now.
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    # Guest view, from the agent: cpu over the last interval, the rest now.
    guest_cpu_percent: float | None = None
    guest_memory_used_bytes: int | None = None
    guest_memory_total_bytes: int | None = None
    guest_processes: int | None = None
    disk_used_bytes: int | None = None
    disk_total_bytes: int | None = None

    # Short names as the reference design documents them.
    @property
    def commands(self) -> int:
        return self.commands_executed_total

    @property
    def errors(self) -> int:
        return self.exec_errors_total

    @property
    def total_create_ms(self) -> float | None:
        return self.total_create_duration_ms

    @property
    def cpu(self) -> float | None:
        return self.cpu_percent

    @property
    def mem(self) -> int | None:
        return self.memory_bytes

    @property
    def guest_boot_ms(self) -> float | None:
        return self.guest_boot_duration_ms


class RuntimeMetrics(BaseModel):
    """Counted in the home directory's state database: every process using that home adds to the same totals."""

    boxes_created_total: int = 0
    boxes_failed_total: int = 0
    # Boxes whose VM is really up now (see `vm_is_up`): status "running", and their supervisor process and the VMM
    # it started both alive. Not boxes merely configured, starting or stopping.
    num_running_boxes: int = 0
    total_commands_executed: int = 0
    total_exec_errors: int = 0

    @property
    def boxes_created(self) -> int:
        return self.boxes_created_total

    @property
    def boxes_failed(self) -> int:
        return self.boxes_failed_total

    @property
    def running(self) -> int:
        return self.num_running_boxes

    @property
    def commands(self) -> int:
        return self.total_commands_executed

    @property
    def errors(self) -> int:
        return self.total_exec_errors


def process_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def vm_is_up(rec: BoxRecord) -> bool:
    """What RuntimeMetrics counts as running: the box's status is "running", its supervisor (the shim) is alive
    (the same process: pid and start time), and so is its VMM, still that supervisor's child (so a recycled pid
    is not taken for it)."""
    return (rec.status == RUNNING and process_alive(rec.shim_pid, rec.shim_start) and rec.vmm_pid is not None
            and process_alive(rec.vmm_pid, None) and parent_pid(rec.vmm_pid) == rec.shim_pid)


def box_process_ids(shim_pid: int | None) -> list[int]:
    """The shim and its children (QEMU, the vsock device)."""
    if not shim_pid:
        return []
    pids = [shim_pid]
    try:
        children = Path(f"/proc/{shim_pid}/task/{shim_pid}/children").read_text().split()
    except OSError:
        children = []
    return pids + [int(c) for c in children]


# The shortest interval a CPU figure is taken over: /proc counts CPU time in 10 ms ticks, so over 0.5 s a figure is
# good to two points, and a panel refreshed once a second is never held up.
MIN_CPU_WINDOW_S = 0.5


@dataclass(frozen=True)
class CpuSample:
    """The CPU time counters of one run of a box's VM, read at one moment."""

    run: tuple[int | None, float | None]  # (supervisor pid, started_at): the counters start again with each run
    at: float  # time.monotonic() on the host
    host_s: float | None  # CPU seconds of the box's host processes
    guest_busy_s: float | None  # the guest's busy CPU seconds, summed over its vCPUs
    guest_total_s: float | None  # the guest's CPU seconds, busy or idle, summed over its vCPUs


def _percent(part: float, whole: float) -> float | None:
    # A negative part means the counters went backwards (a host process of the box exited): no figure.
    return round(100 * part / whole, 1) if whole > 0 and part >= 0 else None


def cpu_percents(start: CpuSample, end: CpuSample) -> tuple[float | None, float | None]:
    """(host, guest) CPU percent between two samples of the same run (see BoxMetrics)."""
    if start.run != end.run:
        return None, None
    host = None
    if start.host_s is not None and end.host_s is not None:
        host = _percent(end.host_s - start.host_s, end.at - start.at)
    guest = None
    if start.guest_busy_s is not None and start.guest_total_s is not None and end.guest_busy_s is not None \
            and end.guest_total_s is not None:
        guest = _percent(end.guest_busy_s - start.guest_busy_s, end.guest_total_s - start.guest_total_s)
    return host, guest


def host_cpu_seconds(shim_pid: int | None) -> float | None:
    """CPU seconds used so far by the box's host processes (the supervisor and its children)."""
    cpu = [c for c in (process_cpu_seconds(p) for p in box_process_ids(shim_pid)) if c is not None]
    return sum(cpu) if cpu else None
