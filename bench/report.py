"""Make bench/RESULTS.md's tables from the raw results under bench/results/ (never by hand).

    python3 bench/report.py [--check]

For each bench script, the latest results file (`<time>-<script>.json`, written by the script; see
bench/record.py) becomes a table between the markers
    <!-- BEGIN GENERATED <script> ... -->  ...  <!-- END GENERATED <script> -->
in RESULTS.md; a script without markers yet gets a new section at the end. Everything outside the markers is
narrative, kept as written. --check: exit 1 (changing nothing) when RESULTS.md is not what the results make.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import RESULTS_DIR, parse_result_name

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
# Section titles, in the order new sections are added.
TITLES = {
    "run": "The suite (bench/run.py)",
    "codebox": "CodeBox (bench/bench_codebox.py)",
    "jupyter": "The BoxLite Python Jupyter kernel against a local ipykernel (bench/bench_jupyter.py)",
    "core": "Core timings against a bare QEMU boot (bench/bench_core.py)",
    "network": "Moving data in and out, and starts by network shape (bench/bench_network.py)",
    "images": "Image pulls against skopeo + umoci + mke2fs (bench/bench_images.py)",
}


def latest_results(results_dir: Path) -> dict[str, Path]:
    """{script: its newest results file} (newest by the start time in the name)."""
    found: dict[str, tuple[Any, Path]] = {}
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        parsed = parse_result_name(path.name)
        if parsed is None:
            continue
        started, script = parsed
        if script not in found or started > found[script][0]:
            found[script] = (started, path)
    return {script: path for script, (_, path) in found.items()}


def _num(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _value(r: dict[str, Any]) -> str:
    unit = r["unit"]
    if r.get("n", 1) == 1:
        return f"{_num(r['median'])} {unit}"
    return f"{_num(r['median'])} {unit} [{_num(r['min'])}, {_num(r['max'])}]"


def _floor(r: dict[str, Any]) -> str:
    floor = r.get("floor")
    if not floor:
        return "-"
    return f"{r.get('floor_name', 'floor')}: {_num(floor['median'])} {r.get('floor_unit', r['unit'])}"


def _goal(r: dict[str, Any]) -> str:
    if "goal" not in r:
        return "-"
    return f"{r['goal']}: {'met' if r.get('met') else '**not met**'}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The rows of one results document as a markdown table (median [min, max], n, floor, goal, note)."""
    lines = ["| row | what it measures | median [min, max] | n | floor (median, same run) | goal | note |",
             "|---|---|---|---|---|---|---|"]
    for name, r in doc["rows"].items():
        if r.get("available") is False:
            lines.append(f"| {name} | {r['label']} | - | 0 | - | - | not measured: {r.get('note', '')} |")
            continue
        lines.append(f"| {name} | {r['label']} | {_value(r)} | {r['n']} | {_floor(r)} | {_goal(r)} | "
                     f"{r.get('note', '')} |")
    return "\n".join(lines)


def describe(doc: dict[str, Any], source: str) -> str:
    """The line above a table: how, when and where it was measured, and from which file."""
    host = doc.get("host", {})
    when = doc["started_utc"].replace("T", " ")[:16]
    bits = [f"`{doc['command']}`", f"started {when} UTC", f"took {doc['duration_s']:.0f} s"]
    if host.get("commit"):
        bits.append(f"commit {host['commit']}")
    if host.get("accel"):
        bits.append(str(host["accel"]))
    bits.append(f"{host.get('cpus')} host cpus")
    bits.append(f"load average {host.get('load_avg_start')} at start, {host.get('load_avg_end')} at end")
    return "; ".join(bits) + f". Raw results: `bench/results/{source}`."


def generated_block(script: str, doc: dict[str, Any], source: str) -> str:
    return "\n".join([f"<!-- BEGIN GENERATED {script}: bench/report.py writes this from bench/results/{source}; "
                      "do not edit by hand -->", describe(doc, source), "", markdown_table(doc),
                      f"<!-- END GENERATED {script} -->"])


def splice(text: str, script: str, block: str) -> str:
    """`text` with the generated block of `script` replaced by `block` (or appended in a new section)."""
    pattern = re.compile(rf"<!-- BEGIN GENERATED {re.escape(script)}[:\s].*?<!-- END GENERATED {re.escape(script)} -->",
                         re.DOTALL)
    found = len(pattern.findall(text))
    if found > 1:
        raise ValueError(f"{found} generated sections for {script}: keep one pair of its markers")
    if found:
        return pattern.sub(lambda _: block, text)
    title = TITLES.get(script, f"bench/{script}")
    return text.rstrip("\n") + f"\n\n## {title}\n\n{block}\n"


def render(text: str, results_dir: Path) -> str:
    """RESULTS.md's text with every script's tables made from its latest results."""
    latest = latest_results(results_dir)
    for script in sorted(latest, key=lambda s: list(TITLES).index(s) if s in TITLES else len(TITLES)):
        path = latest[script]
        text = splice(text, script, generated_block(script, json.loads(path.read_text()), path.name))
    return text


def text_table(doc: dict[str, Any]) -> str:
    """The rows as a plain-text table for the terminal."""
    host = doc.get("host", {})
    lines = [f"boxlite bench {doc['script']} ({host.get('accel', '?')}, {host.get('cpus')} host cpus, load avg "
             f"{host.get('load_avg_start')} -> {host.get('load_avg_end')}; a shared machine makes numbers noisy)",
             f"{'row':<22} {'median':>9} {'min':>9} {'max':>9} {'unit':<8} {'floor':>9}  floor / goal / note"]
    for name, r in doc["rows"].items():
        if r.get("available") is False:
            lines.append(f"{name:<22} {'-':>9} {'-':>9} {'-':>9} {r['unit']:<8} {'':>9}  {r.get('note', '')}")
            continue
        floor = r.get("floor", {}).get("median", "")
        notes = "; ".join(x for x in (r.get("floor_name", ""), _goal(r) if "goal" in r else "", r.get("note", ""))
                          if x)
        lines.append(f"{name:<22} {r['median']:>9} {r['min']:>9} {r['max']:>9} {r['unit']:<8} {floor:>9}  {notes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that RESULTS.md is up to date")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_MD, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    old = args.out.read_text() if args.out.exists() else "# Benchmark results\n"
    new = render(old, args.results)
    if args.check:
        if new != old:
            print(f"{args.out} is not what bench/results/ makes: run python3 bench/report.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(new)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
