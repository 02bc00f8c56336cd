"""Streaming throughput on Beam's in-process runner: stagewatch's job beside two plain Beam pipelines.

    python benchmarks/stream_throughput.py [--rate 6] [--workdir DIR] [--repeats 2] [--json F] [--markdown F]

A benchmark, not a timed test: it measures and reports, it does not assert.

Input: ``stagewatch simulate --short --rate R --seed 42`` (three simulated hours with the five standard faults),
written once into the work directory. Every pipeline reads that file through the same ``TestStream``:
``stagewatch.stream.file_source.file_stream`` with the job's defaults (allowed lateness 60 s, watermark steps of
a third of a baseline interval = 100 s), so all see the same lines at the same event times and the same
watermark steps. All run in streaming mode on ``stagewatch.stream.local.LocalRunner`` (Beam's bundle-based
DirectRunner, which is what ``stagewatch run`` uses locally).

The pipelines (outputs go to a counting ``ParDo`` whose totals are read back from Beam's metrics — no files):

* ``bare``: ``ParseEvents`` → key by UID → ``Sessions(3600 s)``, allowed lateness 60 s → ``GroupByKey`` →
  (uid, event count). The least any per-UID streaming job on this runner has to do.
* ``stagewatch``: ``stagewatch.stream.pipeline.build`` (parse, dedup, traces, baselines, judging, stalls) with
  the options' defaults and the stage order inferred as ``construct`` does.
* ``robustzscore``: the same stage durations fed to ``apache_beam.ml.anomaly``, computed the simple way:
  ``ParseEvents`` → key by UID → ``Sessions(3600 s)`` → ``GroupByKey`` → sort by time → (stage, ms since the
  previous event) per consecutive pair → global window → ``AnomalyDetection(RobustZScore(features=["value"]))``
  keyed by stage on ``beam.Row(value=ms)``. The global window is what makes it one model per stage (state is
  per key and window: left in the session windows, every UID session would start its own empty model).

``LocalRunner`` applies fixes to the in-process runner's per-bundle bookkeeping (``fixes``; listed and
explained in ``stagewatch/stream/local/patches.py``) for the length of a run. Every run is its own subprocess
(a fresh process each: no warm caches, its own peak RSS); each variant runs both with them (``stagewatch run``'s
runner) and without them (Beam's runner as shipped, but for the two corrections, which the job needs to run,
or to run right, and are always applied). The child times wall clock
around ``p.run().wait_until_finish()`` only: building the ``TestStream`` from the file, inferring the stage
order and constructing the graph are excluded (they are the same work for every pipeline, or not the
runner's). It also reports its CPU time over the same span, its peak RSS, and how many steps and bundles
the runner ran (what its time follows).

Runs alternate (bare, stagewatch, robustzscore, ... then again) ``--repeats`` times; the best (fastest) of each
variant is reported. Throughput is lines of the file (every line goes through the parser; a few are junk
and rejected) per second. The figures that matter are the ratios stagewatch / bare (target ≥ 0.7) and
stagewatch / robustzscore (target ≥ 1.5): this machine is shared and noisy, absolute events/s move with
whatever else runs, but pipelines timed side by side, alternating, in the same minutes, drift together.
A run that exceeds ``--timeout`` is killed and reported as such.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam

# (pipeline, runner fixes) per variant name.
VARIANTS: dict[str, tuple[str, bool]] = {
    "bare": ("bare", True),
    "stagewatch": ("stagewatch", True),
    "robustzscore": ("robustzscore", True),
    "bare-unfixed": ("bare", False),
    "stagewatch-unfixed": ("stagewatch", False),
    "robustzscore-unfixed": ("robustzscore", False),
}
TARGETS = {"stagewatch/bare": 0.7, "stagewatch/robustzscore": 1.5}


# --- the child: one pipeline, one run -------------------------------------------------------------------------


# Outputs are counted here, in the child's own memory, not with Beam counters: on this runner in streaming
# mode a counter's committed (and attempted) value keeps only the first bundle of each step (a TestStream of
# 2 x 50 elements counts 50), so Beam's metrics would report 1 parsed event for 7,000 lines. The DoFns are
# pickled by reference (this module is imported by name in the child), so they all add to this one tally.
TALLY: dict[str, int] = {}
_TALLY_LOCK = threading.Lock()


def _add(counts: dict[str, int]) -> None:
    with _TALLY_LOCK:
        for k, n in counts.items():
            TALLY[k] = TALLY.get(k, 0) + n


class _Tally(beam.DoFn):
    """Counts what reaches it; emits nothing."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._n = 0

    def start_bundle(self) -> None:
        self._n = 0

    def process(self, element: Any) -> Iterator[Any]:
        self._n += 1
        return iter(())

    def finish_bundle(self) -> None:
        _add({self._name: self._n})


