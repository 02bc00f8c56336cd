"""Would combining several slightly slow stages into one verdict catch what the default misses on DeLag?

    python benchmarks/combined_evidence.py [CSV ...] [--line body|tail] [--markdown FILE]

For every completed request of each DeLag file (default: ../shared/data/delag/trainticket/*.csv), replayed with
the defaults, it records how far each call's reported latency and the end to end sit above their baselines at
the request's completion -- ``u = log(value / median) / log(line / median)``: 0 at the median, 1 at the line --
and whether the detector flagged the request. It then adds a second verdict, "end to end at least A and at
least C calls at B or more", for a grid of (A, B, C), and reports the F1 of the default with it, overall and per
file. A rule worth building raises the F1; this is the measurement behind docs/detection.md's "it does not
decide".

The snapshot each part is set against is read from the running detector at completion (a wrapper around
``Judge.measure`` in this script only: the product's code is not changed by it).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.backtest.replay import replay
from stagewatch.core import verdicts
from stagewatch.core.baselines import END_TO_END, BaselineConfig, Snapshot
from stagewatch.core.judged_by import lookup
from stagewatch.core.lines import LINE_RULES
from stagewatch.evaluation.delag import read_delag, to_log_lines

GRID_A = (0.2, 0.3, 0.35)
GRID_B = (0.3, 0.5)
GRID_C = (2, 3, 4)


def _u(value: float, snap: Snapshot) -> float:
    median = max(snap.median_ms, 1.0)
    line = max(snap.threshold_ms, median * 1.0001)
    return math.log(max(value, 1.0) / median) / math.log(line / median)


def capture(path: str, line: str) -> list[tuple[int, bool, float, np.ndarray]]:
    """(label, flagged, end-to-end u, calls' u sorted high to low) per completed request of one file."""
    rows: list[tuple[str, float, np.ndarray]] = []
    original = verdicts.Judge.measure

    def measure(self: verdicts.Judge, trace: Any, m: Any, now: int, out: Any) -> str:
        if m.measure == "end_to_end":
            e2e, _ = lookup(self.base, END_TO_END, trace.tenant)
            calls = []
            for i, value in enumerate(trace.reported or ()):
                if value is not None:
                    snap, _ = lookup(self.base, self.rules.latency_names[i], trace.tenant)
                    if snap is not None:
                        calls.append(_u(value, snap))
            if e2e is not None:
                rows.append((trace.uid, _u(m.value_ms, e2e), np.sort(np.asarray(calls or [0.0]))[::-1]))
        return original(self, trace, m, now, out)

    d = read_delag(path)
    flagged: set[str] = set()
    verdicts.Judge.measure = measure  # type: ignore[method-assign]
    try:
        replay(to_log_lines(d), on_anomaly=lambda a: flagged.add(a.uid),
               cfg=DetectorConfig(baseline=BaselineConfig(line=line)))
    finally:
        verdicts.Judge.measure = original  # type: ignore[method-assign]
    label = {u: int(x) for u, x in zip(d.uids, d.labels, strict=True)}
    return [(label[uid], uid in flagged, e2e, calls) for uid, e2e, calls in rows]


def _f1(flag: np.ndarray, lab: np.ndarray) -> float:
    tp = int((flag & lab).sum())
    fp, fn = int((flag & ~lab).sum()), int((~flag & lab).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", nargs="*", help="DeLag files (default: ../shared/data/delag/trainticket/*.csv)")
    ap.add_argument("--line", choices=LINE_RULES, default="body")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args()
    paths = sorted(args.csv or glob.glob("../shared/data/delag/trainticket/*.csv"))
    if not paths:
        print("combined_evidence: no DeLag files; give them, e.g. ../shared/data/delag/trainticket/*.csv",
              file=sys.stderr)
        return 2
    per_file = {p: capture(p, args.line) for p in paths}
    rows = [r for p in paths for r in per_file[p]]
    files = np.array([p for p in paths for _ in per_file[p]])
    lab = np.array([r[0] > 0 for r in rows])
    flagged = np.array([r[1] for r in rows])
    e2e = np.array([r[2] for r in rows])
    missed = ~flagged & lab
    lines = [
        f"# Combined evidence on DeLag ({args.line} line)",
        "",
        f"Produced by `python benchmarks/combined_evidence.py --line {args.line}` on "
        f"{datetime.date.today().isoformat()} ({len(paths)} files, {len(rows)} completed requests).",
        "",
        f"End-to-end u (0 at the baseline's median, 1 at its line): normal requests' 99th percentile "
        f"{np.quantile(e2e[~lab], 0.99):.2f}; the anomalous requests the default misses: median "
        f"{np.median(e2e[missed]):.2f}, 10th percentile {np.quantile(e2e[missed], 0.1):.2f}.",
        "",
        "| rule | new TP | new FP | F1 (all) | per-file F1 median | p10 | min |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, flag: np.ndarray) -> str:
        per = [_f1(flag[files == p], lab[files == p]) for p in paths]
        new = flag & ~flagged
        return (f"| {name} | {int((new & lab).sum())} | {int((new & ~lab).sum())} | {_f1(flag, lab):.3f} | "
                f"{np.median(per):.3f} | {np.quantile(per, 0.1):.3f} | {min(per):.3f} |")

    lines.append(row("the default alone", flagged))
    for a in GRID_A:
        for b in GRID_B:
            count = np.array([int((r[3] >= b).sum()) for r in rows])
            for c in GRID_C:
                lines.append(row(f"or: end to end >= {a} and {c}+ calls >= {b}", flagged | ((e2e >= a) & (count >= c))))
    text = "\n".join(lines) + "\n"
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
