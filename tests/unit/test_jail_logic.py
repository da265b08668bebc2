"""Who a box's VM processes run as, and the descriptors they get instead of paths."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from boxlite.engine import jail
from boxlite.engine.descriptors import (
    KERNEL,
    LISTEN,
    LOG,
    PAIR,
    PROGRAM,
    READ,
    Descriptor,
    OpenedDescriptors,
    referenced,
)

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the VM user is only used when boxlite runs as root")


@root_only
def test_each_box_gets_its_own_user_from_the_reserved_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOXLITE_JAIL", raising=False)
    monkeypatch.delenv("BOXLITE_JAIL_UID_BASE", raising=False)
    user, note = jail.vm_user("abcdef123456", set(), "tcg", volumes=False)
    assert user is not None and user.uid == user.gid == jail.UID_BASE + 0xabcde
    assert user.groups == () and str(user.uid) in note
    # Taken by a running box: the next free number.
    again, _ = jail.vm_user("abcdef999999", {user.uid}, "tcg", volumes=False)
    assert again is not None and again.uid == user.uid + 1


@root_only
def test_the_range_moves_and_the_jail_turns_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_JAIL_UID_BASE", "0x60000000")
    user, _ = jail.vm_user("00010000aaaa", set(), "tcg", volumes=False)
    assert user is not None and user.uid == 0x60000000 + 0x10
    monkeypatch.setenv("BOXLITE_JAIL", "off")
    user, note = jail.vm_user("00010000aaaa", set(), "tcg", volumes=False)
    assert user is None and "BOXLITE_JAIL=off" in note


@root_only
def test_volumes_without_the_proxy_helper_keep_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jail, "proxy_helper", lambda: None)
    user, note = jail.vm_user("abcdef123456", set(), "tcg", volumes=True)
    assert user is None and "virtfs-proxy-helper" in note
    assert jail.vm_user("abcdef123456", set(), "tcg", volumes=False)[0] is not None


def test_not_root_runs_as_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    user, note = jail.vm_user("abcdef123456", set(), "tcg", volumes=False)
    assert user is None and "calling user" in note


def test_taken_users_are_read_from_launch_plans(tmp_path: Path) -> None:
    files = []
    for i, user in enumerate([{"uid": 7, "gid": 7, "groups": []}, None]):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps({"vm_user": user}))
        files.append(path)
    (tmp_path / "bad.json").write_text("{not json")
    assert jail.users_of([*files, tmp_path / "bad.json", tmp_path / "missing.json"]) == {7}


def test_vm_user_round_trips() -> None:
    user = jail.VmUser(5, 6, (7,))
    assert jail.VmUser.from_json(json.loads(json.dumps(user.to_json()))) == user
    assert jail.VmUser.from_json(None) is None


def test_placeholders_are_filled_and_only_given_descriptors_pass(tmp_path: Path) -> None:
    (tmp_path / "disk").write_bytes(b"disk")
    opened = OpenedDescriptors()
    opened.open([Descriptor("disk", READ, str(tmp_path / "disk")), Descriptor("log", LOG, str(tmp_path / "log")),
                 Descriptor("link", PAIR), Descriptor("qmp", LISTEN, str(tmp_path / "qmp.sock"))])
    try:
        argv = ["qemu", "-add-fd", "fd={fd:disk},set=1", "-chardev", "socket,fd={fd:link}", "x{fd:disk}"]
        assert referenced(argv) == [("fd", "disk"), ("fd", "link")]
        filled, fds = opened.spawn_args(argv)
        assert filled[2] == f"fd={opened.fds['disk']},set=1" and filled[5] == f"x{opened.fds['disk']}"
        assert fds == (opened.fds["disk"], opened.fds["link"])
        _, helper_fds = opened.spawn_args(["helper", "--fd", "{peer:link}"])
        assert helper_fds == (opened.peers["link"],)
        with pytest.raises(KeyError, match="fd:nope"):
            opened.spawn_args(["x", "{fd:nope}"])
        assert (tmp_path / "qmp.sock").is_socket() and (tmp_path / "log").exists()
        opened.close_passed()
        # What was handed over is closed here; what nobody took stays for the shim.
        assert set(opened.fds) == {"log", "qmp"} and not opened.peers
    finally:
        opened.close()
    assert not opened.fds


def test_a_pair_end_kept_by_the_shim_talks_to_the_given_one() -> None:
    opened = OpenedDescriptors()
    opened.open([Descriptor("portal", PAIR)])
    mine = opened.take_peer("portal")
    theirs = socket.socket(fileno=os.dup(opened.fds["portal"]))
    try:
        theirs.sendall(b"ready")
        assert mine.recv(5) == b"ready"
    finally:
        mine.close()
        theirs.close()
        opened.close()


def test_a_failed_open_closes_what_was_opened(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    opened = OpenedDescriptors()
    with pytest.raises(FileNotFoundError):
        opened.open([Descriptor("a", READ, str(tmp_path / "a")), Descriptor("b", READ, str(tmp_path / "missing"))])
    assert not opened.fds


def test_files_the_vm_user_may_not_read_are_copied_to_anonymous_memory(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF" + os.urandom(3 << 20))
    for mode, copied in ((0o755, False), (0o700, True)):
        kernel.chmod(mode)
        opened = OpenedDescriptors(vm_user=12345)
        opened.open([Descriptor("kernel", KERNEL, str(kernel)), Descriptor("prog", PROGRAM, str(kernel))])
        try:
            for name in ("kernel", "prog"):
                target = os.readlink(f"/proc/self/fd/{opened.fds[name]}")
                assert target.startswith("/memfd:") is copied, target
                with open(f"/proc/self/fd/{opened.fds[name]}", "rb") as f:
                    assert f.read() == kernel.read_bytes()
        finally:
            opened.close()
    # Running as the caller: never copied.
    opened = OpenedDescriptors()
    opened.open([Descriptor("kernel", KERNEL, str(kernel))])
    try:
        assert not os.readlink(f"/proc/self/fd/{opened.fds['kernel']}").startswith("/memfd:")
    finally:
        opened.close()
