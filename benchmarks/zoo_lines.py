"""Why a zoo pipeline's slow stages were found or missed: each ``slow_stage`` label beside the line that judged it.

    python benchmarks/zoo_lines.py --seed 10024 [--workdir DIR] [--max-files 50000] [--line tail] [--markdown FILE]

Simulates the pipeline into ``DIR/zoo-SEED`` unless it is there already (as ``benchmarks/zoo.py --workdir DIR
--max-files N`` left it: the same seed at the same size, else one line and exit 2), replays it, and prints one row
per clearly slow stage: found or missed, the file, its true duration over the p99.9 it was labelled against, how
much longer the detector measured it (a skewed clock), the line -- for a file found, the one its verdict was drawn
at; for one missed, the one in force when its wait was judged, at its logged time -- with that offset taken off,
over the same p99.9, and the key that judged it: the customer's or the stage's, and for a wait across skipped
optional stages its path's (``c (after a)``), with its samples. Then each false alert, counted as the zoo counts
them. The line of a miss is read at the fold before: a key in its first interval is judged by early snapshots,
which are not shown ("none (warming up)" when no fold had one).

The lines are read after every baseline fold from a store that records them (a subclass this process's detector
is given); the verdicts are replay's own.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import orjson

from stagewatch.backtest import engine
from stagewatch.backtest.replay import replay
from stagewatch.cli.common import read_jsonl
from stagewatch.core.anomalies import Anomaly
from stagewatch.core.baselines import BaselineConfig, BaselineStore, Snapshot
from stagewatch.core.judged_by import lookup
from stagewatch.core.kinds import SLOW_STAGE
from stagewatch.core.lines import LINE_RULES
from stagewatch.core.records import TraceSummary
from stagewatch.core.stages import StageOrder
from stagewatch.core.timeutil import parse_rfc3339_us
from stagewatch.core.trace_rules import TraceRules
from stagewatch.evaluation.scoring import matched
from stagewatch.evaluation.zoo import ZooPipeline, random_pipeline, simulate_zoo
from stagewatch.logfiles import iter_lines

Key = tuple[str, str]  # (baseline, tenant)


class _Recording(BaselineStore):
    """A store that notes, after each fold, the line each watched (baseline, tenant) is judged by -- a stage's own
    wait, or a wait across skipped optional stages on its path's baseline (``TraceRules.wait_name``)."""

    watched: ClassVar[set[Key]] = set()
    path_stage: ClassVar[dict[str, str]] = {}
    history: ClassVar[dict[Key, list[tuple[int, Snapshot | None, bool]]]] = {}
    in_force: ClassVar[dict[tuple[str, str], float | None]] = {}  # per label, the line its wait was judged by

    def advance(self, t_us: int) -> None:
        before = self.step
        super().advance(t_us)
        if self.step == before:
            return
        start_us = self.step * self.cfg.interval_us
        for name, tenant in self.watched:
            snap, own = lookup(self, name, tenant, self.path_stage.get(name))
            self.history.setdefault((name, tenant), []).append((start_us, snap, own))


def _simulated(seed: int, workdir: Path, max_files: int) -> tuple[Path, ZooPipeline]:
    """The pipeline's directory, simulated unless it holds this seed's pipeline at this size already."""
    out, pipe = workdir / f"zoo-{seed}", random_pipeline(seed, max_files)
    if not (out / "manifest.json").exists():
        simulate_zoo(pipe, out)
    elif orjson.loads(out.joinpath("manifest.json").read_bytes()).get("pipeline") != orjson.loads(
            orjson.dumps(asdict(pipe))):
        raise ValueError(f"{out} holds another pipeline than seed {seed} at --max-files {max_files}: remove it, or "
                         "give another --workdir")
    return out, pipe


def _judged_by(rules: TraceRules, summary: TraceSummary | None, stage: str) -> tuple[str, float | None, str | None]:
    """The baseline a file's wait at ``stage`` went to, its measured duration and its logged time (None: none)."""
    if summary is None:
        return stage, None, None
    i, after = rules.index[stage], -1
    for st in summary.stages:
        if st.stage == stage:
            return rules.wait_name(after, i), st.duration_ms, st.time  # the stage's own unless across skipped ones
        if st.stage in rules.index:
            after = rules.index[st.stage]
    return stage, None, None