class _TallyResults(beam.DoFn):
    """Counts the anomaly detector's results and how many it labelled outliers."""

    def start_bundle(self) -> None:
        self._scored = self._flagged = 0

    def process(self, element: tuple[str, Any]) -> Iterator[Any]:
        self._scored += 1
        self._flagged += any(pr.label == 1 for pr in element[1].predictions)
        return iter(())

    def finish_bundle(self) -> None:
        _add({"scored": self._scored, "flagged": self._flagged})


def _identity(kv: tuple[str, beam.Row]) -> tuple[str, beam.Row]:
    return kv


def _uid_key(ev: Any) -> tuple[str, Any]:
    return ev.uid, ev


def _event_count(kv: tuple[str, Iterable[Any]]) -> tuple[str, int]:
    return kv[0], sum(1 for _ in kv[1])


def _durations(kv: tuple[str, Iterable[Any]]) -> Iterator[tuple[str, beam.Row]]:
    """A session's events in time order; per consecutive pair, the later stage and the milliseconds it took."""
    events = sorted(kv[1], key=lambda ev: ev.t_us)
    for prev, ev in itertools.pairwise(events):
        yield ev.stage, beam.Row(value=(ev.t_us - prev.t_us) / 1000.0)


def _sessions(events: beam.PCollection, gap_s: float, lateness_s: float) -> beam.PCollection:
    from apache_beam.transforms.window import Sessions

    return (
        events
        | "KeyByUid" >> beam.Map(_uid_key).with_output_types(tuple[str, Any])
        | "Sessions" >> beam.WindowInto(Sessions(gap_s), allowed_lateness=lateness_s)
        | "GroupByUid" >> beam.GroupByKey()
    )


def _defaults() -> dict[str, str]:
    from stagewatch.stream.options import PARAMETERS

    return {p.name: p.default for p in PARAMETERS if p.default is not None}


def child(kind: str, fixes: bool, path: str) -> dict[str, Any]:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.transforms.window import GlobalWindows

    from stagewatch.core.baselines import BaselineConfig
    from stagewatch.core.parser import Parser
    from stagewatch.core.stages import infer_from_events
    from stagewatch.core.timeutil import US_PER_S
    from stagewatch.core.traces import TraceRules
    from stagewatch.stream.file_source import file_stream
    from stagewatch.stream.local import LocalRunner
    from stagewatch.stream.pipeline import build
    from stagewatch.stream.steps.parse import ParseEvents

    d = _defaults()
    gap_s, lateness_s = float(d["session_gap_s"]), float(d["allowed_lateness_s"])
    baseline = BaselineConfig(half_life_s=float(d["half_life_s"]))
    # As construct() does for a local run: watermark steps of a third of a baseline interval.
    stream, sample, end_us = file_stream(path, int(lateness_s * US_PER_S), baseline.interval_us // 3)
    n_lines = sum(len(getattr(ev, "timestamped_values", ())) for ev in stream._events)  # every line of the file

    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner=LocalRunner(fixes=None if fixes else ()), options=options)
    lines = p | "ReadLogFile" >> stream
    if kind == "stagewatch":
        rules = TraceRules(infer_from_events(sample), stall_factor=float(d["stall_factor"]), ttl_s=gap_s)
        out = build(lines, rules, baseline, stamp=True, end_us=end_us)
        out.anomalies | "TallyAnomalies" >> beam.ParDo(_Tally("anomalies"))
        out.traces | "TallyTraces" >> beam.ParDo(_Tally("traces"))
        out.dead_letters | "TallyDeadLetters" >> beam.ParDo(_Tally("dead_letters"))
    else:
        events = (lines | "Parse" >> ParseEvents(Parser(), stamp=True)).events
        grouped = _sessions(events, gap_s, lateness_s)
        if kind == "bare":
            grouped | "CountEvents" >> beam.Map(_event_count) | "TallySessions" >> beam.ParDo(_Tally("sessions"))
        elif kind == "robustzscore":
            from apache_beam.ml.anomaly.detectors.robust_zscore import RobustZScore
            from apache_beam.ml.anomaly.transforms import AnomalyDetection

            _ = (
                grouped
                | "Durations" >> beam.FlatMap(_durations)
                | "OneModelPerStage" >> beam.WindowInto(GlobalWindows())
                # AnomalyDetection needs a keyed type hint to treat the first item as the key.
                | "Typed" >> beam.Map(_identity).with_output_types(tuple[str, beam.Row])
                | "Detect" >> AnomalyDetection(RobustZScore(features=["value"]))
                | "TallyResults" >> beam.ParDo(_TallyResults())
            )
        else:
            raise ValueError(f"unknown pipeline {kind!r}")

    bundles = _count_bundles()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)

    counters = dict(TALLY)
    peak_mb = 0.0
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak_mb = int(line.split()[1]) / 1024
    return {
        "lines": n_lines,
        "seconds": seconds,
        "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "peak_rss_mb": round(peak_mb, 1),
        "counters": counters,
        "bundles": sum(bundles.values()),
        "steps": len(bundles),
    }


