"""`boxlite run --snapshot`: flags the snapshot's machine cannot have fail before any box exists; the rest runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.test_cli import box_ids, boxlite_cli, cli_home  # noqa: F401 - the fixture is shared

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def test_run_snapshot_refuses_flags_its_machine_cannot_have(cli_home: Path, tmp_path: Path) -> None:  # noqa: F811
    r = boxlite_cli(cli_home, "run", "-d", "--name", "snap-src", "--memory", "256")
    assert r.returncode == 0, r.stderr
    r = boxlite_cli(cli_home, "snapshot", "create", "snap-src", "cli-snap")
    assert r.returncode == 0, r.stderr
    assert boxlite_cli(cli_home, "rm", "-f", "snap-src").returncode == 0
    before = box_ids(cli_home)
    for flags, message in ((["-p", "80"], "cannot publish ports"),
                           (["--memory", "512"], "cannot have memory_mib=512"),
                           (["--network", "none"], "cannot have network 'disabled'"),
                           (["-v", f"{tmp_path}:/data:ro"], "cannot have volumes")):
        r = boxlite_cli(cli_home, "run", "--rm", "--snapshot", "cli-snap", *flags, "--", "echo", "started")
        assert r.returncode == 125 and b"started" not in r.stdout, (flags, r.stdout, r.stderr)
        assert message in r.stderr.decode() and "fix:" in r.stderr.decode(), r.stderr
        assert box_ids(cli_home) == before
    # What the snapshot is may be said again; the box starts from it.
    r = boxlite_cli(cli_home, "run", "--rm", "--snapshot", "cli-snap", "--memory", "256", "--", "echo", "started")
    assert (r.returncode, r.stdout) == (0, b"started\n"), r.stderr
    assert box_ids(cli_home) == before
