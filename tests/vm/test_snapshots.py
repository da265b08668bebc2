"""Snapshots, templates and clones, on real VMs."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

import boxlite

pytestmark = [pytest.mark.vm, pytest.mark.slow]

PROBE = ("import os, uuid, socket, random, time; "
         "print(os.urandom(16).hex(), uuid.uuid4(), socket.gethostname(), "
         "open('/etc/machine-id').read().strip(), open('/dev/urandom','rb').read(16).hex(), "
         "random.getrandbits(64), int(time.time()))")


async def _probe(box: boxlite.Box) -> list[str]:
    out, err, status = await (await box.exec("python3", ["-c", PROBE])).collect()
    assert status.exit_code == 0, err
    return out.decode().split()


async def _run(box: boxlite.Box, *argv: str) -> str:
    out, err, status = await (await box.exec(argv[0], list(argv[1:]))).collect()
    assert status.exit_code == 0, err
    return out.decode()


@pytest.fixture(scope="module")
async def snapshot_source(runtime: boxlite.Boxlite) -> object:
    """A running box with a file written to its disk, and a snapshot of it."""
    box = await runtime.create(boxlite.BoxOptions(memory_mib=256, auto_remove=False))
    marker = uuid.uuid4().hex
    await _run(box, "sh", "-c", f"echo {marker} > /root/marker && sync")
    name = f"snap-{marker[:8]}"
    info = await box.snapshot(name)
    yield box, name, marker, info
    await runtime.remove(box.id, force=True)
    if name in {s.name for s in runtime.snapshots.list()}:
        runtime.snapshots.remove(name)


@pytest.mark.anyio
async def test_snapshot_keeps_running_box_and_restores_its_disk(runtime: boxlite.Boxlite,
                                                                snapshot_source: tuple) -> None:
    box, name, marker, info = snapshot_source
    assert info.name == name and info.kind == "snapshot" and info.state_bytes > 0
    assert name in [s.name for s in runtime.snapshots.list()]
    # The source runs on after its snapshot, with its clock set right again.
    assert (await _run(box, "cat", "/root/marker")).strip() == marker
    clone = await runtime.create(boxlite.BoxOptions(snapshot=name))
    try:
        assert clone.info().boot == "restored"
        assert clone.info().memory_mib == 256
        assert (await _run(clone, "cat", "/root/marker")).strip() == marker
        # Each clone's disk is its own: what one writes, the source does not see.
        await _run(clone, "sh", "-c", "echo clone > /root/clone-only")
        _, _, status = await (await box.exec("cat", ["/root/clone-only"])).collect()
        assert status.exit_code != 0
        m = await clone.metrics()
        assert m.boot == "restored" and m.guest_boot_ms is not None and m.guest_boot_ms > 0
        assert m.total_create_ms is not None and m.total_create_ms > 0
    finally:
        await runtime.remove(clone.id, force=True)


@pytest.mark.anyio
async def test_clones_are_not_twins(runtime: boxlite.Boxlite, snapshot_source: tuple) -> None:
    _, name, _, _ = snapshot_source
    clones = [await runtime.create(boxlite.BoxOptions(snapshot=name)) for _ in range(2)]
    try:
        a, b = [await _probe(c) for c in clones]
        labels = ["os.urandom", "uuid4", "hostname", "machine-id", "/dev/urandom", "random"]
        for label, x, y in zip(labels, a, b, strict=False):
            assert x != y, f"two clones of one snapshot share {label}: {x}"
        assert a[2] == clones[0].id[:12] and b[2] == clones[1].id[:12]
        for probe in (a, b):  # the guest clock was set from the host's after the restore
            assert abs(int(probe[6]) - time.time()) < 30
    finally:
        for c in clones:
            await runtime.remove(c.id, force=True)


@pytest.mark.anyio
async def test_snapshot_errors(runtime: boxlite.Boxlite, snapshot_source: tuple) -> None:
    box, name, _, _ = snapshot_source
    with pytest.raises(boxlite.AlreadyExistsError):
        await box.snapshot(name)
    with pytest.raises(boxlite.NotFoundError):
        await runtime.create(boxlite.BoxOptions(snapshot="no-such-snapshot"))
    with pytest.raises(boxlite.ConfigError):
        await runtime.create(boxlite.BoxOptions(snapshot=name, memory_mib=512))
    assert not [i for i in await runtime.list_info() if i.status == "configured"]


@pytest.mark.anyio
async def test_removing_a_snapshot_leaves_its_clones_working(runtime: boxlite.Boxlite) -> None:
    src = await runtime.create(boxlite.BoxOptions(memory_mib=256))
    try:
        await src.snapshot("short-lived")
    finally:
        await runtime.remove(src.id, force=True)
    clone = await runtime.create(boxlite.BoxOptions(snapshot="short-lived"))
    try:
        runtime.snapshots.remove("short-lived")
        assert "short-lived" not in [s.name for s in runtime.snapshots.list()]
        assert (await _run(clone, "echo", "alive")).strip() == "alive"
    finally:
        await runtime.remove(clone.id, force=True)
    with pytest.raises(boxlite.NotFoundError):
        runtime.snapshots.remove("short-lived")


@pytest.mark.anyio
async def test_templates_are_used_and_stale_ones_rebuilt(runtime: boxlite.Boxlite) -> None:
    opts = boxlite.BoxOptions(memory_mib=384)  # a size no other test uses: this test owns its template
    first = await runtime.create(opts)
    await runtime.remove(first.id, force=True)
    templates = [t for t in runtime.snapshots.templates() if t.memory_mib == 384]
    assert len(templates) == 1
    template = templates[0]
    second = await runtime.create(opts)
    try:
        assert second.info().boot == "restored"
        m = await second.metrics()
        assert m.boot == "restored"
    finally:
        await runtime.remove(second.id, force=True)

    # The agent (guest root) this template was made with is replaced: it must never be restored again.
    meta = template.dir / "meta.json"
    data = json.loads(meta.read_text())
    data["guest_root"] = str(template.dir / "guest-root-replaced.ext4")
    meta.write_text(json.dumps(data))
    third = await runtime.create(opts)
    try:
        assert third.info().boot == "cold"
        fresh = [t for t in runtime.snapshots.templates() if t.memory_mib == 384]
        assert len(fresh) == 1 and fresh[0].created_at > template.created_at
        assert os.path.exists(fresh[0].guest_root)
    finally:
        await runtime.remove(third.id, force=True)

    # A template of an older image (or kernel, or QEMU) for the same name and resources has another key: it is
    # never restored, and the new template replaces it.
    current = fresh[0]
    old_dir = current.dir.parent / "0ldimage0key0000"
    shutil.copytree(current.dir, old_dir)
    data = json.loads((old_dir / "meta.json").read_text())
    data.update(key="0ldimage0key0000", name="0ldimage0key0000", path=str(old_dir), image_digest="sha256:old")
    (old_dir / "meta.json").write_text(json.dumps(data))
    shutil.rmtree(current.dir)
    fourth = await runtime.create(opts)
    try:
        assert fourth.info().boot == "cold"
        assert [t.key for t in runtime.snapshots.templates() if t.memory_mib == 384] == [current.key]
    finally:
        await runtime.remove(fourth.id, force=True)


@pytest.mark.anyio
async def test_runtime_without_templates_boots_cold(vm_home: object) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=vm_home, templates=False))  # type: ignore[arg-type]
    box = await rt.create(boxlite.BoxOptions(memory_mib=256))
    try:
        assert box.info().boot == "cold"
    finally:
        await rt.remove(box.id, force=True)
        await rt.close()


@pytest.mark.anyio
async def test_a_template_that_does_not_restore_is_replaced_by_a_cold_boot(runtime: boxlite.Boxlite) -> None:
    opts = boxlite.BoxOptions(memory_mib=320)  # a size no other test uses
    first = await runtime.create(opts)
    await runtime.remove(first.id, force=True)
    [template] = [t for t in runtime.snapshots.templates() if t.memory_mib == 320]
    state = template.dir / "state"
    state.chmod(0o600)
    with open(state, "r+b") as f:  # a damaged migration stream: QEMU refuses to load it
        f.truncate(4096)
    box = await runtime.create(opts)
    try:
        assert box.info().boot == "cold"
        assert (await _run(box, "echo", "ok")).strip() == "ok"
        [fresh] = [t for t in runtime.snapshots.templates() if t.memory_mib == 320]
        assert fresh.created_at > template.created_at and fresh.state_bytes > 4096
    finally:
        await runtime.remove(box.id, force=True)


@pytest.mark.anyio
async def test_a_restored_box_restarts_from_its_own_disk(runtime: boxlite.Boxlite, snapshot_source: tuple) -> None:
    _, name, marker, _ = snapshot_source
    clone = await runtime.create(boxlite.BoxOptions(snapshot=name, auto_remove=False))
    try:
        await _run(clone, "sh", "-c", "echo kept > /root/after-restore && sync")
        await clone.stop()
        await clone.start()
        assert clone.info().boot == "cold"
        out = await _run(clone, "cat", "/root/marker", "/root/after-restore")
        assert out.split() == [marker, "kept"]
    finally:
        await runtime.remove(clone.id, force=True)


@pytest.mark.anyio
async def test_warmup_runs_once_and_clones_start_warm(runtime: boxlite.Boxlite) -> None:
    """The generic hook CodeBox uses: work done in the first box before its template is taken (here, starting
    a long-lived process, as CodeBox starts its in-box kernel) is already done in every restored box."""
    from boxlite._snapshots import Warmup

    calls: list[str] = []

    async def warm(box: boxlite.Box) -> None:
        calls.append(box.id)
        await _run(box, "sh", "-c", "setsid python3 -c 'import time; time.sleep(10**6)' warm-kernel "
                                    "</dev/null >/dev/null 2>&1 & echo started > /root/warmed")

    hook = Warmup(tag="test-warm", run=warm)
    opts = boxlite.BoxOptions(memory_mib=256)
    first = await runtime.create(opts, warmup=hook)
    second = await runtime.create(opts, warmup=hook)
    try:
        assert calls == [first.id]
        assert first.info().boot == "cold" and second.info().boot == "restored"
        for box in (first, second):
            assert (await _run(box, "cat", "/root/warmed")).strip() == "started"
            # (the bracket keeps grep from matching its own command line)
            alive = await _run(box, "sh", "-c", "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
                                                " | grep -c 'warm-kerne[l]'")
            assert int(alive.strip()) >= 1
        assert [t.tag for t in runtime.snapshots.templates() if t.tag == "test-warm"] == ["test-warm"]
    finally:
        for box in (first, second):
            await runtime.remove(box.id, force=True)


def _processes_under(path: Path) -> set[int]:
    """Processes whose command line names something under `path` (every shim, QEMU and helper of a box does)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline:
                found.add(int(entry))
    return found


