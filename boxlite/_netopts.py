"""What a box may reach and what reaches it: the network, published ports and shared volumes (BoxOptions).

All three are checked here, at construction, so a bad value is a ConfigError before anything is created:

    network   NetworkSpec(mode="enabled" | "disabled", allow_net=["name:port", "1.2.3.4:port", ...])
              (also the plain strings "enabled"/"disabled", or a dict with those keys)
    ports     [(host_port, guest_port), (host_port, guest_port, "tcp"), "HOST_IP:HOST:GUEST/tcp", ...]
    volumes   [(host_path, guest_path), (host_path, guest_path, "ro" | "rw"), "HOST:GUEST:ro", ...]
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

# The name a box uses for the host's own loopback, when an allow rule lets it there.
HOST_ALIAS = "host.boxlite.internal"
_LOOPBACK_NAMES = {HOST_ALIAS, "localhost"}
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
# Guest paths a volume may not cover: the box's own system mounts.
_RESERVED_GUEST = ("/proc", "/sys", "/dev", "/run/boxlite")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _port(value: Any, what: str, low: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not low <= number <= 65535 or str(number) != str(value).strip():
        raise ValueError(f"{what} must be between {low} and 65535, got {value!r}")
    return number


class AllowRule(_Frozen):
    """One destination an allow-listed box may connect to (TCP)."""

    host: str
    port: int

    @property
    def is_host_loopback(self) -> bool:
        return self.host in _LOOPBACK_NAMES or _is_loopback_ip(self.host)

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.IPv4Address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_allow_rule(entry: Any) -> AllowRule:
    """"name:port", "1.2.3.4:port" or "host.boxlite.internal:port" (the host's loopback) -> AllowRule."""
    if isinstance(entry, AllowRule):
        return entry
    if not isinstance(entry, str):
        raise ValueError(f"allow_net entries are strings like 'example.org:443', got {entry!r}")
    host, sep, port = entry.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"allow_net entry {entry!r} needs a port: 'HOST:PORT' (every allowed destination is "
                         "a host and a TCP port)")
    host = host.strip("[]").lower().rstrip(".")
    if ":" in host:
        raise ValueError(f"allow_net entry {entry!r}: IPv6 destinations are not supported; use a name or IPv4")
    if not _HOSTNAME.match(host):
        raise ValueError(f"allow_net entry {entry!r}: {host!r} is not a valid host name or IPv4 address")
    return AllowRule(host=host, port=_port(port, f"the port of allow_net entry {entry!r}"))


class NetworkSpec(_Frozen):
    """`enabled`: outbound TCP/UDP and DNS through a user-mode NAT, never to the host's loopback. With
    `allow_net` entries, only those destinations ("host:port", TCP) and nothing else. `disabled`: no network
    device at all."""

    mode: Literal["enabled", "disabled"] = "enabled"
    allow_net: list[AllowRule] = []

    @field_validator("allow_net", mode="before")
    @classmethod
    def _rules(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list | tuple):
            raise ValueError(f"allow_net must be a list of 'HOST:PORT' strings, got {v!r}")
        return [entry if isinstance(entry, dict) else parse_allow_rule(entry) for entry in v]

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSpec:
        if self.mode == "disabled" and self.allow_net:
            raise ValueError("network mode 'disabled' takes no allow_net entries (use mode 'enabled' with "
                             "allow_net to let only those destinations out)")
        return self

    @property
    def kind(self) -> Literal["nat", "allowlist", "none"]:
        """How it is built: a NAT device, only the host-side relay of allowed destinations, or nothing."""
        if self.mode == "disabled":
            return "none"
        return "allowlist" if self.allow_net else "nat"


def parse_network(v: Any) -> Any:
    if v is None:
        return NetworkSpec()
    if isinstance(v, str):
        mode = {"none": "disabled", "off": "disabled", "on": "enabled", "bridge": "enabled",
                "default": "enabled"}.get(v.lower(), v.lower())
        if mode not in ("enabled", "disabled"):
            raise ValueError(f"network must be 'enabled' or 'disabled' (or a NetworkSpec), got {v!r}")
        return NetworkSpec(mode=mode)  # type: ignore[arg-type]
    if isinstance(v, bool):
        return NetworkSpec(mode="enabled" if v else "disabled")
    return v


