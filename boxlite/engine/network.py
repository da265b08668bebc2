"""The VM side of networking and volumes: QEMU devices, the passt command line, and the guest's configuration.

- `enabled` (NAT): a virtio-net device whose other end is passt (Debian's `passt`), a user-mode TCP/UDP/ICMP
  translator that runs unprivileged next to QEMU. passt is started with `--no-map-gw`, so the guest's gateway
  is not the host: nothing in the guest's network maps to the host's loopback. (QEMU's own slirp maps the
  gateway to the host's loopback and cannot be told not to.)
- allow-list: no network device. The agent listens inside the box on an address per allowed destination and
  relays each connection over vsock to the shim, which connects only to the destination of that rule.
- `disabled`: no network device, no relay.
- ports: the shim listens on the host and relays each connection over vsock to the agent, which connects to
  the guest port on the box's loopback. This works in every network mode.
- volumes: virtio-9p, read-only ones with `readonly=on` so QEMU itself refuses writes. When QEMU runs as the
  box's own unprivileged user (boxlite/engine/jail.py), it cannot open the shared directory: QEMU's 9p "proxy"
  driver hands every file operation to `virtfs-proxy-helper`, which runs with the caller's file rights,
  chrooted into the shared directory. Otherwise QEMU serves it itself (`-fsdev local`).

QEMU, passt and the helpers get their sockets as descriptors (boxlite/engine/descriptors.py), never by path.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boxlite._netopts import HOST_ALIAS, NetworkSpec, PortSpec, VolumeSpec
from boxlite.engine.descriptors import PAIR, Descriptor, fd, peer

# vsock ports between the shim and the agent (2695 portal, 2696 readiness are taken).
CONFIG_PORT = 2697  # guest -> host: the agent fetches its network and volume configuration
EGRESS_PORT = 2698  # guest -> host: one connection per allowed outbound connection
PUBLISH_PORT = 2699  # host -> guest: one connection per connection to a published port

GUEST_ADDRESS, GUEST_PREFIX, GATEWAY, DNS = "10.0.2.15", 24, "10.0.2.2", "10.0.2.3"
MTU = 65520  # passt's largest: fewer, larger frames cost far less under emulation
# microvm without ACPI has 8 virtio-mmio slots: 4 are the box's own disks, vsock and rng, one is unusable
# (it shares the RTC's IRQ, see boxlite/engine/qemu.py); the rest is for the network device and volumes.
MAX_DEVICES = 3
# Allowed names resolve, inside the box, to an address of its own loopback in this range (one per name).
RULE_NET = ipaddress.IPv4Network("127.77.0.0/16")


@dataclass(frozen=True)
class NetPlan:
    """Everything the shim and the VM need for one box's network and volumes."""

    qemu_args: list[str]
    # The descriptors qemu_args, passt_argv and helpers refer to.
    descriptors: list[Descriptor]
    passt_argv: list[str] | None
    # Processes that serve QEMU's volumes (9p proxy helpers), started before QEMU.
    helpers: list[list[str]]
    guest_config: dict[str, Any]
    rules: list[dict[str, Any]]
    ports: list[dict[str, Any]]


def passt_argv(binary: Path, uid: int, gid: int) -> list[str]:
    # --runas: the box's own user (or the caller); passt isolates itself in namespaces and a seccomp filter too.
    # --fd: its end of a socket pair whose other end is the shim's frame filter.
    return [str(binary), "--runas", f"{uid}:{gid}", "--foreground", "--quiet", "--one-off", "--fd", fd("passt"),
            "--ipv4-only", "--no-map-gw", "--address", GUEST_ADDRESS, "--netmask", str(GUEST_PREFIX),
            "--gateway", GATEWAY, "--dns-forward", DNS, "--mtu", str(MTU), "--tcp-ports", "none", "--udp-ports", "none",
            "--no-dhcp", "--no-ndp", "--no-dhcpv6", "--no-ra"]


def _mac(box_id: str) -> str:
    tail = box_id[:6].ljust(6, "0")
    return "52:54:00:" + ":".join(tail[i:i + 2] for i in (0, 2, 4))


def volume_args(volumes: list[VolumeSpec], proxy_helper: Path | None = None
                ) -> tuple[list[str], list[Descriptor], list[list[str]]]:
    """QEMU's arguments for the shared directories; with `proxy_helper`, also the helpers that serve them."""
    args: list[str] = []
    descriptors: list[Descriptor] = []
    helpers: list[list[str]] = []
    for i, vol in enumerate(volumes):
        if proxy_helper is None:
            fsdev = f"local,id=vol{i},path={_qemu_escape(vol.host_path)},security_model=none"
        else:
            name = f"vol{i}"
            descriptors.append(Descriptor(name, PAIR))
            fsdev = f"proxy,id=vol{i},sock_fd={fd(name)}"
            helpers.append([str(proxy_helper), "--nodaemon", "--path", vol.host_path, "--fd", peer(name)])
        if vol.read_only:
            fsdev += ",readonly=on"
        args += ["-fsdev", fsdev, "-device", f"virtio-9p-device,fsdev=vol{i},mount_tag=vol{i}"]
    return args, descriptors, helpers


def _qemu_escape(value: str) -> str:
    """QEMU option values escape a comma by doubling it."""
    return value.replace(",", ",,")