def _count_bundles() -> dict[str, int]:
    """Bundles run per step (what this runner's cost follows): counted where its executor runs one. A counter
    increment per bundle, the same for every variant."""
    from apache_beam.runners.direct import executor

    counts: dict[str, int] = {}
    call = executor.TransformExecutor.call

    def counted_call(self: Any, state_sampler: Any) -> Any:
        label = self._applied_ptransform.full_label
        counts[label] = counts.get(label, 0) + 1
        return call(self, state_sampler)

    executor.TransformExecutor.call = counted_call  # type: ignore[method-assign]
    return counts


# --- the parent: alternate the variants, each run a fresh process --------------------------------------------


def run_variant(variant: str, path: Path, timeout_s: float) -> dict[str, Any]:
    kind, fixes = VARIANTS[variant]
    # Imported by name (not run as __main__), so that its DoFns pickle by reference.
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            "import stream_throughput; sys.exit(stream_throughput.main())")
    cmd = [sys.executable, "-c", code, "--child", kind, "--input", str(path)]
    if not fixes:
        cmd.append("--unfixed")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child before raising
        return {"variant": variant, "status": f"killed after {timeout_s:.0f} s (timeout)",
                "load_1min_before": load_before}
    record: dict[str, Any] = {"variant": variant, "load_1min_before": load_before,
                              "process_seconds": round(time.perf_counter() - started, 2)}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        record["status"] = f"crashed (exit {done.returncode}): " + " | ".join(tail)
        return record
    record.update(json.loads(done.stdout.strip().splitlines()[-1]))
    record["status"] = "ok"
    return record


