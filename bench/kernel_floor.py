"""The floor of a CodeBox cell round trip, measured for real: the same request to a local ipykernel on the host
(jupyter_client's KernelManager, the same kernel launcher and code), and the in-box kernel's own time for each
request, read from the timestamps the kernel itself puts on its busy and idle status messages (stamped inside
the box, by the box's clock). How the two make the floor: bench/measure.py bridge_floor_ms.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from boxlite._codebox import KERNEL_ENV, default_kernel_argv

WARMUP = 3


def _when(value: Any) -> datetime:
    """A message header's date: jupyter_client gives a datetime; raw JSON has ISO text."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def kernel_own_ms(messages: Iterable[dict[str, Any]]) -> float:
    """The kernel's own time for the one execute_request among `messages` (Jupyter messages as dicts): from its
    `busy` status to its `idle` status, both stamped by the kernel. Raises ValueError unless exactly one
    execute_request has exactly one of each."""
    stamps: dict[str, dict[str, datetime]] = {}
    for msg in messages:
        parent = msg.get("parent_header") or {}
        if msg.get("header", {}).get("msg_type") != "status" or parent.get("msg_type") != "execute_request":
            continue
        state = (msg.get("content") or {}).get("execution_state")
        if state not in ("busy", "idle"):
            continue
        seen = stamps.setdefault(parent["msg_id"], {})
        if state in seen:
            raise ValueError(f"two {state} statuses for request {parent['msg_id']}")
        seen[state] = _when(msg["header"]["date"])
    if len(stamps) != 1:
        raise ValueError(f"expected the statuses of one execute_request, found {len(stamps)}")
    (seen,) = stamps.values()
    if set(seen) != {"busy", "idle"}:
        raise ValueError(f"a request without both busy and idle statuses: {sorted(seen)}")
    return (seen["idle"] - seen["busy"]).total_seconds() * 1000


def host_ipykernel(code: str, n: int) -> tuple[list[float], list[float]]:
    """Send `code` n times (after a warm-up) to a local ipykernel started with CodeBox's own launcher; returns
    (round trips in ms, the kernel's own times in ms). Waits for the reply and the idle status, as
    CodeBox.run does."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    argv = [sys.executable, *default_kernel_argv()[1:]]
    with tempfile.TemporaryDirectory(prefix="bench-kernelspec-") as tmp:
        spec_dir = Path(tmp) / "boxlite-floor"
        spec_dir.mkdir()
        (spec_dir / "kernel.json").write_text(json.dumps(
            {"argv": argv, "display_name": "bench floor", "language": "python", "env": KERNEL_ENV}))
        # ipc sockets, as the kernel in a box uses (guest/kernels.py), not TCP.
        km = KernelManager(kernel_name="boxlite-floor", kernel_spec_manager=KernelSpecManager(kernel_dirs=[tmp]),
                           transport="ipc", ip=str(Path(tmp) / "kernel"))
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            trips: list[float] = []
            own: list[float] = []
            for i in range(WARMUP + n):
                seen: list[dict[str, Any]] = []
                start = time.perf_counter()
                reply = kc.execute_interactive(code, timeout=60, output_hook=seen.append)
                ms = (time.perf_counter() - start) * 1000
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"the host kernel failed to run {code!r}: {reply['content']}")
                if i >= WARMUP:
                    trips.append(ms)
                    own.append(kernel_own_ms(seen))
            return trips, own
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


async def codebox_runs(cb: Any, code: str, n: int) -> tuple[list[float], list[float]]:
    """Run `code` n times (after a warm-up) in a started CodeBox; returns (round trips seen by the host in ms,
    the in-box kernel's own times in ms, from the statuses the kernel stamped in the box)."""
    from boxlite._kernel_client import KernelMessage

    seen: list[dict[str, Any]] = []

    def keep(item: object) -> None:
        if isinstance(item, KernelMessage) and item.channel == "iopub":
            seen.append(item.msg)

    cb.kernel.add_listener(keep)
    try:
        trips: list[float] = []
        own: list[float] = []
        for i in range(WARMUP + n):
            seen.clear()
            start = time.perf_counter()
            execution = await cb.run(code)
            ms = (time.perf_counter() - start) * 1000
            if execution.error is not None:
                raise RuntimeError(f"the CodeBox failed to run {code!r}: {execution.error}")
            if i >= WARMUP:
                trips.append(ms)
                own.append(kernel_own_ms(seen))
        return trips, own
    finally:
        cb.kernel.remove_listener(keep)
