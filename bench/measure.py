"""The numbers every bench row is made of: a summary of samples, and the row that carries it with its floor.

A row is a plain dict (it goes into the raw JSON under bench/results/ as is):
    {"label": what it measures, in words, "unit": "ms", "median", "min", "max", "n", "samples": [...],
     optional "floor": a summary, "floor_name", "floor_unit" (when not the row's), "goal", "met", "note",
     and any extra facts}
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def summary(samples: Sequence[float], digits: int = 2) -> dict[str, Any]:
    """Median, min, max and count of `samples` (rounded to `digits`)."""
    if not samples:
        raise ValueError("no samples to summarize")
    if not all(math.isfinite(s) for s in samples):
        raise ValueError(f"samples must be finite numbers, got {list(samples)!r}")
    return {"median": round(statistics.median(samples), digits), "min": round(min(samples), digits),
            "max": round(max(samples), digits), "n": len(samples)}


def row(label: str, unit: str, samples: Sequence[float], *, floor: dict[str, Any] | None = None,
        floor_name: str | None = None, goal: str | None = None, met: bool | None = None, note: str | None = None,
        **extra: Any) -> dict[str, Any]:
    """One result row: the summary of `samples` with its raw samples, and whatever describes it."""
    out: dict[str, Any] = {"label": label, "unit": unit, **summary(samples),
                           "samples": [round(s, 3) for s in samples]}
    for key, value in (("floor", floor), ("floor_name", floor_name), ("goal", goal), ("met", met), ("note", note)):
        if value is not None:
            out[key] = value
    out.update(extra)
    return out


def unavailable(label: str, unit: str, note: str) -> dict[str, Any]:
    """A row that could not be measured in this run, saying why (rendered as a dash, never as a number)."""
    return {"label": label, "unit": unit, "available": False, "note": note}


def bridge_floor_ms(inbox_kernel_own_ms: float, host_round_trip_ms: float, host_kernel_own_ms: float) -> float:
    """The least a CodeBox cell round trip can cost: what the kernel in the box spends on the request itself
    (unavoidable, it runs under the box's CPU), plus what a native Jupyter client and ZeroMQ add around a kernel
    on the host (the round trip to a local ipykernel minus that kernel's own time). What a CodeBox run takes
    above this is the bridge's cost: the portal, the agent's relay and the host client."""
    return inbox_kernel_own_ms + max(host_round_trip_ms - host_kernel_own_ms, 0.0)


def bridge_overhead_ms(trips: Sequence[float], inbox_own: Sequence[float], host_trips: Sequence[float],
                       host_own: Sequence[float]) -> float:
    """What the bridge adds to a CodeBox round trip, paired request by request (each trip minus the in-box
    kernel's own time for that same request, so a slow kernel moment does not count as bridge), minus what a
    native client adds around a host kernel (each host trip minus that kernel's own time); medians of both."""
    if len(trips) != len(inbox_own) or len(host_trips) != len(host_own):
        raise ValueError("round trips and kernel times must come in pairs, one per request")
    box = statistics.median(t - k for t, k in zip(trips, inbox_own, strict=True))
    native = statistics.median(t - k for t, k in zip(host_trips, host_own, strict=True))
    return box - max(native, 0.0)
