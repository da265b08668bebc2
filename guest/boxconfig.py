"""The box's network and shared folders, set up at boot from the configuration the shim hands over.

The kernel command line carries `boxlite.config=PORT`, and the agent reads a JSON document from that vsock port
of the host, or `boxlite.config=b64:...`, the document itself (boxes without vsock); see
boxlite/engine/network.py for what is in it. It is applied after the agent has chrooted into the image's root.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

from guest import netsetup, relay, volumes

HOST_CID = 2
CONFIG_TIMEOUT_S = 10.0


def config_source(cmdline: str) -> str | None:
    """`boxlite.config=` of the kernel command line: a vsock port, or `b64:` and the configuration itself."""
    for item in cmdline.split():
        if item.startswith("boxlite.config="):
            return item.split("=", 1)[1]
    return None


def inline(value: str) -> dict[str, Any]:
    import base64

    config: dict[str, Any] = json.loads(base64.urlsafe_b64decode(value.encode()))
    return config


def fetch(port: int) -> dict[str, Any]:
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
        s.settimeout(CONFIG_TIMEOUT_S)
        s.connect((HOST_CID, port))
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    config: dict[str, Any] = json.loads(b"".join(chunks))
    return config


def _replace_file(path: str, text: str) -> None:
    """Write an /etc file of the image, replacing a link there rather than writing where it points."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.islink(path):
            os.unlink(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def hosts_file(hostname: str, rules: list[dict[str, Any]]) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"127.0.1.1\t{hostname}"]
    seen = set()
    for rule in rules:
        if rule.get("name") and rule["name"] not in seen:
            seen.add(rule["name"])
            lines.append(f"{rule['listen']}\t{rule['name']}")
    return "\n".join(lines) + "\n"


def resolv_conf(net: dict[str, Any]) -> str:
    if net.get("dns"):
        return f"# written by boxlite: the box's user-mode network forwards DNS\nnameserver {net['dns']}\n"
    return "# written by boxlite: this box has no DNS (names it may reach are in /etc/hosts)\n"


def setup_network(net: dict[str, Any]) -> None:
    kind = net.get("kind", "none")
    if kind == "nat":
        netsetup.set_mtu("eth0", int(net["mtu"]))
        netsetup.set_address("eth0", net["address"], int(net["prefix"]))
        netsetup.link_up("eth0")
        netsetup.add_default_route(net["gateway"])
    rules = net.get("rules", [])
    for n, rule in enumerate(r for r in rules if not r.get("name")):
        with contextlib.suppress(FileExistsError):
            netsetup.add_loopback_address(n + 1, rule["listen"])
    _replace_file("/etc/hosts", hosts_file(socket.gethostname(), rules))
    if kind != "none":
        _replace_file("/etc/resolv.conf", resolv_conf(net))


def setup(cmdline: str) -> None:
    """Bring the box's loopback up, then (with a configuration) its network, ports and shared folders."""
    netsetup.link_up("lo")
    source = config_source(cmdline)
    if source is None:
        return
    config = inline(source[4:]) if source.startswith("b64:") else fetch(int(source))
    net = config.get("network") or {}
    setup_network(net)
    volumes.mount_all(config.get("volumes") or [])
    if config.get("publish"):
        relay.serve_published(int(config["publish_port"]), [int(p) for p in config["publish"]])
    if net.get("rules"):
        relay.serve_rules(int(config["egress_port"]), net["rules"])
