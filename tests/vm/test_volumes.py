"""Host directories shared into a real box (virtio-9p): both ways for rw, never writable for ro, no way out."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("volumes")
    dirs = {name: base / name for name in ("rw", "ro", "ro2")}
    for d in dirs.values():
        d.mkdir()
    (dirs["ro"] / "given.txt").write_text("read me\n")
    (dirs["ro2"] / "given.txt").write_text("read me\n")
    # Outside both shares: what an escape would reveal.
    (base / "secret.txt").write_text("host-secret-outside-the-share\n")
    (dirs["rw"] / "escape-abs").symlink_to(base / "secret.txt")
    (dirs["rw"] / "escape-rel").symlink_to("../secret.txt")
    dirs["base"] = base
    return dirs


@pytest.fixture(scope="module")
async def vbox(runtime: boxlite.Boxlite, shared: dict[str, Path]) -> AsyncIterator[boxlite.SimpleBox]:
    # The read-only ones in upstream's two spellings: a dict's read_only (once silently dropped) and a tuple's bool.
    # The "ro" string form is tested through the CLI (test_cli_flags_vm.py).
    volumes = [(str(shared["rw"]), "/mnt/rw", "rw"),
               {"host_path": str(shared["ro"]), "guest_path": "/mnt/ro", "read_only": True},
               (str(shared["ro2"]), "/mnt/ro2", True)]
    async with boxlite.SimpleBox(runtime=runtime, volumes=volumes, network="disabled") as box:
        yield box


async def test_guest_writes_are_seen_by_the_host(vbox: boxlite.SimpleBox, shared: dict[str, Path]) -> None:
    await vbox.exec("sh", "-c", "mkdir -p /mnt/rw/sub && echo from-guest > /mnt/rw/sub/g.txt", check=True)
    assert (shared["rw"] / "sub" / "g.txt").read_text() == "from-guest\n"


async def test_host_writes_are_seen_by_the_guest(vbox: boxlite.SimpleBox, shared: dict[str, Path]) -> None:
    (shared["rw"] / "h.txt").write_text("from-host-1\n")
    assert (await vbox.exec("cat", "/mnt/rw/h.txt", check=True)).stdout == "from-host-1\n"
    (shared["rw"] / "h.txt").write_text("from-host-2, changed\n")
    assert (await vbox.exec("cat", "/mnt/rw/h.txt", check=True)).stdout == "from-host-2, changed\n"
    assert (await vbox.exec("cat", "/mnt/ro/given.txt", check=True)).stdout == "read me\n"


@pytest.mark.parametrize("name", ["ro", "ro2"])
async def test_read_only_volume_refuses_writes(vbox: boxlite.SimpleBox, shared: dict[str, Path], name: str) -> None:
    mnt = f"/mnt/{name}"
    r = await vbox.exec("sh", "-c", f"echo x > {mnt}/new.txt")
    assert r.exit_code != 0 and "Read-only file system" in r.stderr
    r = await vbox.exec("sh", "-c", f"echo x >> {mnt}/given.txt")
    assert r.exit_code != 0
    # Root in the box remounting it read-write gains nothing: QEMU itself refuses the writes.
    remount = await vbox.exec("mount", "-o", "remount,rw", mnt)
    assert remount.exit_code == 0, remount.stderr
    r = await vbox.exec("sh", "-c", f"echo x > {mnt}/new.txt; rm -f {mnt}/given.txt; mkdir {mnt}/d")
    assert r.exit_code != 0
    assert sorted(os.listdir(shared[name])) == ["given.txt"]
    assert (shared[name] / "given.txt").read_text() == "read me\n"


async def test_symlinks_and_dotdot_do_not_leave_the_share(vbox: boxlite.SimpleBox, shared: dict[str, Path]) -> None:
    secret = "host-secret-outside-the-share"
    # Links made on the host are resolved in the box's own namespace, never on the host.
    for link in ("escape-abs", "escape-rel"):
        r = await vbox.exec("cat", f"/mnt/rw/{link}")
        assert secret not in r.stdout
    # `..` from the share's root is the box's /mnt, not the host directory above the share.
    r = await vbox.exec("sh", "-c", "ls -a /mnt/rw/.. /mnt/rw/../..; cat /mnt/rw/../secret.txt")
    assert secret not in r.stdout and "secret.txt" not in r.stdout
    # A link the box makes is stored as a link: the host sees a link, the box reads its own root through it.
    await vbox.exec("ln", "-s", "/etc/hostname", "/mnt/rw/guest-link", check=True)
    assert os.readlink(shared["rw"] / "guest-link") == "/etc/hostname"
    r = await vbox.exec("sh", "-c", f"ln -s {shared['base']}/secret.txt /mnt/rw/l2; cat /mnt/rw/l2")
    assert secret not in r.stdout