async def _footprint(runtime: boxlite.Boxlite) -> tuple[set[str], list[str], set[int]]:
    """What a box start leaves: records, directories under boxes/, processes."""
    boxes = runtime.home / "boxes"
    return ({b.id for b in await runtime.list_info()}, sorted(os.listdir(boxes)) if boxes.exists() else [],
            _processes_under(runtime.home))


@pytest.mark.anyio
async def test_options_the_snapshots_machine_cannot_have_fail_before_anything_starts(
        runtime: boxlite.Boxlite, snapshot_source: tuple, tmp_path: Path) -> None:
    """Ports used to be accepted and never connect; another network made QEMU fail after it had started."""
    _, name, _, _ = snapshot_source
    before = await _footprint(runtime)
    refused: list[tuple[boxlite.BoxOptions, str]] = [
        (boxlite.BoxOptions(snapshot=name, ports=[(0, 8000)]), "cannot publish ports"),
        (boxlite.BoxOptions(snapshot=name, network="disabled"), "cannot have network 'disabled'"),
        (boxlite.BoxOptions(snapshot=name, network={"allow_net": ["example.org:443"]}), "allow_net"),
        (boxlite.BoxOptions(snapshot=name, volumes=[(str(tmp_path), "/data", True)]), "cannot have volumes"),
        (boxlite.BoxOptions(snapshot=name, disk_size_gb=64), "cannot have disk_size_gb=64"),
    ]
    for opts, message in refused:
        with pytest.raises(boxlite.ConfigError, match=message) as caught:
            await runtime.create(opts)
        assert f"snapshot {name}" in str(caught.value) and caught.value.fix
        assert await _footprint(runtime) == before, message


@pytest.mark.anyio
async def test_a_snapshot_of_a_box_without_a_network_restores_without_one(runtime: boxlite.Boxlite) -> None:
    """The restored box takes the snapshot's network when none is asked for. It used to get the default: a NAT
    device the restored guest never probed, and a passt process serving nobody."""
    src = await runtime.create(boxlite.BoxOptions(memory_mib=256, network="disabled"))
    try:
        await src.snapshot("no-network")
    finally:
        await runtime.remove(src.id, force=True)
    try:
        clone = await runtime.create(boxlite.BoxOptions(snapshot="no-network", env={"GREETING": "hi"}))
        try:
            assert clone.info().boot == "restored"
            out = await _run(clone, "sh", "-c", "ls /sys/class/net; echo $GREETING")
            assert out.split() == ["lo", "sit0", "hi"]
            launch = json.loads((clone.box_dir / "launch.json").read_text())
            assert launch["net"]["passt_argv"] is None and "-netdev" not in launch["qemu_argv"]
        finally:
            await runtime.remove(clone.id, force=True)
    finally:
        runtime.snapshots.remove("no-network")
