"""Box and runtime metrics, and sampling the host processes that make up a box."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel

_TICKS = os.sysconf("SC_CLK_TCK")


class BoxMetrics(BaseModel):
    """One box's counters (monotonic) and resource use (current), with the reference SDK's field names."""

    commands_executed_total: int = 0
    exec_errors_total: int = 0
    bytes_sent_total: int = 0
    bytes_received_total: int = 0
    # create() called -> box ready, as the caller saw it (image resolution, disk, VM start, agent ready).
    total_create_duration_ms: float | None = None
    # Measured inside the guest, on its own clock: kernel start -> agent ready (cold boot), or the moment the
    # snapshot was taken -> agent re-identified and ready (restore; the guest's clock resumes from the snapshot).
    guest_boot_duration_ms: float | None = None
    # How the box's latest start happened: "cold" or "restored".
    boot: str | None = None
    # Host view: CPU of all the box's host processes (100 = one host core) and their resident memory.
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    # Guest view, from the agent.
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
    # Boxes whose VM is really up now (their supervisor and VMM processes alive), not merely configured.
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


class CpuSampler:
    """CPU percentage between successive calls (the first call: the average since `since`)."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def percent(self, cpu_seconds: float, since: float | None) -> float | None:
        now = time.time()
        if self._last is None:
            self._last = (now, cpu_seconds)
            if since is None or now <= since:
                return None
            return round(100 * cpu_seconds / (now - since), 1)
        last_time, last_cpu = self._last
        self._last = (now, cpu_seconds)
        if now - last_time <= 0:
            return None
        return round(100 * (cpu_seconds - last_cpu) / (now - last_time), 1)
