"""What a box may reach and what reaches it: the network, published ports and shared volumes (BoxOptions).

All three are checked here, at construction, so a bad value is a ConfigError before anything is created:

    network   NetworkSpec(mode="enabled" | "disabled", allow_net=["name:port", "1.2.3.4:port", ...])
              (also the plain strings "enabled"/"disabled", or a dict with those keys)
    ports     [(host_port, guest_port), (host_port, guest_port, "tcp", host_ip), "HOST_IP:HOST:GUEST/tcp",
               {"guest_port": 80}, ...]
    volumes   [(host_path, guest_path), (host_path, guest_path, "ro" | "rw"), (host_path, guest_path, True),
               {"host_path": ..., "guest_path": ..., "read_only": True}, "HOST:GUEST:ro", ...]

Every accepted shape is honoured in full or refused: an unknown dict key is a ConfigError naming the accepted
ones (a read-only flag under a misspelt key must never leave a volume writable).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from boxlite._errors import ConfigError
from boxlite._validation import Validated, shown

# The name a box uses for the host's own loopback, when an allow rule lets it there.
HOST_ALIAS = "host.boxlite.internal"
_LOOPBACK_NAMES = {HOST_ALIAS, "localhost"}
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
# Guest paths a volume may not cover: the box's own system mounts.
_RESERVED_GUEST = ("/proc", "/sys", "/dev", "/run/boxlite")


class _Frozen(Validated):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _keys(entry: dict[Any, Any], accepted: tuple[str, ...], what: str,
          hints: dict[str, str] | None = None) -> None:
    """Refuse a dict key nothing would read: an ignored key is a setting the user believes in and does not get
    (a read-only flag, say)."""
    for key in entry:
        if key in accepted:
            continue
        hint = (hints or {}).get(key) if isinstance(key, str) else None
        raise ValueError(f"{what}: unknown key {shown(key)}" + (f" ({hint})" if hint else "")
                         + f"; accepted keys: {', '.join(accepted)}")


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
    """"name:port", "1.2.3.4:port" or "host.boxlite.internal:port" (the host's loopback) -> AllowRule; also an
    AllowRule or a dict {"host": ..., "port": ...} (as stored), checked the same way."""
    if isinstance(entry, AllowRule):
        entry = str(entry)
    elif isinstance(entry, dict):
        _keys(entry, _ALLOW_KEYS, f"allow_net entry {shown(entry)}")
        if "host" not in entry or "port" not in entry:
            raise ValueError(f"allow_net entry {shown(entry)} needs both 'host' and 'port'")
        if not isinstance(entry["host"], str):
            raise ValueError(f"the host of allow_net entry {shown(entry)} must be a string")
        entry = f"{entry['host']}:{entry['port']}"
    if not isinstance(entry, str):
        raise ValueError(f"allow_net entries are strings like 'example.org:443', got {shown(entry)}")
    host, sep, port = entry.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"allow_net entry {shown(entry)} needs a port: 'HOST:PORT' (every allowed destination is "
                         "a host and a TCP port)")
    host = host.strip("[]").lower().rstrip(".")
    if ":" in host:
        raise ValueError(f"allow_net entry {shown(entry)}: IPv6 destinations are not supported; use a name or IPv4")
    if not _HOSTNAME.match(host):
        raise ValueError(f"allow_net entry {shown(entry)}: {shown(host)} is not a valid host name or IPv4 address")
    return AllowRule(host=host, port=_port(port, f"the port of allow_net entry {shown(entry)}"))


_ALLOW_KEYS = ("host", "port")
_NETWORK_KEYS = ("mode", "allow_net")
# Spellings of the two modes (Docker's and upstream's words too).
_MODES = {"enabled": "enabled", "disabled": "disabled", "none": "disabled", "off": "disabled", "on": "enabled",
          "bridge": "enabled", "default": "enabled"}
_NETWORK_HINTS = {
    "outbound": "give the outbound policy as 'mode' and 'allow_net' directly",
    "inbound": "inbound connections are published ports: use BoxOptions(ports=...)",
}


class NetworkSpec(_Frozen):
    """`enabled`: outbound TCP/UDP and DNS through a user-mode NAT, never to the host's loopback. With
    `allow_net` entries, only those destinations ("host:port", TCP) and nothing else. `disabled`: no network
    device at all."""

    mode: Literal["enabled", "disabled"] = "enabled"
    allow_net: list[AllowRule] = Field(default_factory=list)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> Any:
        return _mode(v)

    @field_validator("allow_net", mode="before")
    @classmethod
    def _rules(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list | tuple):
            raise ValueError(f"allow_net must be a list of 'HOST:PORT' strings, got {shown(v)}")
        return [parse_allow_rule(entry) for entry in v]

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


def _mode(v: Any) -> str:
    mode = _MODES.get(v.lower()) if isinstance(v, str) else None
    if mode is None:
        raise ValueError(f"network must be 'enabled' or 'disabled' (or a NetworkSpec), got {shown(v)}")
    return mode


def parse_network(v: Any) -> Any:
    """None (the default), "enabled"/"disabled" (and aliases), a bool, a dict of NetworkSpec's keys, or one."""
    if v is None:
        return NetworkSpec()
    if isinstance(v, bool):
        return NetworkSpec(mode="enabled" if v else "disabled")
    if isinstance(v, str):
        return NetworkSpec(mode=_mode(v))  # type: ignore[arg-type]
    if isinstance(v, dict):
        _keys(v, _NETWORK_KEYS, "network", _NETWORK_HINTS)
        return NetworkSpec(**v)
    if isinstance(v, NetworkSpec):
        return NetworkSpec(**v.model_dump())  # checked again: a model_construct()ed one is not
    raise ValueError(f"network must be 'enabled', 'disabled', a dict or a NetworkSpec, got {shown(v)}")


class PortSpec(_Frozen):
    """A guest TCP port published on the host. host_port 0: a free port is picked at start."""

    host_port: int = 0
    guest_port: int
    protocol: Literal["tcp"] = "tcp"
    host_ip: str = "127.0.0.1"

    @field_validator("host_port", "guest_port", mode="before")
    @classmethod
    def _number(cls, v: Any, info: ValidationInfo) -> int:
        return _port(v, str(info.field_name), low=0 if info.field_name == "host_port" else 1)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, v: Any) -> Any:
        if not isinstance(v, str) or v.lower() != "tcp":
            raise ValueError(f"only 'tcp' ports can be published, got protocol {shown(v)}")
        return "tcp"

    @field_validator("host_ip", mode="before")
    @classmethod
    def _ip(cls, v: Any) -> str:
        # A string only: IPv4Address(8080) would take a number as the address 0.0.31.144.
        try:
            if not isinstance(v, str):
                raise ValueError
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"host address of a published port must be an IPv4 address, got {shown(v)}") from None


