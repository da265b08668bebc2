"""The Docker-style flags for networks, ports, volumes and terminals (boxlite/cli_net.py), without VMs."""

from __future__ import annotations

from pathlib import Path

import pytest

from boxlite import BoxOptions, cli
from boxlite.cli_net import box_options


def test_run_network_port_and_volume_flags(tmp_path: Path) -> None:
    args = cli.parse_args(["run", "--rm", "-it", "-p", "8080:80", "-p", "0.0.0.0:0:81", "-p", "82",
                           "-v", f"{tmp_path}:/data:ro", "--volume", f"{tmp_path}:/w", "--network", "none",
                           "-e", "A=1", "-w", "/tmp", "-u", "nobody", "--cpus", "1", "--memory", "256",
                           "--name", "n1", "img", "--", "sh"])
    assert args.interactive and args.tty and args.rm and args.name == "n1"
    assert (args.env, args.workdir, args.user, args.cpus, args.memory) == ([("A", "1")], "/tmp", "nobody", 1, 256)
    opts = BoxOptions(**box_options(args))
    assert [(p.host_ip, p.host_port, p.guest_port) for p in opts.ports] == [
        ("127.0.0.1", 8080, 80), ("0.0.0.0", 0, 81), ("127.0.0.1", 0, 82)]
    assert [(v.guest_path, v.mode) for v in opts.volumes] == [("/data", "ro"), ("/w", "rw")]
    assert opts.network.kind == "none"
    assert args.command == ["sh"]


def test_allow_net_flags() -> None:
    args = cli.parse_args(["run", "--allow-net", "example.org:443", "--allow-net", "host.boxlite.internal:8000",
                           "img"])
    opts = BoxOptions(**box_options(args))
    assert opts.network.kind == "allowlist"
    assert [str(r) for r in opts.network.allow_net] == ["example.org:443", "host.boxlite.internal:8000"]
    args = cli.parse_args(["run", "--allow-net", "example.org:443", "--network", "disabled", "img"])
    with pytest.raises(ValueError, match="needs a network"):
        box_options(args)


def test_defaults_leave_the_options_alone() -> None:
    assert box_options(cli.parse_args(["run", "img"])) == {"ports": [], "volumes": []}
    args = cli.parse_args(["exec", "-it", "box1", "--", "sh"])
    assert args.interactive and args.tty


@pytest.mark.parametrize("argv", [
    ["run", "-p", "80:80/udp", "img"], ["run", "-p", "x:80", "img"], ["run", "-v", "relative:/data", "img"],
    ["run", "-v", "/nonexistent-dir-xyz:/data", "img"], ["run", "--network", "bridgey", "img"],
    ["run", "--allow-net", "example.org", "img"],
])
def test_bad_flags_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
