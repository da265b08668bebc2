"""The guest agent's pure logic, run on the host: user resolution and kernel boot parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from boxlite.engine import Accel, VmSpec
from boxlite.engine.qemu import kernel_cmdline
from guest import system, users
from guest.users import Identity, UnknownUser

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
broken:x:7
"""

GROUP = """\
root:x:0:
daemon:x:1:
nogroup:x:65534:
alice:x:1000:
staff:x:50:alice,bob
docker:x:999:bob,alice
"""


@pytest.fixture
def root(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return str(tmp_path)


def test_default_is_root(root: str) -> None:
    for spec in ("", "root", "0"):
        assert users.resolve(root, spec) == Identity(uid=0, gid=0, groups=(), home="/root", name="root")


def test_by_name(root: str) -> None:
    assert users.resolve(root, "alice") == Identity(uid=1000, gid=1000, groups=(50, 999), home="/home/alice",
                                                    name="alice")
    nobody = users.resolve(root, "nobody")
    assert (nobody.uid, nobody.gid, nobody.home) == (65534, 65534, "/nonexistent")


def test_by_uid(root: str) -> None:
    assert users.resolve(root, "1000").name == "alice"
    assert users.resolve(root, "1000").home == "/home/alice"


def test_uid_not_in_passwd(root: str) -> None:
    assert users.resolve(root, "4242") == Identity(uid=4242, gid=4242, groups=(), home="/", name="4242")


def test_uid_gid(root: str) -> None:
    ident = users.resolve(root, "1234:5678")
    assert (ident.uid, ident.gid) == (1234, 5678)
    ident = users.resolve(root, "1000:50")
    assert (ident.uid, ident.gid) == (1000, 50)
    assert ident.groups == (999,)  # the primary group is not repeated among the supplementary ones


def test_name_group(root: str) -> None:
    ident = users.resolve(root, "alice:staff")
    assert (ident.uid, ident.gid, ident.groups) == (1000, 50, (999,))
    assert users.resolve(root, "nobody:nogroup").gid == 65534


@pytest.mark.parametrize(("spec", "message"), [
    ("mallory", "unable to find user mallory"),
    ("bob", "unable to find user bob"),  # in group member lists only, not in passwd
    ("broken", "unable to find user broken"),  # a malformed passwd line is ignored
    ("alice:nosuchgroup", "unable to find group nosuchgroup"),
    ("1000:nosuchgroup", "unable to find group nosuchgroup"),
])
def test_unknown(root: str, spec: str, message: str) -> None:
    with pytest.raises(UnknownUser) as info:
        users.resolve(root, spec)
    assert message in str(info.value)


def test_image_without_passwd(tmp_path: Path) -> None:
    assert users.resolve(str(tmp_path), "0").uid == 0
    assert users.resolve(str(tmp_path), "33:33").gid == 33
    with pytest.raises(UnknownUser):
        users.resolve(str(tmp_path), "root")


# -- boot parameters ----------------------------------------------------------------------------------------------
def test_boot_params() -> None:
    params = system.boot_params("console=ttyS0 root=/dev/vda ro boxlite.ready_port=3000 quiet "
                                "boxlite.hostname=abc123 boxlite.image=/dev/vdc boxlite.transport=uds\n")
    assert params == system.BootParams(ready_port=3000, image_device="/dev/vdc", hostname="abc123", transport="uds")


def test_boot_param_defaults() -> None:
    params = system.boot_params("console=ttyS0 quiet boxlite.flag init=/sbin/boxlite-init")
    assert params == system.BootParams(ready_port=2696, image_device="/dev/vdb", hostname="boxlite",
                                       transport="vsock")


def test_boot_param_value_may_contain_equals() -> None:
    assert system.boot_params("boxlite.hostname=a=b").hostname == "a=b"


def test_host_command_line_is_understood_by_the_guest() -> None:
    """The contract between boxlite.engine (writes the kernel command line) and the agent (reads it)."""
    spec = VmSpec(qemu=Path("q"), kernel=Path("k"), guest_root=Path("g"), box_disk=Path("d"), box_dir=Path("/b"),
                  accel=Accel("tcg", "t"), cpus=1, memory_mib=256, hostname="0123456789ab", ready_port=24680,
                  vhost_user_socket=None, tsc_khz=1_000_000)
    params = system.boot_params(kernel_cmdline(spec))
    assert (params.ready_port, params.hostname) == (24680, "0123456789ab")
    params = system.boot_params(kernel_cmdline(dataclasses.replace(spec, ready_port=2696, hostname="x")))
    assert (params.ready_port, params.hostname) == (2696, "x")


def test_host_numbers() -> None:
    total, available = system.memory_bytes()
    assert total > available > 0
    busy, total_s = system.cpu_seconds()
    assert 0 < busy <= total_s
    assert system.uptime_s() > 0
    assert system.process_count() > 1