_PORT_KEYS = ("host_port", "guest_port", "protocol", "host_ip")


def _is_address(value: Any) -> bool:
    return isinstance(value, str) and not value.strip().isdigit()


def parse_port(entry: Any) -> Any:
    """(host, guest), (host, guest, proto), (host, guest, proto, host_ip) as upstream, (host_ip, host, guest,
    proto), Docker's "[IP:]HOST:GUEST[/proto]", a dict of PortSpec's keys ({"guest_port": N}: a free host port),
    or a PortSpec."""
    where = f"port {shown(entry)}"
    if isinstance(entry, PortSpec):
        entry = entry.model_dump()  # checked again: a model_construct()ed one is not
    if isinstance(entry, dict):
        _keys(entry, _PORT_KEYS, where)
        if "guest_port" not in entry:
            raise ValueError(f"{where} needs a 'guest_port'")
        fields = dict(entry)
    elif isinstance(entry, str):
        spec, _, proto = entry.partition("/")
        parts = spec.split(":")
        if len(parts) > 3:
            raise ValueError(f"{where}: expected [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp]")
        fields = dict(zip(("host_ip", "host_port", "guest_port")[3 - len(parts):], parts, strict=True))
        fields["protocol"] = proto or "tcp"
    elif isinstance(entry, list | tuple) and len(entry) in (2, 3, 4):
        # Upstream's 4-tuple ends with the address; ours began with it (a port is a number, an address is not).
        names = ("host_ip", "host_port", "guest_port", "protocol") if len(entry) == 4 and _is_address(entry[0]) \
            else ("host_port", "guest_port", "protocol", "host_ip")
        fields = dict(zip(names, entry, strict=False))
    else:
        raise ValueError(f"ports entries are (host_port, guest_port[, 'tcp'[, host_ip]]), a dict or "
                         f"'[HOST_IP:]HOST:GUEST[/tcp]', got {shown(entry)}")
    if fields.get("host_ip") in ("", None):
        fields.pop("host_ip", None)  # "::80" or None: the default address
    try:
        return PortSpec(**fields)
    except ConfigError as exc:
        raise ValueError(f"{where}: {exc.detail}") from None


