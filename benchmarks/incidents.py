"""Incidents against the faults that caused them, on simulated days, the quickstart demo, days with no fault and
the pipeline zoo.

    python benchmarks/incidents.py [--seeds 101-105] [--quiet-seeds 106-107] [--zoo-seeds 10001-10030]
                                   [--zoo-max-files 5000] [--workdir DIR] [--json FILE] [--markdown FILE]

For each input (seeds the tests do not use): the logs, ``replay`` with the defaults and the incident layer as
``stagewatch replay --incidents`` runs it (lots included), then per fault (``evaluation.incident_scoring``):
the incidents it got (one is right), whether the main one's scope is the fault's, when it opened and when its
first anomaly was after the fault began (the bar: 5 min), when it resolved after the fault ended (the bar:
15 min), and its file precision and recall; and the spurious incidents (holding none of any fault's files).
A fault is *findable* when at least ``open_count`` (5) of its files were flagged: fewer cannot open an
incident for everyone, and are left out of the found rate (listed).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stagewatch.backtest.replay import replay
from stagewatch.cli import main as cli_main
from stagewatch.core.stages import StageOrder
from stagewatch.core.timeutil import US_PER_S, parse_rfc3339_us
from stagewatch.evaluation.incident_scoring import FaultOutcome, FaultTruth, Recorder, score
from stagewatch.evaluation.zoo import random_pipeline, simulate_zoo
from stagewatch.logfiles import iter_lines

FINDABLE = 5
START_WITHIN_S, RESOLVE_WITHIN_S = 300.0, 900.0


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(x) for x in text.split(",") if x]


def _labels(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _run(logs: Path, order: StageOrder | None = None) -> Recorder:
    rec = Recorder()
    replay(iter_lines([str(logs)]), order=order, on_anomaly=rec.anomaly, on_summary=rec.summary,
           on_arrival=rec.arrival)
    rec.finish()
    return rec


def simulated(seed: int, work: Path, *, short: bool = False, rate: float | None = None,
              faults: bool = True) -> tuple[list[FaultOutcome], list[dict[str, Any]]]:
    name = f"day-{seed}" + ("-short" if short else "") + ("" if faults else "-quiet")
    out = work / name
    if not (out / "logs.jsonl").exists():  # as a user would make it
        extra = (["--short"] if short else []) + (["--rate", str(rate)] if rate else []) + (
            [] if faults else ["--no-faults"])
        if cli_main(["simulate", str(out), "--seed", str(seed), *extra]) != 0:
            raise SystemExit(f"simulate failed for seed {seed}")
    rec = _run(out / "logs.jsonl")
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    labels = _labels(out / "labels.jsonl")
    truths = [FaultTruth(
        name=f["name"], scope="tenant" if f.get("tenant") else "global", key=f.get("tenant"),
        start_us=parse_rfc3339_us(f["start"]), end_us=parse_rfc3339_us(f["end"]),
        labelled=frozenset(r["uid"] for r in labels if r.get("fault") == f["name"])) for f in manifest["faults"]]
    return score(rec.events, rec.files, truths, rec.flagged)


def zoo(seed: int, max_files: int, work: Path) -> tuple[list[FaultOutcome], list[dict[str, Any]]]:
    out = work / f"zoo-{seed}"
    pipe = random_pipeline(seed, max_files)
    manifest = simulate_zoo(pipe, out)
    rec = _run(out / "logs.jsonl", StageOrder.parse(pipe.order))
    labels = _labels(out / "labels.jsonl")
    t0 = parse_rfc3339_us(manifest["start"])
    truths = []
    for i, f in enumerate(manifest["pipeline"]["faults"]):
        start = t0 + int(f["start_s"] * US_PER_S)
        truths.append(FaultTruth(
            name=f"{i}:{f['kind']}x{len(f['stages'])}@{f['factor']:.2f}/{f['scope']}/{f['seconds'] / 60:.0f}min",
            scope=f["scope"], key=f["key"], start_us=start, end_us=start + int(f["seconds"] * US_PER_S),
            labelled=frozenset(r["uid"] for r in labels if r.get("fault") == i)))
    return score(rec.events, rec.files, truths, rec.flagged)


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    arr = np.asarray(values)
    return f"{np.median(arr):.3f} / {np.percentile(arr, 10):.3f} / {arr.min():.3f}"


def _min(x: float | None) -> str:
    return "—" if x is None else f"{x / 60:.1f}"


def summarise(rows: list[tuple[str, FaultOutcome]]) -> dict[str, Any]:
    findable = [o for _, o in rows if o.flagged >= FINDABLE]
    return {
        "faults": len(rows),
        "findable": len(findable),
        "found": sum(1 for o in findable if o.incidents >= 1),
        "one_incident": sum(1 for o in findable if o.incidents == 1),
        "scope_ok": sum(1 for o in findable if o.scope_ok),
        "started_within_5min": sum(1 for o in findable
                                   if o.started_after_s is not None and o.started_after_s <= START_WITHIN_S),
        "opened_within_5min": sum(1 for o in findable
                                  if o.opened_after_s is not None and o.opened_after_s <= START_WITHIN_S),
        "resolved_within_15min": sum(1 for o in findable if o.resolved_after_end_s is not None
                                     and o.resolved_after_end_s <= RESOLVE_WITHIN_S),
        "precision": [o.precision for o in findable if o.precision is not None],
        "recall": [o.recall for o in findable if o.recall is not None],
    }


def _section(title: str, rows: list[tuple[str, FaultOutcome]], spurious: list[tuple[str, dict[str, Any]]],
             inputs: int, per: str) -> list[str]:
    s = summarise(rows)
    n = s["findable"]
    lines = [f"## {title}", "",
             f"{s['faults']} faults, {n} findable (at least {FINDABLE} files flagged). Of the findable: found "
             f"{s['found']}, as exactly one incident {s['one_incident']}, scope right {s['scope_ok']}, first "
             f"anomaly within 5 min of the fault's start {s['started_within_5min']} (opened within 5 min "
             f"{s['opened_within_5min']}), resolved within 15 min of its end {s['resolved_within_15min']}. "
             f"File precision (median / p10 / min) {_spread(s['precision'])}, recall {_spread(s['recall'])}. "
             f"Spurious incidents: {len(spurious)} over {inputs} {per} ({len(spurious) / max(1, inputs):.2f} "
             f"per {per.rstrip('s')}).", "",
             "| input | fault | flagged | incidents | scope right | first anomaly after start (min) | "
             "opened after start (min) | resolved after end (min) | precision | recall |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for where, o in rows:
        mark = "" if o.flagged >= FINDABLE else " (not findable)"
        lines.append(
            f"| {where} | {o.fault}{mark} | {o.flagged} | {o.incidents} | {'yes' if o.scope_ok else '**no**'} | "
            f"{_min(o.started_after_s)} | {_min(o.opened_after_s)} | {_min(o.resolved_after_end_s)} | "
            f"{'—' if o.precision is None else f'{o.precision:.3f}'} | "
            f"{'—' if o.recall is None else f'{o.recall:.3f}'} |")
    lines += ["", f"Spurious incidents ({len(spurious)}):"]
    lines += [f"- {where}: {e['message']} (opened {e['at']})" for where, e in spurious] or ["- none"]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="101-105", help="full simulated days with the five standard faults")
    ap.add_argument("--quiet-seeds", default="106-107", help="simulated days with no fault")
    ap.add_argument("--zoo-seeds", default="10001-10030", help="zoo pipelines ('' for none)")
    ap.add_argument("--zoo-max-files", type=int, default=5000)
    ap.add_argument("--workdir", default="/tmp/stagewatch-incidents")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sections: dict[str, tuple[list[tuple[str, FaultOutcome]], list[tuple[str, dict[str, Any]]], int]] = {}

    def collect(title: str, runs: list[tuple[str, tuple[list[FaultOutcome], list[dict[str, Any]]]]]) -> None:
        rows = [(where, o) for where, (outs, _) in runs for o in outs]
        spurious = [(where, e) for where, (_, sp) in runs for e in sp]
        sections[title] = (rows, spurious, len(runs))
        print(f"{title}: {summarise(rows) | {'precision': '…', 'recall': '…'}}, spurious {len(spurious)}",
              file=sys.stderr)

    collect("Simulated days", [(f"seed {s}", simulated(s, work)) for s in _seeds(args.seeds)])
    collect("The quickstart demo", [("demo (seed 1, --short --rate 6)", simulated(1, work, short=True, rate=6))])
    collect("Days with no fault", [(f"seed {s}", simulated(s, work, faults=False))
                                   for s in _seeds(args.quiet_seeds)])
    if args.zoo_seeds:
        collect("The pipeline zoo", [(f"zoo {s}", zoo(s, args.zoo_max_files, work)) for s in _seeds(args.zoo_seeds)])
    per = {"Simulated days": "days", "The quickstart demo": "demos", "Days with no fault": "days",
           "The pipeline zoo": "pipelines"}
    lines = []
    for title, (rows, spurious, n) in sections.items():
        lines += _section(title, rows, spurious, n, per[title])
    text = "\n".join(lines)
    print(text)
    if args.json:
        Path(args.json).write_text(orjson.dumps({
            title: {"summary": summarise(rows), "faults": [{"input": w, **o.to_dict()} for w, o in rows],
                    "spurious": [{"input": w, **e} for w, e in spurious], "inputs": n}
            for title, (rows, spurious, n) in sections.items()}, option=orjson.OPT_INDENT_2).decode())
    if args.markdown:
        cmd = " ".join(["python benchmarks/incidents.py", *(argv if argv is not None else sys.argv[1:])])
        head = (f"# Incidents against their faults\n\nProduced by `{cmd}` on {datetime.date.today()}.\n\n"
                "Per fault: the incidents that hold most of their files from it (one is right), the main one's "
                "scope (its last), minutes from the fault's start to its first anomaly and to its opening, from "
                "the fault's end to its resolution, and its file precision / recall (files flagged for the "
                "fault). Spurious: incidents holding none of any fault's labelled files.\n\n")
        Path(args.markdown).write_text(head + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
