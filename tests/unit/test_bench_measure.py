"""The bench's pure logic: summaries, rows, result file names, the CodeBox bridge floor and the kernel's own time."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from kernel_floor import kernel_own_ms
from measure import bridge_floor_ms, bridge_overhead_ms, row, summary, unavailable
from record import Run, parse_result_name, result_name


def test_summary_median_min_max_count() -> None:
    assert summary([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    assert summary([1.23456], digits=3) == {"median": 1.235, "min": 1.235, "max": 1.235, "n": 1}


@pytest.mark.parametrize("samples", [[], [1.0, float("nan")], [float("inf")]])
def test_summary_refuses_what_is_not_a_measurement(samples: list[float]) -> None:
    with pytest.raises(ValueError):
        summary(samples)


def test_row_keeps_samples_and_only_the_given_extras() -> None:
    r = row("cold start", "ms", [2.0, 4.0], floor=summary([1.0]), floor_name="bare boot", goal="< 3 ms", met=True,
            speedup_vs_cold=2.0)
    assert r == {"label": "cold start", "unit": "ms", "median": 3.0, "min": 2.0, "max": 4.0, "n": 2,
                 "samples": [2.0, 4.0], "floor": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 1},
                 "floor_name": "bare boot", "goal": "< 3 ms", "met": True, "speedup_vs_cold": 2.0}
    assert "goal" not in row("x", "ms", [1.0])
    assert unavailable("x", "ms", "no CodeBox") == {"label": "x", "unit": "ms", "available": False,
                                                     "note": "no CodeBox"}


def test_bridge_floor_is_the_box_kernel_plus_a_native_client() -> None:
    # In-box kernel 9 ms; a host client takes 5 ms round trip around a kernel that itself takes 3.5 ms.
    assert bridge_floor_ms(9.0, 5.0, 3.5) == pytest.approx(10.5)
    # A host kernel's stamps can exceed the measured round trip by clock noise: the client cost is never negative.
    assert bridge_floor_ms(9.0, 3.0, 3.5) == 9.0


def _status(state: str, parent: str, date: str, parent_type: str = "execute_request") -> dict[str, object]:
    return {"header": {"msg_type": "status", "date": date}, "content": {"execution_state": state},
            "parent_header": {"msg_id": parent, "msg_type": parent_type}}


def test_kernel_own_time_is_busy_to_idle_of_the_execute_request() -> None:
    messages = [
        _status("busy", "a", "2026-12-07T13:00:00.001000Z"),
        {"header": {"msg_type": "execute_input", "date": "2026-12-07T13:00:00.002Z"}, "content": {},
         "parent_header": {"msg_id": "a", "msg_type": "execute_request"}},
        _status("idle", "k", "2026-12-07T13:00:00.500000Z", parent_type="kernel_info_request"),  # not ours
        _status("idle", "a", "2026-12-07T13:00:00.013500Z"),
    ]
    assert kernel_own_ms(messages) == pytest.approx(12.5)
    # jupyter_client hands over datetimes, not text.
    as_dates = [{**m, "header": {**m["header"], "date": datetime.fromisoformat(m["header"]["date"][:-1] + "+00:00")}}
                for m in messages]
    assert kernel_own_ms(as_dates) == pytest.approx(12.5)


@pytest.mark.parametrize("messages", [
    [],
    [_status("busy", "a", "2026-12-07T13:00:00Z")],
    [_status("busy", "a", "2026-12-07T13:00:00Z"), _status("idle", "a", "2026-12-07T13:00:01Z"),
     _status("busy", "b", "2026-12-07T13:00:02Z"), _status("idle", "b", "2026-12-07T13:00:03Z")],
    [_status("busy", "a", "2026-12-07T13:00:00Z"), _status("busy", "a", "2026-12-07T13:00:01Z"),
     _status("idle", "a", "2026-12-07T13:00:02Z")],
])
def test_kernel_own_time_refuses_ambiguous_messages(messages: list[dict[str, object]]) -> None:
    with pytest.raises(ValueError):
        kernel_own_ms(messages)


def test_result_names_sort_by_time_and_round_trip() -> None:
    started = datetime(2026, 12, 7, 14, 5, 9, tzinfo=UTC)
    assert result_name("run", started) == "20261207T140509Z-run.json"
    assert parse_result_name("20261207T140509Z-run.json") == (started, "run")
    for other in ("README.md", "run.json", "2026-run.json", "20261207T140509Z-.json", "20261207T140509Z-run.txt"):
        assert parse_result_name(other) is None
    with pytest.raises(ValueError):
        result_name("../run", started)


def test_a_run_writes_its_document_under_results(tmp_path: Path) -> None:
    run = Run("core", {"runs": 1}, started=datetime(2026, 12, 7, 14, 0, tzinfo=UTC))
    run.add("cold", row("cold start", "ms", [5.0]))
    also = tmp_path / "copy.json"
    path = run.write(tmp_path / "results", also=also)
    assert path == tmp_path / "results" / "20261207T140000Z-core.json"
    doc = json.loads(path.read_text())
    assert doc["script"] == "core" and doc["args"] == {"runs": 1}
    assert doc["rows"]["cold"]["median"] == 5.0
    assert {"cpus", "load_avg_start", "load_avg_end"} <= set(doc["host"])
    assert json.loads(also.read_text()) == doc


def test_bridge_overhead_is_paired_request_by_request() -> None:
    # The kernel in the box was slow on the second request: the round trip follows it; the bridge did not change.
    trips, own = [20.0, 220.0, 21.0], [10.0, 210.0, 10.0]
    host_trips, host_own = [5.0, 6.0, 5.5], [3.0, 4.0, 3.5]
    assert bridge_overhead_ms(trips, own, host_trips, host_own) == pytest.approx(10.0 - 2.0)
    with pytest.raises(ValueError):
        bridge_overhead_ms([1.0], [], host_trips, host_own)
