"""The incident step's timer on a grid, against a timer at every record's own due time: CPU, and what each says.

    python benchmarks/incident_grid.py [--dense-rate 240 480] [--grids 5 10] [--repeats 3] [--json F] [--markdown F]

A benchmark, not a timed test. For each ``--dense-rate`` (files per minute) it records the capacity benchmark's
dense hour (``benchmarks/capacity.py``: an hour at the daily peak, every file's ``analyse`` 8x slower for 20
minutes -- a pipeline-wide incident, the worst case for the one incident key; the watermark moving every second),
then replays the incident step's recorded inputs into ``_TrackFn`` once per grid per repeat, alternating: on each of
``--grids`` (seconds; ``GRID_US`` is what the job runs) and on a 1 us grid (a timer at every record's own due time:
the step before the grid, the baseline of the ratios). State is kept as the capacity benchmark's ``commit`` mode
keeps it (each write encoded with its cell's coder: what the SDK pays to commit). CPU by ``time.process_time`` (the
stand-in's own cost is not subtracted: the ratios are conservative); timer firings and buffer items read per run;
and the incident events each emitted, compared as sorted JSON lines -- they must be the same events, only said up to
a grid step later.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capacity import COMMIT, SCENARIOS, Stateful, record, simulated_input
from stagewatch.core.incidents import IncidentConfig
from stagewatch.core.records import dumps
from stagewatch.core.timeutil import US_PER_S
from stagewatch.stream.steps.incidents import GRID_US, _TrackFn

STEP = "Incidents/Track"


def _run(script: list[tuple[Any, ...]], hold_us: int, grid_us: int) -> tuple[float, list[bytes], dict[str, int]]:
    """CPU seconds, the incident events (JSON), and the step's work counts, for one replay of ``script``."""
    step = Stateful(_TrackFn(IncidentConfig(), None, hold_us, grid_us), COMMIT)
    said: list[bytes] = []
    t0 = time.process_time()
    for op in script:
        outs = step.advance(op[0]) if len(op) == 1 else step.process(*op)
        for out, _ in outs:
            said.append(dumps(out))
    cpu = time.process_time() - t0
    work = {"firings": step.calls["timer"], "items_read": step.read_items, "largest_read": step.max_read}
    return cpu, sorted(said), work


def measure(rate: float, grids_s: list[float], repeats: int, workdir: Path, seed: int) -> dict[str, Any]:
    path, manifest = simulated_input(workdir, "dense", seed, rate, SCENARIOS["dense"]["hours"])
    job = record(path, 1.0, 3600.0)
    script = job.stateful[STEP].script or []
    hold_us = job.interval // 2
    grids = {"every": 1, **{f"{g:g} s": int(g * US_PER_S) for g in grids_s}}
    cpu: dict[str, list[float]] = {name: [] for name in grids}
    said: dict[str, list[bytes]] = {}
    work: dict[str, dict[str, int]] = {}
    for _ in range(repeats):
        for name, grid in grids.items():
            seconds, events, counts = _run(script, hold_us, grid)
            cpu[name].append(seconds)
            said[name], work[name] = events, counts
    median = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "rate_files_per_min": rate, "files": manifest["files"], "lines": manifest["lines"],
        "step_inputs": sum(1 for op in script if len(op) > 1), "incident_events": len(said["every"]),
        "same_events": {name: said[name] == said["every"] for name in grids},
        "cpu_s": median, "cpu_runs_s": cpu,
        "ratio_every_over": {name: median["every"] / max(median[name], 1e-9) for name in grids},
        "work": work,
    }


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    out = [f"Produced by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (median of the repeats; the "
           f"job runs the {GRID_US / US_PER_S:g} s grid).", "",
           "| dense hour, files/min | files | inputs to the step | incident events | timer | same events as at "
           "every due time | CPU | at every due time / this | firings | buffer items read | largest read |",
           "|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for name, w in r["work"].items():
            out.append(
                f"| {r['rate_files_per_min']:,.0f} | {r['files']:,} | {r['step_inputs']:,} | {r['incident_events']:,} "
                f"| {'at every due time' if name == 'every' else 'grid ' + name} | "
                f"{'yes' if r['same_events'][name] else '**no**'} | {r['cpu_s'][name]:.2f} s | "
                f"{r['ratio_every_over'][name]:.1f}x | {w['firings']:,} | {w['items_read']:,} | "
                f"{w['largest_read']:,} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dense-rate", type=float, nargs="+", default=[240.0], help="files per minute")
    ap.add_argument("--grids", type=float, nargs="+", default=[GRID_US / US_PER_S], help="seconds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=8, help="the capacity benchmark's dense hour uses 8")
    ap.add_argument("--workdir", default="/tmp/stagewatch-capacity")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    rows = [measure(rate, args.grids, args.repeats, Path(args.workdir), args.seed) for rate in args.dense_rate]
    command = "python benchmarks/incident_grid.py " + " ".join(sys.argv[1:])
    text = markdown(rows, command.strip())
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command.strip(), "rows": rows}, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0 if all(all(r["same_events"].values()) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