def summarize(runs: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    best: dict[str, Any] = {}
    for v in variants:
        ok = [r for r in runs if r["variant"] == v and r["status"] == "ok"]
        failed = [r["status"] for r in runs if r["variant"] == v and r["status"] != "ok"]
        if not ok:
            best[v] = {"status": failed[0] if failed else "not run", "failures": failed}
            continue
        r = min(ok, key=lambda r: r["seconds"])
        best[v] = {
            "status": "ok",
            "lines": r["lines"],
            "best_seconds": round(r["seconds"], 2),
            "all_seconds": [round(x["seconds"], 2) for x in ok],
            "events_per_s": round(r["lines"] / r["seconds"], 1),
            "cpu_seconds_of_best": round(r["cpu_seconds"], 2),
            "min_cpu_seconds": round(min(x["cpu_seconds"] for x in ok), 2),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in ok),
            "bundles": r.get("bundles"),
            "steps": r.get("steps"),
            "counters": r["counters"],
            "failures": failed,
        }
    ratios: dict[str, Any] = {}
    for suffix in ("", "-unfixed"):
        sw = best.get(f"stagewatch{suffix}", {})
        for other in ("bare", "robustzscore"):
            o = best.get(f"{other}{suffix}", {})
            name = f"stagewatch{suffix}/{other}{suffix}"
            if sw.get("status") == "ok" and o.get("status") == "ok":
                ratios[name] = {
                    "wall": round(sw["events_per_s"] / o["events_per_s"], 3),
                    "cpu": round(o["min_cpu_seconds"] / sw["min_cpu_seconds"], 3),
                }
    if best.get("stagewatch", {}).get("status") == "ok" and best.get("stagewatch-unfixed", {}).get("status") == "ok":
        ratios["stagewatch/stagewatch-unfixed"] = {
            "wall": round(best["stagewatch"]["events_per_s"] / best["stagewatch-unfixed"]["events_per_s"], 3),
            "cpu": round(best["stagewatch-unfixed"]["min_cpu_seconds"] / best["stagewatch"]["min_cpu_seconds"], 3),
        }
    targets = {}
    for name, target in TARGETS.items():
        got = ratios.get(name, {}).get("wall")
        targets[name] = {"target": target, "ratio": got, "met": None if got is None else got >= target}
    return {"best": best, "ratios": ratios, "targets": targets}


def table(summary: dict[str, Any]) -> list[str]:
    out = [
        "| variant | runner fixes | best s | all runs s | events/s (best) | CPU s (min) | peak RSS MB | steps run "
        "| bundles run | outputs |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for v, b in summary["best"].items():
        fixes = "no" if v.endswith("-unfixed") else "yes"
        if b["status"] != "ok":
            out.append(f"| {v} | {fixes} | – | – | – | – | – | – | – | **{b['status']}** |")
            continue
        counters = ", ".join(f"{k} {n:,}" for k, n in sorted(b["counters"].items()))
        fails = f" ({len(b['failures'])} failed run(s): {b['failures']})" if b["failures"] else ""
        out.append(
            f"| {v} | {fixes} | {b['best_seconds']:.1f} | {', '.join(f'{s:.1f}' for s in b['all_seconds'])}{fails} "
            f"| {b['events_per_s']:,.0f} | {b['min_cpu_seconds']:.1f} | {b['peak_rss_mb']:.0f} | {b['steps']} "
            f"| {b['bundles']:,} | {counters} |"
        )
    return out


def ratio_lines(summary: dict[str, Any]) -> list[str]:
    out = ["| ratio (throughput) | wall clock, best of | CPU time, least | target | met |", "|---|---:|---:|---:|---|"]
    for name, r in summary["ratios"].items():
        t = TARGETS.get(name)
        met = "" if t is None else ("**yes**" if r["wall"] >= t else "**no**")
        out.append(f"| {name} | {r['wall']:.3f} | {r['cpu']:.3f} | {'' if t is None else f'≥ {t}'} | {met} |")
    for name, t in summary["targets"].items():
        if t["ratio"] is None:
            out.append(f"| {name} | – | – | ≥ {t['target']} | not measured (a variant failed) |")
    return out


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Streaming throughput: stagewatch beside plain Beam pipelines (bundle-based DirectRunner)",
        "",
        f"Produced by `{meta['command']}` on {meta['date']}.",
        "",
        f"Input: `stagewatch simulate --short --rate {meta['rate']:g} --seed {meta['seed']}` — "
        f"{meta['lines']:,} lines, the same `TestStream` (event times, watermark steps of 100 s, allowed "
        "lateness 60 s) for every pipeline. Each run is a fresh process; wall clock around "
        "`p.run().wait_until_finish()` only; best of "
        f"{meta['repeats']} alternating runs. Machine: {meta['cpus']} CPUs, shared; Python {meta['python']}, "
        f"Beam {meta['beam']}. Method and pipelines: the module docstring of `benchmarks/stream_throughput.py`.",
        "",
        *table(summary),
        "",
        "Ratios of throughput (> 1: stagewatch is faster). Targets are on wall clock (the CPU-time ratio is given "
        "as a check: this runner works on one core, so CPU time is less disturbed by other load).",
        "",
        *ratio_lines(summary),
        "",
        *notes(summary),
    ]
    return "\n".join(lines) + "\n"