class VolumeSpec(_Frozen):
    """A host directory shared into the box at guest_path. `read_only=True` is the same as `mode="ro"`."""

    host_path: str
    guest_path: str
    mode: Literal["ro", "rw"] = "rw"

    @model_validator(mode="before")
    @classmethod
    def _read_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and "read_only" in data:
            data = dict(data)
            data["mode"] = _volume_mode(data.pop("read_only"), data.get("mode"), "volume")
        return data

    @property
    def read_only(self) -> bool:
        return self.mode == "ro"


_VOLUME_KEYS = ("host_path", "guest_path", "read_only", "mode")
_VOLUME_HINTS = {"managed_volume": "named volumes are not supported: share a host directory with host_path",
                 "readonly": "spelled read_only", "ro": "spelled read_only=True"}


def _volume_mode(read_only: Any, mode: Any, where: str) -> str:
    """The mode from a read_only flag (a bool) and/or a mode ("ro"/"rw"); both given must agree."""
    if not isinstance(read_only, bool):
        raise ValueError(f"{where}: read_only must be True or False, got {shown(read_only)}")
    wanted = "ro" if read_only else "rw"
    if mode is not None and mode != wanted:
        raise ValueError(f"{where}: read_only={read_only} contradicts mode={shown(mode)}; give one of them")
    return wanted


def _path_text(value: Any, what: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ValueError(f"volume {what} must be a path string, got {shown(value)}")
    return value


def check_volume(host_path: Any, guest_path: Any, mode: Any) -> VolumeSpec:
    host, guest = _path_text(host_path, "host path"), _path_text(guest_path, "guest path")
    if mode not in ("ro", "rw"):
        raise ValueError(f"volume {shown(host)}:{shown(guest)}: mode must be 'ro' or 'rw' (or read_only=True), "
                         f"got {shown(mode)}")
    if not os.path.isabs(host):
        raise ValueError(f"volume host path must be absolute, got {shown(host)}")
    real = os.path.realpath(host)
    if not os.path.exists(real):
        raise ValueError(f"volume host path {shown(host)} does not exist")
    if not os.path.isdir(real):
        raise ValueError(f"volume host path {shown(host)} is not a directory (only directories can be shared)")
    home = os.path.realpath(Path.home())
    if real in (home, "/"):
        raise ValueError(f"volume host path {shown(host)} is "
                         f"{'your home directory' if real == home else 'the root'} itself: share a directory "
                         "inside it instead")
    if not guest.startswith("/"):
        raise ValueError(f"volume guest path must be absolute, got {shown(guest)}")
    norm = os.path.normpath(guest)
    if norm.startswith("//"):
        norm = norm[1:]
    if norm == "/" or any(norm == r or norm.startswith(r + "/") for r in _RESERVED_GUEST):
        raise ValueError(f"volume guest path {shown(guest)} is reserved by the box: choose another directory")
    return VolumeSpec(host_path=real, guest_path=norm, mode=mode)


def parse_volume(entry: Any) -> Any:
    """(host, guest), (host, guest, "ro"|"rw"), (host, guest, read_only: bool) as upstream, a dict of host_path,
    guest_path and read_only (bool) or mode ("ro"|"rw"), Docker's "HOST:GUEST[:ro|rw]", or a VolumeSpec.
    Every form is checked the same way; nothing in it is ignored."""
    if isinstance(entry, VolumeSpec):
        entry = entry.model_dump()  # checked again: a model_construct()ed one is not
    if isinstance(entry, dict):
        where = f"volume {shown(entry)}"
        _keys(entry, _VOLUME_KEYS, where, _VOLUME_HINTS)
        missing = [k for k in ("host_path", "guest_path") if k not in entry]
        if missing:
            raise ValueError(f"{where} needs {' and '.join(repr(k) for k in missing)}")
        mode = entry.get("mode", "rw")
        if "read_only" in entry:
            mode = _volume_mode(entry["read_only"], entry.get("mode"), where)
        return check_volume(entry["host_path"], entry["guest_path"], mode)
    if isinstance(entry, str):
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"volume {shown(entry)}: expected HOST_PATH:GUEST_PATH[:ro|rw]")
        return check_volume(parts[0], parts[1], parts[2] if len(parts) == 3 else "rw")
    if isinstance(entry, list | tuple) and len(entry) in (2, 3):
        mode = entry[2] if len(entry) == 3 else "rw"
        if isinstance(mode, bool):  # upstream's (host, guest, read_only)
            mode = "ro" if mode else "rw"
        return check_volume(entry[0], entry[1], mode)
    raise ValueError(f"volumes entries are (host_path, guest_path[, 'ro'|'rw'|read_only]), a dict or "
                     f"'HOST:GUEST[:ro|rw]', got {shown(entry)}")


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
