"""Network, ports and volumes: option parsing and validation, the VM's arguments, the frame filter."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

import boxlite
from boxlite import BoxOptions, ConfigError, NetworkError
from boxlite._netfilter import allowed
from boxlite._netopts import HOST_ALIAS, NetworkSpec
from boxlite._relay import bind_ports
from boxlite.engine.network import MAX_DEVICES, plan_network, rule_table
from guest.boxconfig import config_source, hosts_file, inline, resolv_conf

PASST = Path("/usr/bin/passt")


# -- options ----------------------------------------------------------------------------------------------------
def test_network_defaults_to_enabled_nat() -> None:
    assert BoxOptions().network == NetworkSpec(mode="enabled")
    assert BoxOptions().network.kind == "nat"
    assert BoxOptions(network="disabled").network.kind == "none"
    assert BoxOptions(network="none").network.kind == "none"
    assert BoxOptions(network={"mode": "enabled", "allow_net": ["example.org:443"]}).network.kind == "allowlist"


@pytest.mark.parametrize("value, message", [
    ("bridged-ish", "network must be 'enabled' or 'disabled'"),
    ({"allow_net": ["example.org"]}, "needs a port"),
    ({"allow_net": ["example.org:0"]}, "between 1 and 65535"),
    ({"allow_net": ["exa mple.org:80"]}, "not a valid host name"),
    ({"allow_net": ["[::1]:80"]}, "IPv6"),
    ({"mode": "disabled", "allow_net": ["example.org:80"]}, "takes no allow_net"),
])
def test_bad_network(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BoxOptions(network=value)


def test_ports_in_every_spelling() -> None:
    opts = BoxOptions(ports=[(8080, 80), (0, 81, "tcp"), "127.0.0.1:9000:90", "0.0.0.0:9001:91/tcp", "92"])
    got = [(p.host_ip, p.host_port, p.guest_port) for p in opts.ports]
    assert got == [("127.0.0.1", 8080, 80), ("127.0.0.1", 0, 81), ("127.0.0.1", 9000, 90),
                   ("0.0.0.0", 9001, 91), ("127.0.0.1", 0, 92)]


@pytest.mark.parametrize("ports, message", [
    ([(80, 80, "udp")], "only 'tcp'"),
    ([(70000, 80)], "between 0 and 65535"),
    ([(80, 0)], "between 1 and 65535"),
    ([(8080, 80), (8080, 81)], "published twice"),
    (["nonsense:1:2:3"], "expected"),
    ([("localhost", 1, 2, "tcp")], "IPv4 address"),
])
def test_bad_ports(ports: list[object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BoxOptions(ports=ports)


def test_volumes_are_resolved_and_checked(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    opts = BoxOptions(volumes=[(str(tmp_path / "link"), "/data/", "ro"), f"{tmp_path / 'd'}:/w"])
    assert [(v.host_path, v.guest_path, v.mode) for v in opts.volumes] == [
        (str(tmp_path / "d"), "/data", "ro"), (str(tmp_path / "d"), "/w", "rw")]


@pytest.mark.parametrize("guest, message", [
    ("data", "absolute"), ("/", "reserved"), ("/proc/x", "reserved"), ("/dev", "reserved"),
])
def test_bad_guest_paths(tmp_path: Path, guest: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BoxOptions(volumes=[(str(tmp_path), guest)])


def test_bad_host_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path, message in [(str(tmp_path / "missing"), "does not exist"), (str(tmp_path / "file"), "not a directory"),
                          (str(Path.home()), "home directory"), ("/", "the root"), ("rel/dir", "absolute")]:
        with pytest.raises(ConfigError, match=message):
            BoxOptions(volumes=[(path, "/data", "rw")])
    with pytest.raises(ConfigError, match="mode must be"):
        BoxOptions(volumes=[(str(tmp_path), "/data", "rx")])
    with pytest.raises(ConfigError, match="two volumes"):
        BoxOptions(volumes=[(str(tmp_path), "/data"), (str(tmp_path), "/data/")])


def test_options_survive_a_round_trip_through_the_state_database(tmp_path: Path) -> None:
    opts = BoxOptions(ports=[(0, 80)], volumes=[(str(tmp_path), "/d", "ro")],
                      network={"allow_net": [f"{HOST_ALIAS}:8000", "example.org:443"]})
    again = BoxOptions(**opts.model_dump(mode="json"))
    assert again == opts


# -- every accepted shape is honoured or refused (issue 13: a dict's read_only was dropped) -------------------------
def _modes(tmp_path: Path, *entries: object) -> list[tuple[str, str, str, bool]]:
    opts = BoxOptions(volumes=list(entries), network="disabled")
    plan = plan_network("abc", opts.network, [], opts.volumes, None)
    fsdevs = [plan.qemu_args[i + 1] for i, a in enumerate(plan.qemu_args) if a == "-fsdev"]
    # What the box gets: the spec's mode, QEMU's readonly flag and the guest's mount flag, all three.
    return [(v.guest_path, v.mode, str(f.endswith(",readonly=on")), g["read_only"])
            for v, f, g in zip(opts.volumes, fsdevs, plan.guest_config["volumes"], strict=True)]


def test_read_only_is_honoured_in_every_volume_shape(tmp_path: Path) -> None:
    d = str(tmp_path)
    got = _modes(tmp_path,
                 {"host_path": d, "guest_path": "/a", "read_only": True},
                 {"host_path": d, "guest_path": "/b", "read_only": False},
                 {"host_path": tmp_path, "guest_path": "/c", "mode": "ro"})
    assert got == [("/a", "ro", "True", True), ("/b", "rw", "False", False), ("/c", "ro", "True", True)]
    got = _modes(tmp_path, (d, "/a", True), (d, "/b", False), [d, "/c", "ro"])
    assert got == [("/a", "ro", "True", True), ("/b", "rw", "False", False), ("/c", "ro", "True", True)]
    got = _modes(tmp_path, f"{d}:/a:ro", (d, "/b"), boxlite.VolumeSpec(host_path=d, guest_path="/c", read_only=True))
    assert got == [("/a", "ro", "True", True), ("/b", "rw", "False", False), ("/c", "ro", "True", True)]
    # A VolumeSpec is checked like any other form (it reaches QEMU's command line).
    with pytest.raises(ConfigError, match="reserved"):
        BoxOptions(volumes=[boxlite.VolumeSpec.model_construct(host_path=d, guest_path="/proc", mode="ro")])


@pytest.mark.parametrize("entry, message", [
    ({"host_path": "{d}", "guest_path": "/a", "readonly": True}, "unknown key 'readonly' .*spelled read_only"),
    ({"host_path": "{d}", "guest_path": "/a", "ro": True}, "unknown key 'ro'"),
    ({"host_path": "{d}", "guest_path": "/a", "managed_volume": "v"}, "named volumes are not supported"),
    ({"host_path": "{d}", "guest_path": "/a", "options": "ro"}, "accepted keys: host_path, guest_path, read_only"),
    ({"host_path": "{d}", "guest_path": "/a", "read_only": "true"}, "read_only must be True or False"),
    ({"host_path": "{d}", "guest_path": "/a", "read_only": 1}, "read_only must be True or False"),
    ({"host_path": "{d}", "guest_path": "/a", "read_only": None}, "read_only must be True or False"),
    ({"host_path": "{d}", "guest_path": "/a", "read_only": False, "mode": "ro"}, "contradicts"),
    ({"host_path": "{d}", "guest_path": "/a", "mode": "RO"}, "mode must be 'ro' or 'rw'"),
    ({"guest_path": "/a", "read_only": True}, "needs 'host_path'"),
    ({"host_path": "{d}"}, "needs 'guest_path'"),
    ({"host_path": None, "guest_path": "/a"}, "must be a path string"),
    ({"host_path": "{d}", "guest_path": 5}, "must be a path string"),
    ({1: "x", "host_path": "{d}", "guest_path": "/a"}, "unknown key 1"),
    (("{d}", "/a", "readonly"), "mode must be 'ro' or 'rw'"),
    (("{d}", "/a", 1), "mode must be 'ro' or 'rw'"),
    (("{d}", "/a", None), "mode must be 'ro' or 'rw'"),
    (("{d}", "/a", "ro", "extra"), "volumes entries are"),
    (("{d}",), "volumes entries are"),
    ("{d}:/a:ro,z", "mode must be 'ro' or 'rw'"),
    ("{d}:/a:ro:x", "expected HOST_PATH:GUEST_PATH"),
    ({"host_path": "{d}", "guest_path": "/a", "read_only": True, "mode": "rw"}, "contradicts"),
])
def test_volume_shapes_that_would_lose_a_setting_are_refused(tmp_path: Path, entry: object, message: str) -> None:
    def fill(value: object) -> object:
        if isinstance(value, str):
            return value.replace("{d}", str(tmp_path))
        if isinstance(value, tuple):
            return tuple(fill(v) for v in value)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    with pytest.raises(ConfigError, match=message):
        BoxOptions(volumes=[fill(entry)])


def test_volume_spec_takes_read_only_and_refuses_unknown_fields(tmp_path: Path) -> None:
    assert boxlite.VolumeSpec(host_path="/x", guest_path="/y", read_only=True).mode == "ro"
    with pytest.raises(ConfigError, match="readonly"):
        boxlite.VolumeSpec(host_path="/x", guest_path="/y", readonly=True)


def test_ports_in_upstream_shapes() -> None:
    opts = BoxOptions(ports=[(8080, 80, "tcp", "0.0.0.0"), ("127.0.0.1", 8081, 81, "TCP"), {"guest_port": 82},
                             {"host_port": 8083, "guest_port": 83, "protocol": "tcp", "host_ip": "127.0.0.1"},
                             boxlite.PortSpec(host_port=8084, guest_port=84)])
    got = [(p.host_ip, p.host_port, p.guest_port) for p in opts.ports]
    assert got == [("0.0.0.0", 8080, 80), ("127.0.0.1", 8081, 81), ("127.0.0.1", 0, 82), ("127.0.0.1", 8083, 83),
                   ("127.0.0.1", 8084, 84)]


@pytest.mark.parametrize("entry, message", [
    ({"guest_port": 80, "hostport": 8080}, "unknown key 'hostport'.*accepted keys: host_port, guest_port"),
    ({"host_port": 8080}, "needs a 'guest_port'"),
    ({"guest_port": 80, "protocol": "udp"}, "only 'tcp'"),
    ({"guest_port": 70000}, "between 1 and 65535"),
    ({"guest_port": 80, "host_port": -1}, "between 0 and 65535"),
    ({"guest_port": 80, "host_ip": 8080}, "IPv4 address"),
    ({"guest_port": True}, "between 1 and 65535"),
    ({"guest_port": 80.5}, "between 1 and 65535"),
    ((8080, 80, "udp", "127.0.0.1"), "only 'tcp'"),
    ((8080, 80, "tcp", "::1"), "IPv4 address"),
    ((8080, 80, None), "only 'tcp'"),
    ((8080, 80, "tcp", "127.0.0.1", "x"), "ports entries are"),
    ("8080:80/udp", "only 'tcp'"),
])
def test_bad_port_shapes(entry: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BoxOptions(ports=[entry])


def test_port_spec_built_directly_is_checked() -> None:
    for fields in ({"guest_port": 70000}, {"guest_port": 80, "host_port": -1}, {"guest_port": 80, "host_ip": 8080},
                   {"guest_port": 80, "protocol": "udp"}):
        with pytest.raises(ConfigError):
            boxlite.PortSpec(**fields)


def test_network_shapes() -> None:
    assert BoxOptions(network={"mode": "none"}).network.kind == "none"
    assert BoxOptions(network=False).network.kind == "none"
    rules = BoxOptions(network={"allow_net": [{"host": "Example.org", "port": 443}, "10.1.2.3:22"]}).network.allow_net
    assert [str(r) for r in rules] == ["example.org:443", "10.1.2.3:22"]


@pytest.mark.parametrize("value, message", [
    ({"outbound": {"mode": "enabled"}}, "unknown key 'outbound'.*accepted keys: mode, allow_net"),
    ({"inbound": {}}, "published ports"),
    ({"mode": "enabled", "allow": ["example.org:443"]}, "unknown key 'allow'"),
    ({"allow_net": [{"host": "example.org", "port": 443, "proto": "udp"}]}, "unknown key 'proto'"),
    ({"allow_net": [{"host": "bad host", "port": 443}]}, "not a valid host name"),
    ({"allow_net": [{"host": "example.org", "port": 70000}]}, "between 1 and 65535"),
    ({"allow_net": [{"host": "example.org"}]}, "needs both 'host' and 'port'"),
    ({"mode": 1}, "network must be 'enabled' or 'disabled'"),
    (["enabled"], "network must be"),
])
def test_bad_network_shapes(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BoxOptions(network=value)


def test_network_spec_built_directly_is_checked() -> None:
    with pytest.raises(ConfigError, match="not a valid host name"):
        NetworkSpec(allow_net=[{"host": "bad host", "port": 1}])
    with pytest.raises(ConfigError, match="unknown option 'outbound' \\(valid options: allow_net, mode\\)"):
        NetworkSpec(outbound={})


def test_env_names_given_twice_are_refused() -> None:
    with pytest.raises(ConfigError, match="env sets 'A' twice"):
        BoxOptions(env=[("A", "1"), ("A", "2")])
    with pytest.raises(ConfigError, match="env sets 'PORT' twice"):
        BoxOptions(env=[("PORT", 1), ["PORT", "1"]])
    assert BoxOptions(env={"PORT": 8080, "A": "x"}).env == {"PORT": "8080", "A": "x"}


# -- the VM's side ----------------------------------------------------------------------------------------------
def test_nat_plan(tmp_path: Path) -> None:
    plan = plan_network("abcdef123456", NetworkSpec(), [], [], PASST, user=(1234, 5678))
    assert plan.passt_argv is not None and plan.passt_argv[0] == str(PASST)
    assert "--no-map-gw" in plan.passt_argv  # the gateway is never the host
    assert plan.passt_argv[plan.passt_argv.index("--tcp-ports") + 1] == "none"
    assert plan.passt_argv[plan.passt_argv.index("--runas") + 1] == "1234:5678"
    assert plan.passt_argv[plan.passt_argv.index("--fd") + 1] == "{fd:passt}"
    netdev = plan.qemu_args[plan.qemu_args.index("-netdev") + 1]
    # QEMU and passt each hold one end of a socket pair; the shim's filter holds the other ends.
    assert "addr.type=fd,addr.str={fd:net}" in netdev
    assert {(d.name, d.kind) for d in plan.descriptors} == {("net", "pair"), ("passt", "pair")}
    assert plan.guest_config["network"]["kind"] == "nat"


def test_nat_without_passt_is_a_network_error(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="passt"):
        plan_network("abc", NetworkSpec(), [], [], None)


def test_disabled_and_allowlist_have_no_network_device(tmp_path: Path) -> None:
    for spec in (NetworkSpec(mode="disabled"), NetworkSpec(allow_net=["example.org:443"])):
        plan = plan_network("abc", spec, [], [], PASST)
        assert "-netdev" not in plan.qemu_args and plan.passt_argv is None


def test_volume_devices(tmp_path: Path) -> None:
    opts = BoxOptions(volumes=[(str(tmp_path), "/ro", "ro"), (str(tmp_path), "/rw", "rw")], network="disabled")
    plan = plan_network("abc", opts.network, [], opts.volumes, None)
    fsdevs = [plan.qemu_args[i + 1] for i, a in enumerate(plan.qemu_args) if a == "-fsdev"]
    assert fsdevs[0].endswith(",readonly=on") and "readonly" not in fsdevs[1]
    assert all(f"path={tmp_path}," in f for f in fsdevs) and not plan.helpers


def test_volumes_of_an_unprivileged_qemu_go_through_proxy_helpers(tmp_path: Path) -> None:
    opts = BoxOptions(volumes=[(str(tmp_path), "/ro", "ro"), (str(tmp_path), "/rw", "rw")], network="disabled")
    helper = Path("/usr/lib/qemu/virtfs-proxy-helper")
    plan = plan_network("abc", opts.network, [], opts.volumes, None, user=(1234, 1234), proxy_helper=helper)
    fsdevs = [plan.qemu_args[i + 1] for i, a in enumerate(plan.qemu_args) if a == "-fsdev"]
    assert fsdevs == ["proxy,id=vol0,sock_fd={fd:vol0},readonly=on", "proxy,id=vol1,sock_fd={fd:vol1}"]
    assert plan.helpers == [[str(helper), "--nodaemon", "--path", str(tmp_path), "--fd", "{peer:vol0}"],
                            [str(helper), "--nodaemon", "--path", str(tmp_path), "--fd", "{peer:vol1}"]]
    assert [(d.name, d.kind) for d in plan.descriptors] == [("vol0", "pair"), ("vol1", "pair")]
    assert plan.guest_config["volumes"] == [{"tag": "vol0", "path": "/ro", "read_only": True},
                                            {"tag": "vol1", "path": "/rw", "read_only": False}]


def test_too_many_devices(tmp_path: Path) -> None:
    opts = BoxOptions(volumes=[(str(tmp_path), f"/v{i}") for i in range(MAX_DEVICES)])
    with pytest.raises(ConfigError, match="at most"):
        plan_network("abc", opts.network, [], opts.volumes, PASST)  # + the NAT device
    plan_network("abc", NetworkSpec(mode="disabled"), [], opts.volumes, None)


def test_rule_table_gives_each_name_one_box_address() -> None:
    spec = NetworkSpec(allow_net=["example.org:443", "example.org:80", f"{HOST_ALIAS}:8000", "localhost:9000",
                                  "10.1.2.3:22"])
    table = rule_table(spec)
    assert [r["index"] for r in table] == [0, 1, 2, 3, 4]
    assert table[0]["listen"] == table[1]["listen"] and table[0]["listen"].startswith("127.77.")
    assert table[2]["connect"] == table[3]["connect"] == "127.0.0.1"  # the host's loopback, by rule only
    assert table[2]["name"] == table[3]["name"] == HOST_ALIAS and table[2]["listen"] == table[3]["listen"]
    assert table[4] == {"index": 4, "listen": "10.1.2.3", "port": 22, "name": None, "connect": "10.1.2.3"}


def test_guest_files() -> None:
    rules = [{"listen": "127.77.0.2", "name": "example.org"}, {"listen": "127.77.0.2", "name": "example.org"},
             {"listen": "10.1.2.3", "name": None}]
    hosts = hosts_file("box1", rules)
    assert hosts.count("example.org") == 1 and "127.0.1.1\tbox1" in hosts and "10.1.2.3" not in hosts
    assert "nameserver 10.0.2.3" in resolv_conf({"dns": "10.0.2.3"})
    assert "nameserver" not in resolv_conf({"kind": "allowlist"})
    assert config_source("quiet boxlite.config=2697 x=1") == "2697" and config_source("quiet") is None
    import base64
    import json

    encoded = base64.urlsafe_b64encode(json.dumps({"network": {"kind": "nat"}}).encode()).decode()
    assert inline(encoded) == {"network": {"kind": "nat"}}


def _frame(ethertype: int, dst: str = "1.2.3.4") -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, socket.inet_aton("10.0.2.15"),
                     socket.inet_aton(dst))
    return b"\x02" * 6 + b"\x52" * 6 + struct.pack("!H", ethertype) + ip + b"\0" * 20


@pytest.mark.parametrize("frame, ok", [
    (_frame(0x0800, "93.184.216.34"), True), (_frame(0x0800, "10.0.2.3"), True), (_frame(0x0806), True),
    (_frame(0x0800, "127.0.0.1"), False), (_frame(0x0800, "127.255.1.2"), False), (_frame(0x0800, "0.0.0.0"), False),
    (_frame(0x0800, "169.254.169.254"), False), (_frame(0x86DD), False), (_frame(0x8100), False), (b"\0" * 10, False),
])
def test_frame_filter(frame: bytes, ok: bool) -> None:
    assert allowed(frame) is ok


def test_bind_ports_all_or_nothing() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(NetworkError, match=f"host port {port} is already in use"):
            bind_ports([{"host_ip": "127.0.0.1", "host_port": 0, "guest_port": 1},
                        {"host_ip": "127.0.0.1", "host_port": port, "guest_port": 2}])
        bound = bind_ports([{"host_ip": "127.0.0.1", "host_port": 0, "guest_port": 1}])
        assert bound[0][0]["host_port"] > 0
        for _, sock in bound:
            sock.close()
    finally:
        taken.close()
