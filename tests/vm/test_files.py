"""Copying files and directories into and out of a real box (copy_in / copy_out), on the shared booted box.

Every test works in its own directory in the box, so the tests do not see each other's files.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.anyio]

MTIME = 1_600_000_000


@pytest.fixture
async def workdir(box: boxlite.SimpleBox) -> AsyncIterator[str]:
    """A fresh, empty directory in the box."""
    path = f"/tmp/files-{uuid.uuid4().hex[:8]}"
    await box.exec("mkdir", "-p", path, check=True)
    yield path
    await box.exec("rm", "-rf", path)


async def box_stat(box: boxlite.SimpleBox, path: str) -> tuple[str, str, int, str]:
    """(type, octal mode, mtime, owner) of `path` in the box, from stat(1) (links not followed)."""
    r = await box.exec("stat", "-c", "%F|%a|%Y|%U:%G", path, check=True)
    kind, mode, mtime, owner = r.stdout.strip().split("|")
    return kind, mode, int(mtime), owner


def tree_snapshot(root: Path) -> dict[str, tuple[str, int, object]]:
    """Relative path -> (kind, permission bits, content or link target) for everything under `root`."""
    out: dict[str, tuple[str, int, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", 0, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", stat.S_IMODE(p.lstat().st_mode), int(p.lstat().st_mtime))
            else:
                out[rel] = ("file", stat.S_IMODE(p.lstat().st_mode), (p.read_bytes(), int(p.lstat().st_mtime)))
    return out


# -- files ------------------------------------------------------------------------------------------------------
async def test_file_in_and_out_keeps_content_mode_and_mtime(box: boxlite.SimpleBox, workdir: str,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "script.sh"
    src.write_text("#!/bin/sh\necho 'hello from the host'\n")
    src.chmod(0o750)
    os.utime(src, (MTIME, MTIME))
    await box.copy_in(src, workdir)

    assert await box_stat(box, f"{workdir}/script.sh") == ("regular file", "750", MTIME, "root:root")
    r = await box.exec(f"{workdir}/script.sh")
    assert (r.exit_code, r.stdout) == (0, "hello from the host\n")

    out = tmp_path / "out"
    out.mkdir()
    await box.copy_out(f"{workdir}/script.sh", out)
    back = out / "script.sh"
    assert back.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(back.stat().st_mode) == 0o750
    assert int(back.stat().st_mtime) == MTIME
    assert back.stat().st_uid == os.getuid()


async def test_copy_in_then_cat(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_text("line one\nline two: ünïcödé\n")
    await box.copy_in(str(src), f"{workdir}/renamed.txt")
    r = await box.exec("cat", f"{workdir}/renamed.txt")
    assert r.stdout == "line one\nline two: ünïcödé\n"


# -- directories --------------------------------------------------------------------------------------------------
async def test_directory_tree_round_trips(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    src = tmp_path / "project"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "README").write_text("read me\n")
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "sub" / "data.bin").write_bytes(os.urandom(200_000))
    (src / "pkg" / "tool").write_text("#!/bin/sh\n")
    (src / "pkg" / "tool").chmod(0o755)
    (src / "data-link").symlink_to("pkg/sub/data.bin")
    for p in [src / "README", src / "pkg" / "sub", src / "empty"]:
        os.utime(p, (MTIME, MTIME))
    (src / "pkg").chmod(0o750)

    await box.copy_in(src, workdir)
    r = await box.exec("sh", "-c", f"cd {workdir}/project && find . | sort && readlink data-link && "
                       "sha256sum pkg/sub/data.bin", check=True)
    lines = r.stdout.splitlines()
    assert lines[:9] == [".", "./README", "./data-link", "./empty", "./pkg", "./pkg/__init__.py", "./pkg/sub",
                         "./pkg/sub/data.bin", "./pkg/tool"]
    assert lines[9] == "pkg/sub/data.bin"
    assert lines[10].split()[0] == hashlib.sha256((src / "pkg" / "sub" / "data.bin").read_bytes()).hexdigest()
    assert (await box_stat(box, f"{workdir}/project/empty"))[:3] == ("directory", "755", MTIME)
    assert (await box_stat(box, f"{workdir}/project/pkg"))[1] == "750"
    assert (await box_stat(box, f"{workdir}/project/data-link"))[0] == "symbolic link"

    out = tmp_path / "out"
    out.mkdir()
    await box.copy_out(f"{workdir}/project", out)
    assert tree_snapshot(out / "project") == tree_snapshot(src)


async def test_into_existing_directory_vs_new_name(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("x")
    await box.exec("mkdir", f"{workdir}/existing", check=True)
    await box.copy_in(src, f"{workdir}/existing")   # an existing directory: goes inside, under its own name
    await box.copy_in(src, f"{workdir}/fresh")      # no such path: becomes that name
    await box.copy_in(src / "f", f"{workdir}/file-copy")
    r = await box.exec("sh", "-c", f"cd {workdir} && find . -type f | sort", check=True)
    assert r.stdout.split() == ["./existing/d/f", "./file-copy", "./fresh/f"]

    out = tmp_path / "out"
    out.mkdir()
    await box.copy_out(f"{workdir}/fresh", out)                  # into an existing host directory
    await box.copy_out(f"{workdir}/fresh", out / "named")        # as a new name
    await box.copy_out(f"{workdir}/file-copy", out / "f.txt")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "f.txt", "fresh", "fresh/f", "named", "named/f"]


async def test_follow_symlinks_for_the_source(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    (tmp_path / "target.txt").write_text("pointed at")
    (tmp_path / "link").symlink_to("target.txt")
    await box.copy_in(tmp_path / "link", f"{workdir}/as-link")
    await box.copy_in(tmp_path / "link", f"{workdir}/as-file", follow_symlinks=True)
    assert (await box_stat(box, f"{workdir}/as-link"))[0] == "symbolic link"
    assert (await box.exec("cat", f"{workdir}/as-file")).stdout == "pointed at"
    assert (await box_stat(box, f"{workdir}/as-file"))[0] == "regular file"

    await box.exec("sh", "-c", f"echo in-box > {workdir}/t && ln -s t {workdir}/l", check=True)
    await box.copy_out(f"{workdir}/l", tmp_path / "out-link")
    await box.copy_out(f"{workdir}/l", tmp_path / "out-file", follow_symlinks=True)
    assert os.readlink(tmp_path / "out-link") == "t"
    assert (tmp_path / "out-file").read_text() == "in-box\n" and not (tmp_path / "out-file").is_symlink()


# -- refusals and errors ---------------------------------------------------------------------------------------------
async def test_overwrite_false_refuses_to_replace(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    src = tmp_path / "conf"
    src.write_text("new")
    await box.exec("sh", "-c", f"echo old > {workdir}/conf", check=True)
    with pytest.raises(boxlite.AlreadyExistsError) as info:
        await box.copy_in(src, workdir, overwrite=False)
    assert f"{workdir}/conf" in str(info.value) and "overwrite" in str(info.value)
    assert (await box.exec("cat", f"{workdir}/conf")).stdout == "old\n"
    await box.copy_in(src, workdir)  # overwrite=True is the default
    assert (await box.exec("cat", f"{workdir}/conf")).stdout == "new"

    (tmp_path / "host-conf").write_text("host")
    with pytest.raises(boxlite.AlreadyExistsError) as info:
        await box.copy_out(f"{workdir}/conf", tmp_path / "host-conf", overwrite=False)
    assert str(tmp_path / "host-conf") in str(info.value)
    assert (tmp_path / "host-conf").read_text() == "host"


async def test_missing_source_in_the_box_is_not_found(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    with pytest.raises(boxlite.NotFoundError) as info:
        await box.copy_out(f"{workdir}/no-such-file", tmp_path)
    message = str(info.value)
    assert f"{workdir}/no-such-file" in message and "fix:" in message
    assert not (tmp_path / "no-such-file").exists()


async def test_bad_destinations_are_clear_errors(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    with pytest.raises(boxlite.NotFoundError, match="does not exist"):
        await box.copy_in(tmp_path / "f", f"{workdir}/missing/parent/f")
    with pytest.raises(boxlite.NotFoundError, match="host path not found"):
        await box.copy_in(tmp_path / "nope", workdir)
    await box.copy_in(tmp_path / "f", f"{workdir}/f")
    with pytest.raises(boxlite.ExecutionError, match="cannot overwrite non-directory"):
        await box.copy_in(tmp_path / "d", f"{workdir}/f")
    with pytest.raises(boxlite.NotFoundError, match="host directory not found"):
        await box.copy_out(f"{workdir}/f", tmp_path / "missing" / "f")


async def test_links_leading_out_are_refused(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    await box.exec("sh", "-c", f"mkdir {workdir}/d && ln -s /etc/passwd {workdir}/d/pw", check=True)
    with pytest.raises(boxlite.ExecutionError, match="d/pw"):
        await box.copy_out(f"{workdir}/d", tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "up").symlink_to("../../..")
    with pytest.raises(boxlite.ExecutionError, match="symbolic link"):
        await box.copy_in(src, workdir)


async def test_refusal_of_a_large_upload_comes_early(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30 * 1024 * 1024))
    t0 = time.monotonic()
    with pytest.raises(boxlite.NotFoundError):
        await box.copy_in(big, f"{workdir}/missing/big.bin")
    assert time.monotonic() - t0 < 1.0  # refused up front, not after sending 30 MiB


async def test_cancelled_copy_leaves_no_partial_file(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30 * 1024 * 1024))
    with pytest.raises(builtins.TimeoutError), anyio.fail_after(0.3):
        await box.copy_in(big, workdir)
    await anyio.sleep(0.5)  # the agent notices the cancellation
    assert (await box.exec("ls", "-A", workdir)).stdout == ""

    await box.copy_in(big, workdir)
    with pytest.raises(builtins.TimeoutError), anyio.fail_after(0.2):
        await box.copy_out(f"{workdir}/big.bin", tmp_path / "back.bin")
    assert not (tmp_path / "back.bin").exists()


# -- size, speed and metrics ---------------------------------------------------------------------------------------
async def test_20mb_round_trip(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(size))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    before = await box.metrics()

    t0 = time.monotonic()
    await box.copy_in(src, workdir)
    t_in = time.monotonic() - t0
    r = await box.exec("sha256sum", f"{workdir}/big.bin", check=True)
    assert r.stdout.split()[0] == digest

    t0 = time.monotonic()
    await box.copy_out(f"{workdir}/big.bin", tmp_path / "back.bin")
    t_out = time.monotonic() - t0
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest

    after = await box.metrics()
    assert after.bytes_sent_total - before.bytes_sent_total >= size
    assert after.bytes_received_total - before.bytes_received_total >= size
    mb = size / 1e6
    print(f"\n20 MiB: in {t_in:.2f} s ({mb / t_in:.1f} MB/s), out {t_out:.2f} s ({mb / t_out:.1f} MB/s)")
    assert t_in < 60 and t_out < 60


async def test_box_low_level_api(box: boxlite.SimpleBox, workdir: str, tmp_path: Path) -> None:
    """Box (not only SimpleBox) has the same two methods."""
    low: boxlite.Box = box.box
    (tmp_path / "x").write_text("low level")
    await low.copy_in(str(tmp_path / "x"), workdir)
    await low.copy_out(f"{workdir}/x", str(tmp_path / "y"))
    assert (tmp_path / "y").read_text() == "low level"
