"""Detection quality on simulated days, with the defaults a user gets, on seeds the tests do not use.

    python benchmarks/detection.py [--seeds 101 102 103 104 105] [--workdir DIR] [--line tail|body]
                                   [--baseline-interval SECONDS] [--rate FILES_A_MINUTE --hours H] [--markdown FILE]

For each seed: ``stagewatch simulate`` (a full day, standard faults), ``stagewatch replay`` with no options,
then trace-level precision / recall / F1 per kind against the labels, and the stall detection delay (from
the stalled file's last event to the verdict's watermark). Prints one table per seed and the totals.
``--rate`` and ``--hours``: a pipeline of that many files a minute at the daily peak (30), simulated for that long
(24), the standard faults on its last day -- a quiet pipeline needs the days before to learn.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import replace
from pathlib import Path

import orjson

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.backtest.replay import replay
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.kinds import KINDS
from stagewatch.core.lines import DEFAULT_LINE, LINE_RULES
from stagewatch.evaluation.scoring import KindScore, score_kinds
from stagewatch.evaluation.simulate import STANDARD_FAULTS, SimConfig, simulate_to_dir
from stagewatch.logfiles import iter_lines


def run_seed(
    seed: int, work: Path, line: str = DEFAULT_LINE, interval_s: int = 300, rate: float = 30.0, hours: float = 24.0
) -> tuple[list[KindScore], dict, int]:
    out = work / f"seed-{seed}" if (rate, hours) == (30.0, 24.0) else work / f"seed-{seed}-{rate:g}-{hours:g}"
    if not (out / "logs.jsonl").exists():
        faults = tuple(replace(f, start_h=f.start_h + hours - 24) for f in STANDARD_FAULTS)
        simulate_to_dir(SimConfig(seed=seed, hours=hours, peak_rate_per_min=rate, faults=faults), out)
    anomalies: list[dict] = []
    cfg = DetectorConfig(baseline=BaselineConfig(line=line, interval_s=interval_s))
    stats = replay(iter_lines([str(out / "logs.jsonl")]), cfg=cfg,
                   on_anomaly=lambda a: anomalies.append(a.to_dict()))
    labels = [orjson.loads(line) for line in (out / "labels.jsonl").read_bytes().splitlines()]
    scores, delay = score_kinds(labels, anomalies)
    return scores, delay, stats.events


def table(rows: list[tuple[str, KindScore]]) -> str:
    lines = ["| seed | kind | TP | FP | FN | precision | recall | F1 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for seed, s in rows:
        lines.append(
            f"| {seed} | {s.kind} | {s.tp} | {s.fp} | {s.fn} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    ap.add_argument("--workdir", default="/tmp/stagewatch-detection")
    ap.add_argument("--line", choices=LINE_RULES, default=DEFAULT_LINE, help="the alert line rule (docs/detection.md)")
    ap.add_argument("--baseline-interval", type=int, default=300, metavar="SECONDS",
                    help="how often baselines are folded (replay --baseline-interval)")
    ap.add_argument("--rate", type=float, default=30.0, help="files a minute at the daily peak (simulate --rate)")
    ap.add_argument("--hours", type=float, default=24.0, help="hours simulated; the faults are on the last day")
    ap.add_argument("--markdown", help="write the tables (markdown) here")
    args = ap.parse_args()
    if args.rate <= 0 or args.hours < 24:
        ap.error("--rate must be positive and --hours at least 24 (the faults are on the last day)")
    work = Path(args.workdir)
    rows: list[tuple[str, KindScore]] = []
    totals = {k: [0, 0, 0] for k in KINDS}
    delays = []
    for seed in args.seeds:
        scores, delay, events = run_seed(seed, work, args.line, args.baseline_interval, args.rate, args.hours)
        print(f"seed {seed}: {events:,} events, stall delay median {delay['median_s']} s, p95 {delay['p95_s']} s")
        for s in scores:
            rows.append((str(seed), s))
            t = totals.setdefault(s.kind, [0, 0, 0])
            t[0] += s.tp
            t[1] += s.fp
            t[2] += s.fn
        delays.append(delay)
    total_rows = [("all", KindScore(k, *v)) for k, v in totals.items()]
    text = table(rows + total_rows)
    print(text)
    worst = min(s.f1 for _, s in rows)
    print(f"lowest per-seed F1: {worst:.3f}")
    if args.markdown:
        cmd = "python benchmarks/detection.py --seeds " + " ".join(map(str, args.seeds)) + (
            f" --line {args.line}" if args.line != DEFAULT_LINE else "") + (
            f" --rate {args.rate:g} --hours {args.hours:g}" if (args.rate, args.hours) != (30.0, 24.0) else "")
        stamp = datetime.date.today().isoformat()
        delay_text = "; ".join(
            f"seed {seed}: median {d['median_s']} s, p95 {d['p95_s']} s"
            for seed, d in zip(args.seeds, delays, strict=True)
        )
        setting = "" if args.line == DEFAULT_LINE else f" but the {args.line} line"
        Path(args.markdown).write_text(
            f"# Detection on simulated days\n\nProduced by `{cmd}` on {stamp}, default settings{setting}.\n\n"
            f"{text}\n\nLowest per-seed F1: {worst:.3f}.\n\nStall detection delay (last event of the file to "
            f"the verdict's watermark): {delay_text}.\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