def explain(pipe: ZooPipeline, out: Path, line: str) -> str:
    """The table for ``pipe``, simulated into ``out``."""
    every, ambiguous = read_jsonl(str(out / "labels.jsonl")), read_jsonl(str(out / "ambiguous.jsonl"))
    labels = [r for r in every if r["kind"] == SLOW_STAGE]
    if any("p999_ms" not in r and "held_s" not in r for r in labels):
        raise ValueError(f"{out} was simulated before its labels carried their p99.9: remove it, or give another "
                         "--workdir")
    files = orjson.loads(out.joinpath("manifest.json").read_bytes())["files"]
    order = StageOrder.parse(pipe.order)
    rules = TraceRules(order)
    _Recording.watched = {(name, r["tenant"]) for r in labels for name in rules.wait_keys[rules.index[r["stage"]]]}
    _Recording.path_stage = rules.path_stage
    _Recording.history, _Recording.in_force = {}, {}
    verdicts: list[dict[str, Any]] = []
    summaries: dict[str, TraceSummary] = {}

    def on_anomaly(a: Anomaly) -> None:
        if a.kind == SLOW_STAGE:
            verdicts.append(a.to_dict())

    def on_summary(s: TraceSummary) -> None:
        summaries[s.uid] = s

    # The detector builds its own store: this process's is the recording one (a diagnostic run, never the job's).
    engine.BaselineStore = _Recording  # type: ignore[misc]
    try:
        replay(iter_lines([str(out / "logs.jsonl")]), order=order,
               cfg=engine.DetectorConfig(baseline=BaselineConfig(line=line)), on_anomaly=on_anomaly,
               on_summary=on_summary)
    finally:
        engine.BaselineStore = BaselineStore  # type: ignore[misc]
    # Matched as the zoo scores them (``scoring.matched``): what is found, and what is a false alert.
    truth, found = matched(every, verdicts, ambiguous)
    flagged = {(uid, stage): a for (uid, _, stage), a in found.items()}
    false = [a for key, a in found.items() if key not in truth]
    folds = {key: [h[0] for h in history] for key, history in _Recording.history.items()}
    text = [f"zoo {pipe.seed} ({pipe.order}; {files} files), {line} line: {len(labels)} clearly slow stages, "
            f"{sum((r['uid'], r['stage']) in flagged for r in labels)} found", "",
            "| | file | time | stage | tenant | cause | x its p99.9 | measured longer by | line x its p99.9 "
            "| judged by | samples |",
            "|---|---|---|---|---|---|---:|---:|---:|---|---:|"]
    for r in sorted(labels, key=lambda r: r["time"]):
        uid, verdict = r["uid"], flagged.get((r["uid"], r["stage"]))
        head = f"| {'found' if verdict else 'missed'} | {uid} | {r['time'][:19]} | {r['stage']} | {r['tenant']} "
        cause = "natural" if r["fault"] is None else f"fault {r['fault']}"
        if "p999_ms" not in r:  # a stalled file held past its clearly slow line: no duration
            text.append(f"{head}| {cause} (held in the stage) | | | | | |")
            continue
        name, duration, logged = _judged_by(rules, summaries.get(uid), r["stage"])
        p999 = r["p999_ms"]
        offset = 0.0 if duration is None or abs(duration - r["duration_ms"]) < 0.5 else duration - r["duration_ms"]
        # Found: the line the verdict was drawn at. Missed: the line in force when its wait was judged (at its
        # logged time), from the fold before -- not an early snapshot's in a key's first interval.
        history = _Recording.history.get((name, r["tenant"]), [])
        i = bisect.bisect_right(folds.get((name, r["tenant"]), []), parse_rfc3339_us(logged or r["time"])) - 1
        _, snap, own = history[i] if i >= 0 else (0, None, False)
        recorded = _Recording.in_force[(uid, r["stage"])] = None if snap is None else snap.threshold_ms
        line_ms = verdict["threshold_ms"] if verdict else recorded
        ratio = "-" if line_ms is None else f"{(line_ms - offset) / p999:.2f}"
        by = "none (warming up)" if snap is None else ("its customer" if own else "its stage") + (
            f" ({name})" if name != r["stage"] else "")
        text.append(f"{head}| {cause} | {r['duration_ms'] / p999:.2f} | {offset:.0f} ms | {ratio} | {by} "
                    f"| {0 if snap is None else snap.n:.0f} |")
    text += ["", f"{len(false)} false alerts", ""]
    text += [f"- {a['uid']} {a['event_time'][:19]} {a['stage']} ({a.get('tenant')}): {a['observed_ms']:.1f} ms, "
             f"line {a['threshold_ms']:.1f} ms ({a['measure']})"
             for a in sorted(false, key=lambda a: a["event_time"])]
    return "\n".join(text) + "\n"


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("zoo-work"))
    ap.add_argument("--max-files", type=_positive, default=50_000)
    ap.add_argument("--line", choices=LINE_RULES, default="tail")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)
    if args.markdown and not args.markdown.parent.is_dir():
        print(f"zoo_lines: no folder {args.markdown.parent} for --markdown: create it, or give another path",
              file=sys.stderr)
        return 2
    try:
        out, pipe = _simulated(args.seed, args.workdir, args.max_files)
        text = explain(pipe, out, args.line)
    except ValueError as e:
        print(f"zoo_lines: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"zoo_lines: cannot use --workdir {args.workdir} ({e.strerror}): give a folder you can write to",
              file=sys.stderr)
        return 2
    sys.stdout.write(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
