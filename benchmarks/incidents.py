"""Incidents on simulated days: one per injected fault, none spurious, right scope, resolved after the fault.

    python benchmarks/incidents.py [--seeds 101 102 103 104 105] [--workdir DIR] [--markdown FILE]

For each seed (seeds the tests do not use): ``stagewatch simulate`` (a full day, the five standard faults),
``stagewatch replay --incidents`` with the defaults, then the incidents matched to the manifest's faults
(``evaluate.score_incidents``). Prints one table over all seeds.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

import orjson

from stagewatch.backtest.replay import replay
from stagewatch.core.incidents import IncidentTracker
from stagewatch.evaluation.scoring import IncidentMatch, score_incidents
from stagewatch.evaluation.simulate import SimConfig, simulate_to_dir
from stagewatch.logfiles import iter_lines


def run_seed(seed: int, work: Path) -> tuple[list[IncidentMatch], list[dict[str, Any]]]:
    out = work / f"seed-{seed}"
    if not (out / "logs.jsonl").exists():
        simulate_to_dir(SimConfig(seed=seed), out)
    tracker = IncidentTracker()
    replay(iter_lines([str(out / "logs.jsonl")]), on_anomaly=tracker.add,
           on_summary=tracker.observe_summary)
    faults = orjson.loads((out / "manifest.json").read_bytes())["faults"]
    return score_incidents([e.to_dict() for e in tracker.events], faults)


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    ap.add_argument("--workdir", default="/tmp/stagewatch-detection")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    lines = [
        "| seed | fault | incidents | scope right | opened after its start | resolved after its end |",
        "|---|---|---:|---|---:|---:|",
    ]
    spurious_all = []
    for seed in args.seeds:
        rows, spurious = run_seed(seed, work)
        spurious_all += [(seed, e) for e in spurious]
        for r in rows:
            lines.append(f"| {seed} | {r.fault} | {r.incidents} | {'yes' if r.scope_ok else '**no**'} | "
                         f"{_s(r.opened_after_s)} | {_s(r.resolved_after_end_s)} |")
    lines.append("")
    lines.append(f"Spurious incidents (matching no fault): {len(spurious_all)}")
    for seed, e in spurious_all:
        lines.append(f"- seed {seed}: {e['message']} (opened {e['at']})")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        head = (f"# Incidents on simulated days\n\nProduced by `python benchmarks/incidents.py --seeds "
                f"{' '.join(map(str, args.seeds))}` on {datetime.date.today()}.\n\n")
        Path(args.markdown).write_text(head + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
