"""``stagewatch replay``: the backtest over log files, with every output the streaming job makes."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import orjson

from stagewatch.cli.common import add_uid_key_options, check_stages, log_inputs, uid_key
from stagewatch.core.lines import LINE_RULES
from stagewatch.core.privacy import NONE, PAYLOADS, default_payload

__all__ = ["TRUNCATED_INPUT", "add"]

#: The exit status of a replay whose input broke off (a truncated or corrupt .gz): all it could read was processed.
TRUNCATED_INPUT = 3


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="run the detector over log files (backtest)",
        description="Replay Cloud Logging entries (JSON lines, pretty-printed JSON, a JSON array as gcloud "
        "logging read --format=json prints it, a folder of them, .gz of any, or - for stdin) through the "
        "detection core in event-time order and write anomalies as JSON lines.",
        epilog="example: stagewatch replay logs.json -o anomalies.jsonl --incidents incidents.jsonl",
    )
    p.add_argument("logs", nargs="+", help="log files or folders: JSON lines, pretty JSON, a JSON array, .gz of "
                   "any, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="anomalies JSONL (default: stdout)")
    p.add_argument("--traces", help="write one trace summary per file (JSONL) here")
    p.add_argument("--dead-letters", help="write rejected lines with their reason (JSONL) here")
    p.add_argument("--incidents", help="write incident events (opened / updated / resolved; JSONL) here")
    p.add_argument("--lots", help="write lot_incomplete and lot_slow records (JSONL) here")
    p.add_argument("--summary-json", help="write the closing summary as JSON here")
    p.add_argument("--stages", help="stage order, comma-separated (a trailing ? marks a stage optional); "
                   "inferred from the data when absent")
    p.add_argument("--force", action="store_true",
                   help="run with the stages given even when the data's first events contradict them")
    p.add_argument("--config", help="TOML config file (stages, field paths, detector and baseline settings)")
    p.add_argument("--allowed-lateness", type=float, metavar="SECONDS",
                   help="out-of-orderness tolerated behind the newest event (default 60)")
    p.add_argument("--max-ahead", type=float, metavar="SECONDS",
                   help="an event dated further ahead of the logs' own clock is set aside as future (default 600)")
    p.add_argument("--max-age", type=float, metavar="SECONDS",
                   help="an event dated further behind it, as too_old (default 604800, 7 days)")
    p.add_argument("--stall-factor", type=float, help="stall deadline = this x the next stage's alert line "
                   "(default 8)")
    p.add_argument("--half-life", type=float, metavar="SECONDS", help="baseline half-life (default 10800)")
    p.add_argument("--baseline-interval", type=int, metavar="SECONDS",
                   help="how often baselines fold in what they learned and alert lines are redrawn (default 300; "
                   "the streaming job's --baseline_interval_s, which takes 60 to 3600)")
    p.add_argument("--warmup", type=float, metavar="N", help="samples a baseline needs before it judges "
                   "(default 30)")
    p.add_argument("--line", choices=LINE_RULES, help="how alert lines are read: tail (default; from each stage's "
                   "estimated p99.9) or body (from the lower half of its durations); docs/detection.md")
    add_uid_key_options(p)
    p.add_argument("--dead-letter-payload", choices=PAYLOADS,
                   help="how much of a rejected line its dead letter keeps: trimmed (the first 1,000 characters; "
                   "default), full (the whole line) or none (the default with --hash-uids: a rejected line may "
                   "hold a raw uid)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--processes", type=int, choices=(1, 2),
                   help="2: read and parse the logs in a second process while this one runs traces and baselines "
                   "(same output, ~40%% less time with a core to spare); 1: one process. Default: 2 for inputs "
                   "of 16 MB or more on a machine with two cores or more, else 1 (always 1 for stdin)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from stagewatch.backtest.config import load_settings
    from stagewatch.backtest.replay import replay_files, summary_text
    from stagewatch.cli.common import JsonlWriter, for_terminal, progress_bar, stderr_is_tty
    from stagewatch.core.feed import BacktestFeed
    from stagewatch.core.parser import Parser
    from stagewatch.core.records import Anomaly, IncidentEvent, LotRecord, TraceSummary, without_payload

    for flag, value, least, what in (("--warmup", args.warmup, 1, "samples"),
                                     ("--stall-factor", args.stall_factor, 1, "times the next stage's alert line"),
                                     ("--allowed-lateness", args.allowed_lateness, 0, "seconds"),
                                     ("--half-life", args.half_life, 1, "seconds"),
                                     ("--baseline-interval", args.baseline_interval, 1, "seconds")):
        if value is not None and not least <= value < math.inf:  # (not: NaN too)
            raise ValueError(f"{flag} must be at least {least} ({what}), got {value:g}")
    args.logs = log_inputs(args.logs)
    settings = load_settings(
        args.config,
        args.stages,
        detector_overrides={"allowed_lateness_s": args.allowed_lateness, "stall_factor": args.stall_factor,
                            "max_ahead_s": args.max_ahead, "max_age_s": args.max_age},
        baseline_overrides={"half_life_s": args.half_life, "interval_s": args.baseline_interval,
                            "warmup_n": args.warmup, "line": args.line},
    )
    outputs = [o for o in (args.output, args.traces, args.dead_letters, args.incidents, args.lots, args.summary_json)
               if o and o != "-"]
    _check_outputs(args.logs, outputs)
    forced = check_stages(settings.order, args.logs, settings.mapping, args.force)
    key = uid_key(args)  # a missing key is said before any output is opened
    payload = default_payload(args.dead_letter_payload, hashed=key is not None)
    progress = stderr_is_tty() if args.progress is None else args.progress
    on_bytes, close_bar = progress_bar(args.logs, progress)
    anomalies = JsonlWriter(args.output, default_stdout=True)
    traces = JsonlWriter(args.traces) if args.traces else None
    dead = JsonlWriter(args.dead_letters) if args.dead_letters else None
    incidents = JsonlWriter(args.incidents) if args.incidents else None
    lots = JsonlWriter(args.lots) if args.lots else None
    follow = BacktestFeed(incidents=incidents is not None, lots=lots is not None)
    tables = {"incidents": incidents, "lots": lots}

    def write(rows: list[tuple[str, IncidentEvent | LotRecord]]) -> None:
        for table, row in rows:
            out = tables[table]
            if out is not None:
                out.write(row)

    def on_anomaly(a: Anomaly) -> None:
        anomalies.write(a)
        write(follow.anomaly(a))

    def on_summary(s: TraceSummary) -> None:
        if traces is not None:
            traces.write(s)
        write(follow.summary(s))

    complete = False
    try:
        stats = replay_files(
            args.logs,
            processes=args.processes,
            on_bytes=on_bytes,
            order=settings.order,
            parser=Parser(settings.mapping, uid_key=key, payload=payload),
            cfg=settings.detector,
            on_anomaly=on_anomaly,
            on_summary=on_summary if traces or follow.lot_tracker else None,
            on_dead_letter=(dead.write if payload != NONE else
                            lambda dl: dead.write(without_payload(dl))) if dead else None,
            on_arrival=(lambda arrival: write(follow.arrival(arrival))) if follow.tracker else None,
        )
        complete = True
    finally:
        close_bar()
        # Stopped (Ctrl-C, an error): the outputs stay <name>.partial, and say so.
        left = [w.close(complete) for w in (anomalies, traces, dead, incidents, lots) if w is not None]
        if any(left):
            print(for_terminal(f"stagewatch replay: stopped before the end; what was written is left as "
                               f"{', '.join(str(p) for p in left if p)}"), file=sys.stderr)
    print(for_terminal(summary_text(stats)), file=sys.stderr)
    if forced:
        print(for_terminal(f"stagewatch replay: --force: ran with the stages given although {forced}"),
              file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_bytes(orjson.dumps(stats.to_dict(), option=orjson.OPT_INDENT_2))
    if stats.counts.get("truncated_input"):
        # Everything that could be read was processed and written; the caller must know the input was not whole.
        print("stagewatch replay: an input was truncated or corrupt: read up to the break (see the dead letters, "
              f"reason truncated_input); exit status {TRUNCATED_INPUT}", file=sys.stderr)
        return TRUNCATED_INPUT
    if stats.events == 0:
        raise ValueError("no line was a stage event (each was rejected or blank: the summary above says why); if "
                         "your logs name the uid or the stage otherwise, map them with --config (docs/input.md)")
    return 0


def _check_outputs(inputs: list[str], outputs: list[str]) -> None:
    """One line for an output that would overwrite an input, be written twice, or is a folder."""
    seen: dict[str, str] = {}
    for out in outputs:
        path = Path(out)
        if path.is_dir():
            raise ValueError(f"output {out} is a folder: give a file name, e.g. {out.rstrip('/')}/anomalies.jsonl")
        real = os.path.realpath(out)
        if real in seen and not path.is_char_device():
            raise ValueError(f"{seen[real]} and {out} are the same file: give each output its own")
        seen[real] = out
        for log in inputs:
            if log != "-" and path.exists() and os.path.samefile(log, out):
                raise ValueError(f"output {out} is the input {log}: writing it would destroy the logs; give "
                                 "another file name")
