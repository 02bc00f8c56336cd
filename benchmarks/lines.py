"""How the alert line sits against a distribution's true tail, rule by rule, family by family, size by size.

    python benchmarks/lines.py [--draws 40] [--json FILE] [--markdown FILE]

For each alert line rule (``body``, the default, and ``tail``; ``stagewatch.core.lines``), each duration family
of the issue (lognormal with sigma 0.1-0.9, gamma, a two-mode mixture, a Pareto tail above a lognormal body,
whole-millisecond quantised fast stages) and each number of samples a baseline holds (30 to 50,000), draws that
many normal durations, folds them into a baseline exactly as a running job does (``BaselineStore``, one
interval: a clean history), and reads the line it would alert above (under the tail rule a key below
``establish_n`` samples is still judged by the body line). Against the family's true distribution (2,000,000
draws) it reports the false-alert rate per normal measurement (the share of normal durations above the line;
the target is at most 1 in 2,000) and the line over the true p99.9 (labels call a duration clearly slow above
1.5x p99.9, so a line beyond that misses clearly slow files). Median and worst over ``--draws`` baselines per
cell. No timing; pure arithmetic on the core.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.lines import LINE_RULES

SIZES = (30, 100, 300, 1000, 3000, 10_000, 50_000)
# (label, sampler of n durations in ms): the families at the ends of their ranges.
_MEDIAN_MS = 800.0


def _families() -> dict[str, Any]:
    def lognormal(s: float) -> Any:
        return lambda rng, n: rng.lognormal(0.0, s, n) * _MEDIAN_MS

    def gamma(s: float) -> Any:
        return lambda rng, n: rng.gamma(1 / s, s, n) * _MEDIAN_MS

    def mixture(factor: float, share: float) -> Any:
        return lambda rng, n: rng.lognormal(0.0, 0.2, n) * np.where(rng.random(n) < share, factor, 1.0) * _MEDIAN_MS

    def pareto(s: float) -> Any:
        return lambda rng, n: rng.lognormal(0.0, 0.25, n) * (1 + rng.pareto(1 / s, n) * 0.1) * _MEDIAN_MS

    def quantised(median_ms: float, s: float) -> Any:
        return lambda rng, n: np.maximum(np.round(rng.lognormal(0.0, s, n) * median_ms), 1.0)

    return {
        "lognormal 0.1": lognormal(0.1), "lognormal 0.5": lognormal(0.5), "lognormal 0.9": lognormal(0.9),
        "gamma 0.05": gamma(0.05), "gamma 0.5": gamma(0.5),
        "mixture 25% x2": mixture(2.0, 0.25), "mixture 25% x5": mixture(5.0, 0.25),
        "mixture 5% x4": mixture(4.0, 0.05),
        "pareto a=2.5": pareto(0.4), "pareto a=4": pareto(0.25),
        "quantised 2 ms": quantised(2.0, 0.4), "quantised 20 ms": quantised(20.0, 0.6),
    }


def line_after(samples: np.ndarray, cfg: BaselineConfig) -> float:
    """The line a stage-wide baseline holds after learning ``samples`` in one interval."""
    store = BaselineStore(cfg)
    store.advance(0)
    learning = store.learning("s", None)
    learning.extend(samples.tolist())
    store.advance(cfg.interval_us)
    snap = store.snaps[("s", None)]
    return float(snap.threshold_ms)


def measure(draws: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for (name, draw), rule in itertools.product(_families().items(), LINE_RULES):
        cfg = BaselineConfig(warmup_n=1, line=rule)
        truth = np.sort(draw(rng, 2_000_000))
        p999 = float(np.quantile(truth, 0.999))
        for n in SIZES:
            fa, ratio = [], []
            for _ in range(draws):
                line = line_after(draw(rng, n), cfg)
                fa.append(1.0 - np.searchsorted(truth, line, side="right") / len(truth))
                ratio.append(line / p999)
            rows.append({
                "line": rule, "family": name, "n": n,
                "false_alert_median": float(np.median(fa)), "false_alert_worst": float(np.max(fa)),
                "line_over_p999_median": float(np.median(ratio)), "line_over_p999_max": float(np.max(ratio)),
            })
            print(f"{rule} {name:>16} n={n:>6}  false alerts median {rows[-1]['false_alert_median']:.5f} "
                  f"worst {rows[-1]['false_alert_worst']:.5f}  line/p99.9 median "
                  f"{rows[-1]['line_over_p999_median']:.2f} max {rows[-1]['line_over_p999_max']:.2f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    rows = measure(args.draws)
    if args.json:
        args.json.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    if args.markdown:
        command = "python benchmarks/lines.py " + " ".join(argv if argv is not None else sys.argv[1:])
        lines = ["# Alert lines against the true tail, by rule, family and samples held", "",
                 f"Produced by `{command.strip()}` on {datetime.date.today().isoformat()} (method: the script's "
                 "docstring). False alerts: the share of the family's normal durations above the line (target at "
                 "most 0.0005). Line / p99.9: where the line sits against the true p99.9 (a clearly slow file is "
                 "above 1.5x).", "",
                 "| line | family | n | false alerts (median) | (worst) | line / p99.9 (median) | (max) |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['line']} | {r['family']} | {r['n']} | {r['false_alert_median']:.5f} | "
                  f"{r['false_alert_worst']:.5f} | {r['line_over_p999_median']:.2f} | {r['line_over_p999_max']:.2f} |"
                  for r in rows]
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
