"""Why a zoo pipeline's slow stages were found or missed: each ``slow_stage`` label beside the line that judged it.

    python benchmarks/zoo_lines.py --seed 10024 [--workdir DIR] [--max-files 50000] [--line tail] [--markdown FILE]

Simulates the pipeline into ``DIR/zoo-SEED`` unless it is there already (as ``benchmarks/zoo.py --workdir DIR``
left it), replays it, and prints one row per clearly slow stage: found or missed, its true duration over the
p99.9 it was labelled against, how much longer the detector measured it (a skewed clock), and the alert line in
force then -- the line of the key that judged it (the customer's or the stage's), the offset taken off, over that
p99.9 -- with the key's samples. Then each false alert with its duration and line. A miss whose line is under
its duration was judged by another measure or not warm yet (the key's line is shown all the same).

The line is read after every baseline fold from a store that records it (a subclass given to this process's
detector); the verdicts are replay's own.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from pathlib import Path
from typing import Any, ClassVar

import orjson

from stagewatch.backtest import engine
from stagewatch.backtest.replay import replay
from stagewatch.core.anomalies import IN_PROGRESS, Anomaly
from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.judged_by import lookup
from stagewatch.core.kinds import SLOW_STAGE, STALLED
from stagewatch.core.lines import LINE_RULES
from stagewatch.core.records import TraceSummary
from stagewatch.core.stages import StageOrder
from stagewatch.core.timeutil import parse_rfc3339_us
from stagewatch.evaluation.zoo import random_pipeline, simulate_zoo
from stagewatch.logfiles import iter_lines

Key = tuple[str, str]  # (stage, tenant)


class _Recording(BaselineStore):
    """A store that notes, after each fold, the line each watched (stage, tenant) is judged by."""

    watched: ClassVar[set[Key]] = set()
    history: ClassVar[dict[Key, list[tuple[int, float | None, bool, float]]]] = {}

    def advance(self, t_us: int) -> None:
        before = self.step
        super().advance(t_us)
        if self.step == before:
            return
        start_us = self.step * self.cfg.interval_us
        for stage, tenant in self.watched:
            snap, own = lookup(self, stage, tenant)
            line = None if snap is None else snap.threshold_ms
            self.history.setdefault((stage, tenant), []).append((start_us, line, own, 0.0 if snap is None else snap.n))


def _rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def explain(seed: int, workdir: Path, max_files: int, line: str) -> str:
    out = workdir / f"zoo-{seed}"
    pipe = random_pipeline(seed, max_files)
    if not (out / "manifest.json").exists():
        simulate_zoo(pipe, out)
    every = _rows(out / "labels.jsonl")
    labels = [r for r in every if r["kind"] == SLOW_STAGE]
    stalled = {(r["uid"], r["stage"]) for r in every if r["kind"] == STALLED}
    if any("p999_ms" not in r and "held_s" not in r for r in labels):
        raise ValueError(f"{out} was simulated before its labels carried their p99.9: remove it, or give another "
                         "--workdir")
    unsure = {(r["uid"], r["stage"]) for r in _rows(out / "ambiguous.jsonl") if r["kind"] == SLOW_STAGE}
    _Recording.watched = {(r["stage"], r["tenant"]) for r in labels}
    _Recording.history = {}
    verdicts: list[dict[str, Any]] = []
    measured: dict[tuple[str, str], float] = {}

    def on_anomaly(a: Anomaly) -> None:
        if a.kind == SLOW_STAGE:
            verdicts.append(a.to_dict())

    def on_summary(s: TraceSummary) -> None:
        for st in s.stages:
            if st.duration_ms is not None:
                measured[(s.uid, st.stage)] = st.duration_ms

    # The detector builds its own store: this process's is the recording one (a diagnostic run, never the job's).
    engine.BaselineStore = _Recording  # type: ignore[misc]
    try:
        replay(iter_lines([str(out / "logs.jsonl")]), order=StageOrder.parse(pipe.order),
               cfg=engine.DetectorConfig(baseline=BaselineConfig(line=line)), on_anomaly=on_anomaly,
               on_summary=on_summary)
    finally:
        engine.BaselineStore = BaselineStore  # type: ignore[misc]
    found = {(a["uid"], a["stage"]) for a in verdicts}
    text = [f"zoo {seed}, {line} line: {len(labels)} clearly slow stages, "
            f"{sum((r['uid'], r['stage']) in found for r in labels)} found", "",
            "| | time | stage | tenant | cause | x its p99.9 | measured longer by | line x its p99.9 | judged by "
            "| samples |",
            "|---|---|---|---|---|---:|---:|---:|---|---:|"]
    for r in sorted(labels, key=lambda r: r["time"]):
        key, uid = (r["stage"], r["tenant"]), r["uid"]
        cause = "natural" if r["fault"] is None else f"fault {r['fault']}"
        if "p999_ms" not in r:  # a stalled file held past its clearly slow line: no duration yet
            text.append(f"| {'found' if (uid, r['stage']) in found else 'missed'} | {r['time'][:19]} | {r['stage']} "
                        f"| {r['tenant']} | {cause} (held in the stage) | | | | | |")
            continue
        p999, offset = r["p999_ms"], measured.get((uid, r["stage"]), r["duration_ms"]) - r["duration_ms"]
        offset = offset if abs(offset) >= 0.5 else 0.0
        history = _Recording.history.get(key, [])
        i = bisect.bisect_right([h[0] for h in history], parse_rfc3339_us(r["time"])) - 1
        in_force = history[i] if i >= 0 else (0, None, False, 0.0)
        ratio = "-" if in_force[1] is None else f"{(in_force[1] - offset) / p999:.2f}"
        text.append(
            f"| {'found' if (uid, r['stage']) in found else 'missed'} | {r['time'][:19]} | {r['stage']} "
            f"| {r['tenant']} | {cause} | {r['duration_ms'] / p999:.2f} | {offset:.0f} ms | {ratio} "
            f"| {'its customer' if in_force[2] else 'its stage'} | {in_force[3]:.0f} |")
    labelled = {(r["uid"], r["stage"]) for r in labels}
    # What the zoo counts as a false alert (``scoring.score_kinds``): a file and stage neither labelled nor
    # ambiguous, but for a verdict while in the stage on a file that then stalled there; once each.
    false: dict[tuple[str, str], dict[str, Any]] = {}
    for a in verdicts:
        key = (a["uid"], a["stage"])
        if key not in labelled and key not in unsure and not (a["measure"] == IN_PROGRESS and key in stalled):
            false.setdefault(key, a)
    text += ["", f"{len(false)} false alerts", ""]
    text += [f"- {a['event_time'][:19]} {a['stage']} ({a.get('tenant')}): {a['observed_ms']:.1f} ms, "
             f"line {a['threshold_ms']:.1f} ms ({a['measure']})"
             for a in sorted(false.values(), key=lambda a: a["event_time"])]
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("zoo-work"))
    ap.add_argument("--max-files", type=int, default=50_000)
    ap.add_argument("--line", choices=LINE_RULES, default="tail")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    try:
        text = explain(args.seed, args.workdir, args.max_files, args.line)
    except ValueError as e:
        print(f"zoo_lines: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
