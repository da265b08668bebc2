"""Which aborted cells the BoxLite kernel sends to the box again, and what the frontend sees of the tries
(codebox_kernel/aborts.py), decided without a box."""

from __future__ import annotations

from typing import Any

from codebox_kernel.aborts import RETRIES, StopOnError, Tries, stops_on_error

CELL: dict[str, Any] = {"code": "1/0", "silent": False}
ERROR = {"status": "error", "ename": "ZeroDivisionError"}
ABORTED = {"status": "aborted"}


def status(state: str, n: int = 0) -> dict[str, Any]:
    return {"msg_type": "status", "content": {"execution_state": state}, "n": n}


def test_only_an_error_that_stops_on_error_starts_an_epoch() -> None:
    assert stops_on_error(CELL, ERROR)
    assert not stops_on_error(CELL, {"status": "ok"})
    assert not stops_on_error(CELL, ABORTED)
    assert not stops_on_error({**CELL, "stop_on_error": False}, ERROR)
    assert not stops_on_error({**CELL, "silent": True}, ERROR)
    errors = StopOnError()
    errors.relayed({**CELL, "silent": True}, ERROR)
    errors.relayed(CELL, {"status": "ok"})
    assert errors.epoch == 0
    errors.relayed(CELL, ERROR)
    assert errors.epoch == 1


def test_a_cell_received_after_the_error_reply_is_sent_again_a_few_times() -> None:
    errors = StopOnError()
    errors.relayed(CELL, ERROR)
    received = errors.epoch  # the frontend's next cell, after it had the error reply
    assert errors.retry(received, ABORTED, tries=1)
    assert errors.retry(received, ABORTED, tries=RETRIES)
    assert not errors.retry(received, ABORTED, tries=RETRIES + 1)  # bounded
    assert not errors.retry(received, {"status": "ok"}, tries=1)
    assert not errors.retry(received, ERROR, tries=1)


def test_run_all_cells_received_before_the_error_reply_stay_aborted() -> None:
    errors = StopOnError()
    received = errors.epoch  # Run All: the later cells arrive while the first one runs
    errors.relayed(CELL, ERROR)
    assert not errors.retry(received, ABORTED, tries=1)
    assert errors.stale(received)  # one the host still held is aborted by the host
    assert not errors.stale(errors.epoch)


def test_the_first_cell_after_each_error_is_the_probe() -> None:
    errors = StopOnError()
    assert not errors.take_probe()  # no error yet: nothing to wait for
    errors.relayed(CELL, ERROR)
    assert errors.take_probe()
    assert not errors.take_probe()  # the cells behind it are not probes
    errors.relayed(CELL, ERROR)
    errors.relayed(CELL, ERROR)
    assert errors.take_probe() and not errors.take_probe()


def test_one_try_passes_its_statuses_with_the_idle_after_the_reply() -> None:
    tries = Tries()
    assert tries.status(status("busy")) == [status("busy")]
    assert tries.status(status("idle")) == []  # the idle came before the reply: held
    assert not tries.done
    assert tries.reply() == [status("idle")]
    assert tries.done


def test_one_try_whose_idle_comes_after_the_reply() -> None:
    tries = Tries()
    tries.status(status("busy"))
    assert tries.reply() == []
    assert tries.status(status("idle")) == [status("idle")]
    assert tries.done


def test_an_aborted_try_leaves_one_busy_and_the_last_idle() -> None:
    """The aborted try's idle either came before its aborted reply (held, then dropped) or comes after it."""
    for idle_before_abort in (True, False):
        tries = Tries()
        seen = tries.status(status("busy", 1))
        if idle_before_abort:
            seen += tries.status(status("idle", 1))
        tries.again()  # the aborted reply was swallowed; the cell is sent again
        if not idle_before_abort:
            seen += tries.status(status("idle", 1))
        seen += tries.status(status("busy", 2))
        seen += tries.status({"msg_type": "stream", "content": {"name": "stdout", "text": "x"}})
        seen += tries.status(status("idle", 2))
        assert not tries.done
        seen += tries.reply()
        assert tries.done
        states = [(m["content"].get("execution_state"), m.get("n")) for m in seen]
        assert states == [("busy", 1), (None, None), ("idle", 2)], idle_before_abort


def test_the_first_idle_of_a_later_try_is_not_taken_for_the_aborted_ones() -> None:
    """Two aborted tries, the last one's statuses after its reply."""
    tries = Tries()
    tries.status(status("busy", 1))
    tries.again()
    tries.status(status("idle", 1))
    tries.status(status("busy", 2))
    tries.status(status("idle", 2))
    tries.again()
    assert tries.status(status("busy", 3)) == []
    assert tries.reply() == []
    assert tries.status(status("idle", 3)) == [status("idle", 3)]
    assert tries.done