def notes(summary: dict[str, Any]) -> list[str]:
    best = summary["best"]
    out = ["Notes:", ""]
    for name, t in summary["targets"].items():
        if t["ratio"] is not None:
            verdict = "met" if t["met"] else "not met"
            out.append(f"* {name}: {t['ratio']:.3f}× against a target of ≥ {t['target']}× — **{verdict}**.")
    for kind in ("bare", "stagewatch", "robustzscore"):
        a, b = best.get(kind, {}), best.get(f"{kind}-unfixed", {})
        if a.get("status") == "ok" and b.get("status") == "ok":
            out.append(f"* The runner fixes of `LocalRunner`: {kind} {b['best_seconds']:.1f} s without them, "
                       f"{a['best_seconds']:.1f} s with them ({b['best_seconds'] / a['best_seconds']:.2f}×).")
    out += [
        "* Steps run and bundles run (of the best run): the steps that ran at least one bundle, and how many "
        "bundles the runner ran in all -- a step costs about the same per bundle whatever the bundle holds, so "
        "this, not the events, is what a run's time follows on this runner.",
        "* Runs without the fixes still have the runner's two corrections (an empty bundle scheduled on a ParDo "
        "with a side input crashed it; its stateful steps' timers did not hold their output watermark): the job "
        "needs them to run, or to run right (`stagewatch/stream/local/patches.py`).",
        "* The RobustZScore pipeline re-windows the durations into the global window before `AnomalyDetection`: "
        "its model is keyed state, and state is per key and window, so left in the UID session windows every "
        "session would score its handful of durations against an empty model of its own.",
        "* Outputs are counted in the child process, not with Beam counters: in streaming mode this runner's "
        "metrics keep only the first bundle of each step.",
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=6.0, help="simulated files per minute at the peak (default 6)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", default="/tmp/stagewatch-bench", help="where the simulated input is written")
    ap.add_argument("--input", help="a logs.jsonl to use instead of simulating")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each variant (best is reported)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds before a run is killed (default 1800)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--markdown", help="write a markdown report here")
    ap.add_argument("--child", choices=("bare", "stagewatch", "robustzscore"), help=argparse.SUPPRESS)
    ap.add_argument("--unfixed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        assert args.input
        print(json.dumps(child(args.child, not args.unfixed, args.input)))
        return 0

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}")
    if args.input:
        logs = Path(args.input)
    else:
        from stagewatch.evaluation.simulate import SHORT_FAULTS, SHORT_HOURS, SHORT_START, SimConfig, simulate_to_dir

        work = Path(args.workdir) / f"short-rate{args.rate:g}-seed{args.seed}"
        logs = work / "logs.jsonl"
        if not logs.exists():  # as `stagewatch simulate OUT --short --rate R --seed S`
            cfg = SimConfig(seed=args.seed, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=args.rate,
                            faults=SHORT_FAULTS)
            simulate_to_dir(cfg, work)

    runs: list[dict[str, Any]] = []
    for k in range(args.repeats):
        for v in variants:
            r = run_variant(v, logs, args.timeout)
            r["round"] = k + 1
            runs.append(r)
            shown = f"{r['seconds']:.1f} s, {r['lines'] / r['seconds']:,.0f} events/s" if r["status"] == "ok" else r[
                "status"]
            print(f"round {k + 1}  {v:<22} {shown}", file=sys.stderr, flush=True)

    summary = summarize(runs, variants)
    n_lines = next((r["lines"] for r in runs if r["status"] == "ok"), 0)
    meta = {
        "command": "python " + " ".join(shlex.quote(a) for a in ["benchmarks/stream_throughput.py", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(),
        "input": str(logs),
        "rate": args.rate,
        "seed": args.seed,
        "lines": n_lines,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "beam": beam.__version__,
    }
    print("\n".join(table(summary)))
    print()
    print("\n".join(ratio_lines(summary)))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, **summary, "runs": runs}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(summary, meta), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
