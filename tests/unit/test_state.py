"""The state database: records, lookups, reconciliation of boxes whose VM is gone, counters."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from boxlite._errors import AlreadyExistsError, NotFoundError
from boxlite._state import (
    FAILED,
    RUNNING,
    STOPPED,
    BoxRecord,
    StateStore,
    host_boot_id,
    process_alive,
    process_start_ticks,
)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "state" / "boxlite.db")
    yield s
    s.close()


def record(box_id: str, name: str | None = None, status: str = STOPPED, created_at: float | None = None,
           **extra: object) -> BoxRecord:
    return BoxRecord(id=box_id, name=name, status=status, config={"cpus": 1, "env": {"A": "b"}},
                     image={"reference": "img"}, box_dir=f"/boxes/{box_id}", created_at=created_at or time.time(),
                     **extra)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_insert_and_find(store: StateStore) -> None:
    store.insert(record("abcdef123456", "web"))
    rec = store.find("abcdef123456")
    assert rec is not None
    assert (rec.id, rec.name, rec.status) == ("abcdef123456", "web", STOPPED)
    assert rec.config == {"cpus": 1, "env": {"A": "b"}}  # JSON round trip
    assert rec.image == {"reference": "img"}
    assert store.find("web").id == "abcdef123456"
    assert store.find("nothing") is None


def test_unique_prefix(store: StateStore) -> None:
    store.insert(record("abcdef123456"))
    store.insert(record("abc999999999"))
    assert store.find("abcd").id == "abcdef123456"
    assert store.find("abc9").id == "abc999999999"
    # Fewer than four characters is never a prefix match.
    store.insert(record("fff000000000"))
    assert store.find("fff") is None


def test_ambiguous_prefix(store: StateStore) -> None:
    store.insert(record("abcd00000001"))
    store.insert(record("abcd00000002"))
    with pytest.raises(NotFoundError) as info:
        store.find("abcd")
    assert "ambiguous" in str(info.value)
    assert str(info.value).startswith("box not found: abcd")
    assert store.find("abcd00000002").id == "abcd00000002"


def test_prefix_is_literal(store: StateStore) -> None:
    store.insert(record("abcdef123456"))
    assert store.find("%%%%") is None
    assert store.find("a_cd") is None


def test_duplicate_name(store: StateStore) -> None:
    store.insert(record("aaaa00000001", "web"))
    with pytest.raises(AlreadyExistsError) as info:
        store.insert(record("aaaa00000002", "web"))
    assert str(info.value).startswith("box already exists: web")
    assert [r.id for r in store.all()] == ["aaaa00000001"]
    # Unnamed boxes do not collide.
    store.insert(record("bbbb00000001"))
    store.insert(record("bbbb00000002"))
    assert len(store.all()) == 3


def test_get_unknown(store: StateStore) -> None:
    with pytest.raises(NotFoundError) as info:
        store.get("nope")
    assert str(info.value).startswith("box not found: nope")


def test_update_and_delete(store: StateStore) -> None:
    store.insert(record("aaaa00000001", "web"))
    store.update("aaaa00000001", status=STOPPED, error="boom", guest_boot_ms=12.5)
    rec = store.get("web")
    assert (rec.error, rec.guest_boot_ms) == ("boom", 12.5)
    store.update("aaaa00000001")  # nothing to change is fine
    store.delete("aaaa00000001")
    assert store.find("web") is None
    # The name is free again.
    store.insert(record("aaaa00000002", "web"))


def test_all_is_ordered_by_creation(store: StateStore) -> None:
    store.insert(record("bbbb00000001", created_at=1000.0))
    store.insert(record("aaaa00000001", created_at=2000.0))
    store.insert(record("cccc00000001", created_at=1500.0))
    assert [r.id for r in store.all()] == ["bbbb00000001", "cccc00000001", "aaaa00000001"]


def test_shared_between_connections(tmp_path: Path) -> None:
    a, b = StateStore(tmp_path / "db"), StateStore(tmp_path / "db")
    a.insert(record("aaaa00000001", "web"))
    assert b.get("web").id == "aaaa00000001"
    with pytest.raises(AlreadyExistsError):
        b.insert(record("aaaa00000002", "web"))
    a.close()
    b.close()


# -- reconciliation --------------------------------------------------------------------------------------------
def test_running_box_from_another_boot_becomes_stopped(store: StateStore) -> None:
    store.insert(record("aaaa00000001", status=RUNNING, boot_id="some-other-boot", shim_pid=os.getpid(),
                        vmm_pid=os.getpid()))
    rec = store.get("aaaa00000001")
    assert rec.status == STOPPED
    assert rec.shim_pid is None and rec.vmm_pid is None
    assert rec.stopped_at
    assert rec.error is None
    # The correction is stored, not just returned.
    assert store.all()[0].status == STOPPED


def test_running_box_with_dead_shim_becomes_failed(store: StateStore) -> None:
    store.insert(record("aaaa00000001", status=RUNNING, boot_id=host_boot_id(), shim_pid=dead_pid()))
    rec = store.get("aaaa00000001")
    assert rec.status == FAILED
    assert rec.shim_pid is None
    assert "died" in rec.error


def test_recycled_pid_is_not_our_shim(store: StateStore) -> None:
    # This process is alive, but its start time is not the one recorded: the pid was recycled.
    ticks = process_start_ticks(os.getpid())
    store.insert(record("aaaa00000001", status=RUNNING, boot_id=host_boot_id(), shim_pid=os.getpid(),
                        shim_start=ticks + 1))
    assert store.get("aaaa00000001").status == FAILED


def test_running_box_with_live_shim_stays_running(store: StateStore) -> None:
    store.insert(record("aaaa00000001", status=RUNNING, boot_id=host_boot_id(), shim_pid=os.getpid(),
                        shim_start=process_start_ticks(os.getpid())))
    assert store.get("aaaa00000001").status == RUNNING


def test_existing_error_is_kept(store: StateStore) -> None:
    store.insert(record("aaaa00000001", status=RUNNING, boot_id=host_boot_id(), shim_pid=dead_pid(),
                        error="qemu said no"))
    assert store.get("aaaa00000001").error == "qemu said no"


def test_inactive_records_are_left_alone(store: StateStore) -> None:
    store.insert(record("aaaa00000001", status=STOPPED, boot_id="other", shim_pid=dead_pid()))
    rec = store.get("aaaa00000001")
    assert rec.status == STOPPED
    assert rec.stopped_at is None


def test_process_alive() -> None:
    me = os.getpid()
    assert process_alive(me, process_start_ticks(me))
    assert process_alive(me, None)
    assert not process_alive(me, process_start_ticks(me) + 1)
    assert not process_alive(dead_pid(), None)
    assert not process_alive(None, None)
    assert not process_alive(0, None)


# -- counters ---------------------------------------------------------------------------------------------------
def test_counters(store: StateStore) -> None:
    assert store.counters() == {}
    store.bump("commands")
    store.bump("commands")
    store.bump("exec_errors", by=5)
    store.bump("box:aaaa:commands")
    store.bump("box:aaaa:exec_errors")
    store.bump("box:bbbb:commands")
    assert store.counters() == {"commands": 2, "exec_errors": 5, "box:aaaa:commands": 1,
                                "box:aaaa:exec_errors": 1, "box:bbbb:commands": 1}
    store.delete_counters("box:aaaa:")
    assert store.counters() == {"commands": 2, "exec_errors": 5, "box:bbbb:commands": 1}