def rule_table(network: NetworkSpec) -> list[dict[str, Any]]:
    """The allowed destinations, numbered. `listen` is where the agent accepts them inside the box: the rule's
    own IPv4 address, or for a name a loopback address of the box that /etc/hosts gives that name."""
    names: dict[str, str] = {}
    table = []
    hosts = iter(RULE_NET.hosts())
    next(hosts)
    for index, rule in enumerate(network.allow_net):
        name = HOST_ALIAS if rule.is_host_loopback else rule.host
        if rule.is_ip and not rule.is_host_loopback:
            listen, alias = rule.host, None
        else:
            if name not in names:
                names[name] = str(next(hosts))
            listen, alias = names[name], name
        connect = "127.0.0.1" if rule.is_host_loopback else rule.host
        table.append({"index": index, "listen": listen, "port": rule.port, "name": alias, "connect": connect})
    return table


def plan_network(box_id: str, network: NetworkSpec, ports: list[PortSpec], volumes: list[VolumeSpec],
                 passt: Path | None, user: tuple[int, int] | None = None,
                 proxy_helper: Path | None = None) -> NetPlan:
    """`user`: the (uid, gid) the VM's processes run as (None: the caller's); `proxy_helper`: serve volumes
    through virtfs-proxy-helper (QEMU cannot open them itself)."""
    devices = len(volumes) + (network.kind == "nat")
    if devices > MAX_DEVICES:
        from boxlite._errors import ConfigError

        raise ConfigError(f"a box takes at most {MAX_DEVICES} volumes, or {MAX_DEVICES - 1} with network "
                          f"'enabled' and no allow_net (asked: {len(volumes)} volumes)",
                          fix="share one parent directory instead of several, or use fewer volumes")
    qemu_args, descriptors, helpers = volume_args(volumes, proxy_helper)
    passt_cmd: list[str] | None = None
    kind = network.kind
    if kind == "nat":
        if passt is None:
            from boxlite._errors import NetworkError

            raise NetworkError("network mode 'enabled' needs passt, which is not installed",
                               fix="apt-get install passt, or create the box with network='disabled'")
        # QEMU's network device and passt each get one end of a socket pair; the shim's frame filter
        # (boxlite/_netfilter.py) holds the other two and passes on what it allows.
        uid, gid = user or (os.getuid(), os.getgid())
        passt_cmd = passt_argv(passt, uid, gid)
        descriptors += [Descriptor("net", PAIR), Descriptor("passt", PAIR)]
        qemu_args += ["-netdev", f"stream,id=net0,server=off,addr.type=fd,addr.str={fd('net')}",
                      "-device", f"virtio-net-device,netdev=net0,mac={_mac(box_id)}"]
    rules = rule_table(network) if kind == "allowlist" else []
    net: dict[str, Any] = {"kind": kind}
    if kind == "nat":
        net.update(address=GUEST_ADDRESS, prefix=GUEST_PREFIX, gateway=GATEWAY, dns=DNS, mtu=MTU)
    elif kind == "allowlist":
        net["rules"] = [{k: r[k] for k in ("index", "listen", "port", "name")} for r in rules]
    guest_config = {
        "network": net,
        "volumes": [{"tag": f"vol{i}", "path": v.guest_path, "read_only": v.read_only}
                    for i, v in enumerate(volumes)],
        "publish": sorted({p.guest_port for p in ports}),
        "egress_port": EGRESS_PORT, "publish_port": PUBLISH_PORT,
    }
    port_list = [p.model_dump() for p in ports]
    return NetPlan(qemu_args=qemu_args, descriptors=descriptors, passt_argv=passt_cmd, helpers=helpers,
                   guest_config=guest_config, rules=rules, ports=port_list)


def plan_from_config(box_id: str, config: dict[str, Any], user: tuple[int, int] | None = None,
                     proxy_helper: Path | None = None) -> NetPlan:
    """The NetPlan of a box from its stored configuration. Volumes are checked again: a shared directory
    removed since the box was created fails the start with a ConfigError."""
    import shutil

    from boxlite._errors import ConfigError
    from boxlite._netopts import check_volume

    network = NetworkSpec.model_validate(config.get("network") or {})
    ports = [PortSpec.model_validate(p) for p in config.get("ports") or []]
    try:
        volumes = [check_volume(v["host_path"], v["guest_path"], v.get("mode", "rw"))
                   for v in config.get("volumes") or []]
    except ValueError as exc:
        raise ConfigError(str(exc), fix="recreate the directory, or remove the box and create it again") from None
    passt = shutil.which("passt")
    return plan_network(box_id, network, ports, volumes, Path(passt) if passt else None, user, proxy_helper)


def inline_config(plan: NetPlan) -> str:
    """The guest's configuration as a kernel parameter (for boxes without vsock: no ports, no allow-list)."""
    import base64
    import json

    data = json.dumps(plan.guest_config, separators=(",", ":"), sort_keys=True).encode()
    return "boxlite.config=b64:" + base64.urlsafe_b64encode(data).decode()


def launch_entry(plan: NetPlan, config_port: int = CONFIG_PORT) -> dict[str, Any]:
    """What the shim needs (the `net` entry of launch.json); config_port 0: the configuration is inline."""
    return {"guest_config": plan.guest_config, "config_port": config_port, "rules": plan.rules,
            "ports": plan.ports, "passt_argv": plan.passt_argv, "helpers": plan.helpers}