class PortSpec(_Frozen):
    """A guest TCP port published on the host. host_port 0: a free port is picked at start."""

    host_port: int
    guest_port: int
    protocol: Literal["tcp"] = "tcp"
    host_ip: str = "127.0.0.1"

    @field_validator("host_ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"host address of a published port must be an IPv4 address, got {v!r}") from None


def parse_port(entry: Any) -> Any:
    """(host, guest[, proto]), (host_ip, host, guest, proto) or Docker's "[IP:]HOST:GUEST[/proto]"."""
    if isinstance(entry, PortSpec | dict):
        return entry
    host_ip = "127.0.0.1"
    proto: Any = "tcp"
    if isinstance(entry, str):
        spec, _, proto = entry.partition("/")
        proto = proto or "tcp"
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip, host, guest = parts
        elif len(parts) == 2:
            host, guest = parts
        elif len(parts) == 1:
            host, guest = "0", parts[0]  # "-p 80": a free host port
        else:
            raise ValueError(f"port {entry!r}: expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]")
    elif isinstance(entry, list | tuple) and len(entry) in (2, 3, 4):
        if len(entry) == 4:
            host_ip, host, guest, proto = entry
        else:
            host, guest, *rest = entry
            proto = rest[0] if rest else "tcp"
    else:
        raise ValueError(f"ports entries are (host_port, guest_port, 'tcp'), got {entry!r}")
    proto = str(proto).lower()
    if proto != "tcp":
        raise ValueError(f"port {entry!r}: only 'tcp' ports can be published")
    return PortSpec(host_port=_port(host, f"host port of {entry!r}", low=0),
                    guest_port=_port(guest, f"guest port of {entry!r}"), host_ip=host_ip or "127.0.0.1")


class VolumeSpec(_Frozen):
    """A host directory shared into the box at guest_path."""

    host_path: str
    guest_path: str
    mode: Literal["ro", "rw"] = "rw"

    @property
    def read_only(self) -> bool:
        return self.mode == "ro"


def check_volume(host_path: Any, guest_path: Any, mode: Any) -> VolumeSpec:
    host, guest = str(host_path), str(guest_path)
    if mode not in ("ro", "rw"):
        raise ValueError(f"volume {host}:{guest}: mode must be 'ro' or 'rw', got {mode!r}")
    if not os.path.isabs(host):
        raise ValueError(f"volume host path must be absolute, got {host!r}")
    real = os.path.realpath(host)
    if not os.path.exists(real):
        raise ValueError(f"volume host path {host} does not exist")
    if not os.path.isdir(real):
        raise ValueError(f"volume host path {host} is not a directory (only directories can be shared)")
    home = os.path.realpath(Path.home())
    if real in (home, "/"):
        raise ValueError(f"volume host path {host} is {'your home directory' if real == home else 'the root'}"
                         " itself: share a directory inside it instead")
    if not guest.startswith("/"):
        raise ValueError(f"volume guest path must be absolute, got {guest!r}")
    norm = os.path.normpath(guest)
    if norm.startswith("//"):
        norm = norm[1:]
    if norm == "/" or any(norm == r or norm.startswith(r + "/") for r in _RESERVED_GUEST):
        raise ValueError(f"volume guest path {guest!r} is reserved by the box: choose another directory")
    return VolumeSpec(host_path=real, guest_path=norm, mode=mode)


def parse_volume(entry: Any) -> Any:
    """(host, guest[, "ro"|"rw"]), a dict, or Docker's "HOST:GUEST[:ro|rw]"."""
    if isinstance(entry, VolumeSpec):
        return entry
    if isinstance(entry, dict):
        return check_volume(entry.get("host_path"), entry.get("guest_path"), entry.get("mode", "rw"))
    if isinstance(entry, str):
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"volume {entry!r}: expected HOST_PATH:GUEST_PATH[:ro|rw]")
        return check_volume(parts[0], parts[1], parts[2] if len(parts) == 3 else "rw")
    if isinstance(entry, list | tuple) and len(entry) in (2, 3):
        return check_volume(entry[0], entry[1], entry[2] if len(entry) == 3 else "rw")
    raise ValueError(f"volumes entries are (host_path, guest_path, 'ro'|'rw'), got {entry!r}")


def check_unique(ports: list[PortSpec], volumes: list[VolumeSpec]) -> None:
    seen: set[tuple[str, int]] = set()
    for p in ports:
        key = (p.host_ip, p.host_port)
        if p.host_port and key in seen:
            raise ValueError(f"host port {p.host_ip}:{p.host_port} is published twice")
        seen.add(key)
    guests = [v.guest_path for v in volumes]
    for g in guests:
        if guests.count(g) > 1:
            raise ValueError(f"two volumes are mounted at {g}")
