"""Numbers, durations and moments written as people read them ("3.2 s", "512 MiB", "13:05:19 UTC, 4 min ago"),
for what the kernel and the magic show: `%boxlite info`, the metrics panel, `%boxlite files`."""

from __future__ import annotations

from datetime import UTC, datetime

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(nbytes: float | None) -> str:
    """Bytes in binary units: "17 B", "4.0 KiB", "512 MiB", "1.5 GiB" (one decimal below 10, none above)."""
    if nbytes is None:
        return "-"
    value = float(nbytes)
    unit = _SIZE_UNITS[0]
    for unit in _SIZE_UNITS:
        if abs(value) < 1024 or unit == _SIZE_UNITS[-1]:
            break
        value /= 1024
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:.1f} {unit}" if abs(value) < 10 else f"{value:.0f} {unit}"


def mib(value: float | None) -> str:
    """A size given in MiB (a box's memory setting), as `size` writes it: "512 MiB", "2.0 GiB"."""
    return "-" if value is None else size(value * (1 << 20))


def duration(seconds: float | None) -> str:
    """"850 ms", "3.2 s", "42 s", "3 min", "4 min 05 s", "2 h 03 min"."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole // 60, 60)
    return f"{hours} h {rest:02d} min" if rest else f"{hours} h"


def millis(ms: float | None) -> str:
    """A duration given in milliseconds (guest_boot_ms), as `duration` writes it."""
    return "-" if ms is None else duration(ms / 1000)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def moment(when: datetime | None, now: datetime | None = None) -> str:
    """A timestamp in local time to the second, with how long ago: "2026-12-07 13:05:19 UTC (4 min 05 s ago)"."""
    if when is None:
        return "-"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    local = when.astimezone()
    ago = (now - when).total_seconds()
    tail = f" ({duration(ago)} ago)" if ago >= 0 else ""
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or ''}".rstrip() + tail


def clock(epoch_s: float) -> str:
    """A wall-clock time of day to the second, local: "13:05:19"."""
    return f"{datetime.fromtimestamp(epoch_s).astimezone():%H:%M:%S}"


def boot(kind: str | None, guest_boot_ms: float | None) -> str:
    """How a box last started: "cold boot, guest ready in 3.1 s", "restored, guest ready in 120 ms"."""
    if kind is None and guest_boot_ms is None:
        return "-"
    how = {"cold": "cold boot", "restored": "restored"}.get(kind or "", kind or "started")
    took = "guest ready time not measured" if guest_boot_ms is None else f"guest ready in {millis(guest_boot_ms)}"
    return f"{how}, {took}"
