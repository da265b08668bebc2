"""The arithmetic and definitions behind BoxMetrics and RuntimeMetrics (the VM side is tests/vm/test_metrics.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite._metrics import CpuSample, cpu_percents, vm_is_up
from boxlite._portal import portal_pb2 as pb
from boxlite._shim import _guest_boot_ms, _restored_boot_ms
from boxlite._state import RUNNING, STOPPING, BoxRecord, StateStore, process_start_ticks


def sample(at: float, host: float | None, busy: float | None, total: float | None,
           run: tuple[int | None, float | None] = (100, 1.0)) -> CpuSample:
    return CpuSample(run=run, at=at, host_s=host, guest_busy_s=busy, guest_total_s=total)


def test_cpu_is_over_the_interval_between_two_samples_not_since_boot() -> None:
    # Since boot the guest was busy 60% of the time; over the last second it was busy 5%.
    start, end = sample(10.0, 50.0, 600.0, 1000.0), sample(11.0, 50.25, 600.05, 1001.0)
    host, guest = cpu_percents(start, end)
    assert (host, guest) == (25.0, 5.0)


def test_guest_cpu_is_a_share_of_all_vcpus_and_host_cpu_of_one_core() -> None:
    # Two vCPUs, one busy for the whole second: half the guest; QEMU used 1.1 host cores for it.
    host, guest = cpu_percents(sample(0.0, 0.0, 0.0, 0.0), sample(1.0, 1.1, 1.0, 2.0))
    assert (host, guest) == (110.0, 50.0)


def test_no_cpu_figure_across_runs_or_from_missing_or_backward_counters() -> None:
    assert cpu_percents(sample(0, 1, 1, 2, run=(100, 1.0)), sample(1, 2, 2, 3, run=(101, 5.0))) == (None, None)
    assert cpu_percents(sample(0, None, None, None), sample(1, 2, 2, 3)) == (None, None)
    # A host process of the box exited between the samples: its CPU time left the sum.
    assert cpu_percents(sample(0, 5, 1, 2), sample(1, 4, 1.5, 3))[0] is None
    assert cpu_percents(sample(0, 5, 1, 2), sample(0, 5, 1, 2)) == (None, None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "boxlite.db")
    yield s
    s.close()


def test_bump_each_adds_one_to_every_counter(store: StateStore) -> None:
    store.bump_each("box:a:commands", "commands")
    store.bump_each("box:a:commands", "commands")
    store.bump_each("commands")
    assert store.counters() == {"box:a:commands": 2, "commands": 3}


def running_record(shim_pid: int | None, vmm_pid: int | None, status: str = RUNNING) -> BoxRecord:
    shim_start = process_start_ticks(shim_pid) if shim_pid else None
    return BoxRecord(id="abcdef123456", name=None, status=status, config={}, image={}, box_dir="/b",
                     created_at=time.time(), shim_pid=shim_pid, shim_start=shim_start, vmm_pid=vmm_pid)


def test_running_means_supervisor_and_its_vmm_alive() -> None:
    """RuntimeMetrics.running as documented: status running, the supervisor alive, the VMM alive and its child.
    This process stands in for the supervisor, a child of it for the VMM (both real processes)."""
    vmm = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert vm_is_up(running_record(os.getpid(), vmm.pid))
        assert not vm_is_up(running_record(os.getpid(), vmm.pid, status=STOPPING))
        # A live process that is not the supervisor's child (a recycled pid) is not its VMM.
        assert not vm_is_up(running_record(os.getpid(), 1))
        assert not vm_is_up(running_record(os.getpid(), None))
        # The supervisor's pid with another start time is another process.
        rec = running_record(os.getpid(), vmm.pid)
        rec.shim_start = (rec.shim_start or 0) + 1
        assert not vm_is_up(rec)
    finally:
        vmm.communicate(b"")
    assert not vm_is_up(running_record(os.getpid(), vmm.pid))  # the VMM has exited


@pytest.mark.anyio
async def test_runtime_counts_as_running_only_boxes_whose_vmm_is_their_supervisors_child(tmp_path: Path) -> None:
    """Through Boxlite.metrics(): a running record whose "VMM" pid is a live process the supervisor did not
    start (pid 1 here, as a recycled pid would be) is not a running box."""
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=tmp_path))
    vmm = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        runtime._store.insert(running_record(os.getpid(), vmm.pid))
        impostor = running_record(os.getpid(), 1)
        impostor.id = "fedcba654321"
        runtime._store.insert(impostor)
        assert (await runtime.metrics()).running == 1
    finally:
        vmm.communicate(b"")
        await runtime.close()


def test_restored_boot_ms_is_measured_or_none() -> None:
    # The guest's clock resumed at 41.25 s (the snapshot's moment) and said ready at 41.5 s.
    assert _restored_boot_ms(41.5, 41.25) == 250.0
    # Without the snapshot's moment, or without the agent's clock, there is nothing to measure: no stand-in.
    assert _restored_boot_ms(41.5, None) is None
    assert _restored_boot_ms(0.0, 41.25) is None
    # A clock that went backwards is not a boot time either.
    assert _restored_boot_ms(41.0, 41.25) is None


def test_cold_boot_ms_comes_from_the_agent_or_is_none() -> None:
    assert _guest_boot_ms(pb.Ready(agent_version="1", boot_ms=1234.56).SerializeToString()) == 1234.6
    assert _guest_boot_ms(pb.Ready(agent_version="1").SerializeToString()) is None  # an agent that did not say
