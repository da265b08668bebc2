"""bench/report.py: RESULTS.md's tables come from the raw results under bench/results/, never by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report

SAMPLE: dict[str, Any] = {
    "script": "run", "command": "python3 bench/run.py --runs 2", "started_utc": "2026-12-07T14:00:00+00:00",
    "duration_s": 321.4, "args": {"runs": 2},
    "host": {"cpus": 2, "accel": "tcg", "load_avg_start": 1.5, "load_avg_end": 3.25, "commit": "abc1234"},
    "rows": {
        "cold_start": {"label": "cold start: create() with templates off -> first exec", "unit": "ms",
                       "median": 3520.71, "min": 3265.1, "max": 3568.1, "n": 2, "samples": [3265.1, 3568.1],
                       "floor": {"median": 1391.5, "min": 1300.0, "max": 1400.0, "n": 2},
                       "floor_name": "bare QEMU boot"},
        "template_start": {"label": "start from template", "unit": "ms", "median": 542.1, "min": 505.3,
                           "max": 556.9, "n": 2, "samples": [505.3, 556.9], "goal": "< 250 ms", "met": False,
                           "note": "6.5x faster than cold"},
        "idle_box_rss": {"label": "idle RSS", "unit": "MiB", "median": 149.0, "min": 149.0, "max": 149.0, "n": 1,
                         "samples": [149.0], "goal": "< 150 MiB", "met": True},
        "exec_1000": {"label": "1000 execs", "unit": "execs/s", "median": 22.9, "min": 22.9, "max": 22.9, "n": 1,
                      "samples": [22.9], "floor": {"median": 258.2, "min": 258.2, "max": 258.2, "n": 1},
                      "floor_name": "Pings", "floor_unit": "Pings/s"},
        "warm_run_1plus1": {"label": "warm run", "unit": "ms", "available": False, "note": "no CodeBox"},
    },
}


def write_sample(results: Path, name: str, doc: dict[str, Any]) -> Path:
    results.mkdir(exist_ok=True)
    path = results / name
    path.write_text(json.dumps(doc))
    return path


def test_table_rows_come_from_the_json() -> None:
    table = report.markdown_table(SAMPLE)
    lines = table.splitlines()
    assert lines[0].startswith("| row | what it measures | median [min, max] |")
    assert ("| cold_start | cold start: create() with templates off -> first exec | 3,520.7 ms [3,265.1, 3,568.1] "
            "| 2 | bare QEMU boot: 1,391.5 ms | - |  |") in lines
    assert "| template_start | start from template | 542.1 ms [505.3, 556.9] | 2 | - | < 250 ms: **not met** | " \
           "6.5x faster than cold |" in lines
    assert "| idle_box_rss | idle RSS | 149.0 MiB | 1 | - | < 150 MiB: met |  |" in lines  # one sample: no range
    assert "| exec_1000 | 1000 execs | 22.9 execs/s | 1 | Pings: 258.2 Pings/s | - |  |" in lines
    assert "| warm_run_1plus1 | warm run | - | 0 | - | - | not measured: no CodeBox |" in lines
    assert len(lines) == 2 + len(SAMPLE["rows"])


def test_the_line_above_says_how_when_and_from_which_file() -> None:
    line = report.describe(SAMPLE, "20261207T140000Z-run.json")
    for part in ("`python3 bench/run.py --runs 2`", "2026-12-07 14:00 UTC", "took 321 s", "commit abc1234", "tcg",
                 "2 host cpus", "load average 1.5 at start, 3.25 at end", "bench/results/20261207T140000Z-run.json"):
        assert part in line


def test_only_the_latest_file_of_each_script_is_used(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_sample(results, "20261207T120000Z-run.json", {**SAMPLE, "rows": {}})
    newest = write_sample(results, "20261207T140000Z-run.json", SAMPLE)
    core = write_sample(results, "20261201T000000Z-core.json", {**SAMPLE, "script": "core"})
    (results / "notes.txt").write_text("not a result")
    assert report.latest_results(results) == {"run": newest, "core": core}


def test_generated_sections_are_replaced_and_the_narrative_kept(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_sample(results, "20261207T140000Z-run.json", SAMPLE)
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nNarrative before.\n\n<!-- BEGIN GENERATED run: old -->\n| stale | table |\n"
                  "<!-- END GENERATED run -->\n\nNarrative after.\n")
    assert report.main(["--results", str(results), "--out", str(md), "--check"]) == 1
    assert "| stale |" in md.read_text()  # --check changes nothing
    assert report.main(["--results", str(results), "--out", str(md)]) == 0
    text = md.read_text()
    assert "| stale |" not in text
    assert text.startswith("# Results\n\nNarrative before.\n\n<!-- BEGIN GENERATED run: bench/report.py writes")
    assert text.endswith("<!-- END GENERATED run -->\n\nNarrative after.\n")
    assert "| cold_start |" in text
    assert report.main(["--results", str(results), "--out", str(md), "--check"]) == 0
    # A second run is a fixed point.
    assert report.render(text, results) == text


def test_a_script_without_markers_gets_a_new_section(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_sample(results, "20261207T140000Z-core.json", {**SAMPLE, "script": "core"})
    text = report.render("# Results\n\nOnly narrative.\n", results)
    assert "\n## Core timings against a bare QEMU boot (bench/bench_core.py)\n\n<!-- BEGIN GENERATED core:" in text
    assert text.endswith("<!-- END GENERATED core -->\n")
    assert report.render(text, results) == text


def test_committed_results_md_is_what_the_committed_results_make() -> None:
    """Hand-edited tables (or results committed without regenerating) fail here."""
    bench = Path(report.__file__).resolve().parent
    md = bench / "RESULTS.md"
    assert report.latest_results(bench / "results"), "no raw results are committed under bench/results/"
    assert report.render(md.read_text(), bench / "results") == md.read_text(), \
        "bench/RESULTS.md is out of date: run python3 bench/report.py"


def test_two_sections_for_one_script_are_refused() -> None:
    section = "<!-- BEGIN GENERATED run: x -->\n<!-- END GENERATED run -->\n"
    with pytest.raises(ValueError, match="2 generated sections for run"):
        report.splice(section + section, "run", "new")
    # Another script's markers, even with a name that starts the same, are not this one's.
    other = "<!-- BEGIN GENERATED run_x: x -->\nold\n<!-- END GENERATED run_x -->\n"
    assert report.splice(other + section, "run", "new") == other + "new\n"
