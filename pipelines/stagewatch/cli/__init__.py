"""The ``stagewatch`` command: replay (backtest), simulate, evaluate, run, notify-slack, explain, report,
bigquery."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from stagewatch.store.views import Query

__all__ = ["main"]


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="run the detector over log files (backtest)",
        description="Replay LogEntry JSON lines (plain, .gz, or - for stdin) through the detection core in "
        "event-time order and write anomalies as JSON lines.",
    )
    p.add_argument("logs", nargs="+", help="log files: plain JSON lines, .gz, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="anomalies JSONL (default: stdout)")
    p.add_argument("--traces", help="write one trace summary per file (JSONL) here")
    p.add_argument("--dead-letters", help="write rejected lines with their reason (JSONL) here")
    p.add_argument("--incidents", help="write incident events (opened / updated / resolved; JSONL) here")
    p.add_argument("--lots", help="write lot_incomplete and lot_slow records (JSONL) here")
    p.add_argument("--summary-json", help="write the closing summary as JSON here")
    p.add_argument("--stages", help="stage order, comma-separated (a trailing ? marks a stage optional); "
                   "inferred from the data when absent")
    p.add_argument("--config", help="TOML config file (stages, field paths, detector and baseline settings)")
    p.add_argument("--allowed-lateness", type=float, metavar="SECONDS",
                   help="out-of-orderness tolerated behind the newest event (default 60)")
    p.add_argument("--stall-factor", type=float, help="stall deadline = this x the next stage's alert line "
                   "(default 8)")
    p.add_argument("--half-life", type=float, metavar="SECONDS", help="baseline half-life (default 10800)")
    p.add_argument("--warmup", type=float, metavar="N", help="samples a baseline needs before it judges "
                   "(default 30)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--processes", type=int, choices=(1, 2),
                   help="2: read and parse the logs in a second process while this one runs traces and baselines "
                   "(same output, ~40%% less time with a core to spare); 1: one process. Default: 2 for inputs "
                   "of 16 MB or more on a machine with two cores or more, else 1 (always 1 for stdin)")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from stagewatch.backtest.config import load_settings
    from stagewatch.backtest.replay import progress_bar, replay_files, stderr_is_tty, summary_text, writer
    from stagewatch.core.events import Parser
    from stagewatch.core.feed import BacktestFeed
    from stagewatch.core.records import Anomaly, TraceSummary

    for path in args.logs:
        if path != "-" and not Path(path).is_file():
            raise ValueError(f"input {path} does not exist")
    settings = load_settings(
        args.config,
        args.stages,
        detector_overrides={"allowed_lateness_s": args.allowed_lateness, "stall_factor": args.stall_factor},
        baseline_overrides={"half_life_s": args.half_life, "warmup_n": args.warmup},
    )
    progress = stderr_is_tty() if args.progress is None else args.progress
    on_bytes, close_bar = progress_bar(args.logs, progress)
    anomalies = writer(args.output, default_stdout=True)
    traces = writer(args.traces) if args.traces else None
    dead = writer(args.dead_letters) if args.dead_letters else None
    incidents = writer(args.incidents) if args.incidents else None
    lots = writer(args.lots) if args.lots else None
    follow = BacktestFeed(incidents=incidents is not None, lots=lots is not None)
    tables = {"incidents": incidents, "lots": lots}

    def write(rows: list[tuple[str, dict[str, Any]]]) -> None:
        for table, row in rows:
            out = tables[table]
            if out is not None:
                out.write(row)

    def on_anomaly(a: Anomaly) -> None:
        anomalies.write(a.to_dict())
        write(follow.anomaly(a))

    def on_summary(s: TraceSummary) -> None:
        row = s.to_dict()
        if traces is not None:
            traces.write(row)
        write(follow.summary(row))

    try:
        stats = replay_files(
            args.logs,
            processes=args.processes,
            on_bytes=on_bytes,
            order=settings.order,
            parser=Parser(settings.mapping),
            cfg=settings.detector,
            on_anomaly=on_anomaly,
            on_summary=on_summary if traces or follow.lot_tracker else None,
            on_dead_letter=dead.write if dead else None,
            on_arrival=(lambda uid, stage, t_us: write(follow.arrival(uid, t_us))) if follow.tracker else None,
        )
    finally:
        close_bar()
        for w in (anomalies, traces, dead, incidents, lots):
            if w is not None:
                w.close()
    print(summary_text(stats), file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_bytes(orjson.dumps(stats.to_dict(), option=orjson.OPT_INDENT_2))
    return 0


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a realistic simulated log stream with injected faults and labels",
        description="Write OUTDIR/logs.jsonl (LogEntry lines in delivery order), OUTDIR/labels.jsonl (the "
        "injected faults' expected anomalies) and OUTDIR/manifest.json. Seeded: same seed, same output.",
    )
    p.add_argument("outdir")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hours", type=float, help="simulated span (default 24; 3 with --short)")
    p.add_argument("--rate", type=float, default=30.0, help="files per minute at the daily peak (default 30)")
    p.add_argument("--start", help="RFC 3339 start of the simulated span (default 2026-06-06T00:00:00Z; "
                   "midday with --short)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-faults", action="store_true", help="normal behaviour only")
    g.add_argument("--short", action="store_true",
                   help="three hours from midday with the five standard faults packed into them (a quick demo)")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from stagewatch.core.timeutil import parse_rfc3339_us
    from stagewatch.evaluation.simulate import (
        SHORT_FAULTS,
        SHORT_HOURS,
        SHORT_START,
        STANDARD_FAULTS,
        SimConfig,
        simulate_to_dir,
    )

    start = args.start or (SHORT_START if args.short else "2026-06-06T00:00:00Z")
    hours = args.hours or (SHORT_HOURS if args.short else 24.0)
    parse_rfc3339_us(start)
    faults = () if args.no_faults else SHORT_FAULTS if args.short else STANDARD_FAULTS
    cfg = SimConfig(seed=args.seed, start=start, hours=hours, peak_rate_per_min=args.rate, faults=faults)
    manifest = simulate_to_dir(cfg, Path(args.outdir))
    print(
        f"stagewatch simulate: {manifest['files']:,} files, {manifest['lines']:,} lines, "
        f"{manifest['labels']:,} labels, {len(manifest['faults'])} faults -> {args.outdir}/logs.jsonl",
        file=sys.stderr,
    )
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score anomalies against labels, or measure detection on public labelled data",
        description="stagewatch evaluate LABELS ANOMALIES: trace-level precision / recall / F1 per kind. "
        "stagewatch evaluate delag CSV...: per-request scores on DeLag files, beside static p99 and Beam's "
        "RobustZScore and ZScore.",
    )
    p.add_argument("inputs", nargs="+", metavar="ARG",
                   help="LABELS ANOMALIES (a JSONL file, or the --output_dir of stagewatch run); or: delag CSV... "
                   "(DeLag files, e.g. ../shared/data/delag/*/0*.csv); "
                   "or: nab [NAB_DIR] (default ../shared/data/nab)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--no-beam", action="store_true", help="delag: skip the Beam detectors (they take minutes)")
    p.add_argument("--markdown", help="delag, nab: write the tables here (markdown)")
    p.add_argument("--beam-cache", metavar="DIR",
                   help="delag: keep the Beam detectors' verdicts here and reuse them (they take minutes)")
    p.set_defaults(func=_cmd_evaluate)


def _read_anomalies(path: str) -> list[dict[str, Any]]:
    """A JSONL file, or the output folder of ``stagewatch run`` (its ``anomalies*.jsonl``)."""
    if not os.path.isdir(path):
        return _read_jsonl(path)
    files = sorted(glob.glob(os.path.join(glob.escape(path), "anomalies*.jsonl")))
    if not files:
        raise ValueError(f"{path} is a folder without anomalies*.jsonl (the output folder of stagewatch run?)")
    return [row for f in files for row in _read_jsonl(f)]


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n} is not JSON: {exc}") from exc
    return rows


def _cmd_evaluate_delag(args: argparse.Namespace) -> int:
    from stagewatch.evaluation.delag_eval import evaluate_delag, markdown

    paths = args.inputs[1:]
    if not paths:
        raise ValueError("evaluate delag needs DeLag CSV files, e.g. ../shared/data/delag/trainticket/0*.csv")
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"{path} does not exist")
    res = evaluate_delag(paths, beam=not args.no_beam, cache=args.beam_cache)
    # The command as a person types it: one glob per folder rather than forty file names.
    folders = sorted({str(Path(p).parent) for p in paths})
    shown = " ".join(f"{f}/*.csv" for f in folders) if len(paths) > 2 * len(folders) else " ".join(paths)
    command = "stagewatch evaluate delag " + shown + (" --no-beam" if args.no_beam else "")
    text = markdown(res, command)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(text)
    return 0


def _cmd_evaluate_nab(args: argparse.Namespace) -> int:
    from stagewatch.evaluation.nab import evaluate_nab, markdown

    root = args.inputs[1] if len(args.inputs) > 1 else "../shared/data/nab"
    if not (Path(root) / "labels" / "combined_windows.json").is_file():
        raise ValueError(f"{root} is not a NAB data folder (labels/combined_windows.json missing)")
    res = evaluate_nab(root)
    text = markdown(res, "stagewatch evaluate nab " + root)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(text)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from stagewatch.evaluation.scoring import score_kinds

    if args.inputs[0] == "delag":
        return _cmd_evaluate_delag(args)
    if args.inputs[0] == "nab":
        return _cmd_evaluate_nab(args)
    if len(args.inputs) != 2:
        raise ValueError("evaluate takes LABELS ANOMALIES, or: delag CSV...")
    labels, anomalies = args.inputs
    scores, delay = score_kinds(_read_jsonl(labels), _read_anomalies(anomalies))
    if args.json:
        print(orjson.dumps({"kinds": [s.to_dict() for s in scores], "stall_delay": delay}).decode())
        return 0
    print(f"{'kind':<12} {'tp':>6} {'fp':>6} {'fn':>6} {'precision':>10} {'recall':>8} {'f1':>6}")
    for s in scores:
        print(f"{s.kind:<12} {s.tp:>6} {s.fp:>6} {s.fn:>6} {s.precision:>10.3f} {s.recall:>8.3f} {s.f1:>6.3f}")
    if delay["n"]:
        print(f"stall detection delay after the file's last event: median {delay['median_s']} s, "
              f"p95 {delay['p95_s']} s, max {delay['max_s']} s (n={delay['n']})")
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    from stagewatch.stream.parameters import PARAMETERS

    p = sub.add_parser(
        "run",
        help="run the streaming job (DirectRunner locally over --input_file, or Dataflow from Pub/Sub)",
        description="Build and run the Beam pipeline. Locally: --input_file LOGS.jsonl --output_dir DIR. "
        "In production: --input_subscription projects/P/subscriptions/S with --output_topic and/or "
        "--bigquery_dataset, plus Beam's own options (--runner DataflowRunner, --project, --region, ...).",
    )
    for param in PARAMETERS:
        p.add_argument(f"--{param.name}", help=param.help + (f" (default {param.default})" if param.default else ""))
    p.set_defaults(func=_cmd_run, beam_args=[])


def _cmd_run(args: argparse.Namespace) -> int:
    import time

    from apache_beam.options.pipeline_options import PipelineOptions

    from stagewatch.stream.options import StagewatchOptions
    from stagewatch.stream.pipeline import run
    from stagewatch.stream.sinks import local_output_summary

    started = time.monotonic()
    run(list(args.beam_args))
    opts = PipelineOptions(list(args.beam_args)).view_as(StagewatchOptions)
    if opts.input_file and opts.output_dir:
        print(f"stagewatch run: {opts.input_file} in {time.monotonic() - started:.0f} s -> {opts.output_dir}\n"
              + local_output_summary(opts.output_dir), file=sys.stderr)
    return 0


def _add_notify_slack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "notify-slack",
        help="post the job's incident events to Slack (Block Kit, via an incoming webhook or a bot token)",
        description="Pull incident events from a subscription of the job's topic and post each to Slack. The "
        "webhook URL comes from ${STAGEWATCH_SLACK_WEBHOOK} or --webhook-secret (Secret Manager) and is never "
        "printed. With --channel, a bot token (${STAGEWATCH_SLACK_BOT_TOKEN} or --token-secret) posts through "
        "Slack's Web API instead: updates and the resolution thread onto the opening message, which the "
        "resolution also marks resolved. 429 and 5xx are retried with backoff; other 4xx are counted and reported.",
    )
    p.add_argument("--subscription", required=True, help="projects/P/subscriptions/S (of the incident topic)")
    p.add_argument("--webhook-secret", help="Secret Manager secret holding the webhook URL: projects/P/secrets/S")
    p.add_argument("--channel", help="post with a bot token to this channel id (threads resolutions)")
    p.add_argument("--token-secret", help="Secret Manager secret holding the bot token: projects/P/secrets/S")
    p.add_argument("--thread-state", metavar="FILE",
                   help="JSON file remembering each open incident's message, so threads survive a restart")
    p.add_argument("--slack-api", default="https://slack.com/api", help=argparse.SUPPRESS)  # tests: a local fake
    p.add_argument("--project", help="project for the Cloud Logging links (default: the subscription's)")
    p.add_argument("--max-messages", type=int, help="stop after this many messages (default: run until stopped)")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS", help="stop after this long with no message")
    p.set_defaults(func=_cmd_notify_slack)


def _cmd_notify_slack(args: argparse.Namespace) -> int:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from stagewatch.notify.slack import BOT_TOKEN_ENV, SlackApi, Webhook, notify, secret_value, webhook_url

    match = re.match(r"^projects/([^/]+)/subscriptions/[^/]+$", args.subscription)
    if not match:
        raise ValueError(f"--subscription must look like projects/PROJECT/subscriptions/NAME, got "
                         f"{args.subscription!r}")
    hook: Webhook
    if args.channel:
        hook = SlackApi(url=args.slack_api, channel=args.channel, state_path=args.thread_state,
                        token=secret_value(BOT_TOKEN_ENV, "--token-secret", args.token_secret))
    elif args.token_secret or args.thread_state:
        raise ValueError("--token-secret and --thread-state are for the bot-token mode: give --channel too")
    else:
        hook = Webhook(webhook_url(args.webhook_secret))
    subscriber = pubsub_v1.SubscriberClient()
    seen = skipped = 0
    try:
        seen, skipped = notify(subscriber, args.subscription, hook, args.project or match.group(1),
                               args.max_messages, args.idle_exit, log=lambda line: print(line, file=sys.stderr))
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()
    counts = " · ".join(f"{k} {v}" for k, v in sorted(hook.stats.items())) or "nothing posted"
    print(f"stagewatch notify-slack: {seen} messages, {skipped} not incidents; {counts}", file=sys.stderr)
    return 0 if not any(k.startswith("failed_") for k in hook.stats) else 1


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="one file's timeline: each stage, when, how long, what is usual at that hour, the verdict",
        description="Read a local output folder (stagewatch run --output_dir) or the streaming job's BigQuery "
        "dataset and print one file's journey.",
    )
    p.add_argument("uid")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--input", metavar="DIR", help="the --output_dir of stagewatch run")
    where.add_argument("--bigquery", metavar="PROJECT.DATASET", help="the --bigquery_dataset of the streaming job")
    p.add_argument("--day", metavar="YYYY-MM-DD",
                   help="the day (UTC) the file began: only that day's partitions (and the next) are read")
    p.set_defaults(func=_cmd_explain)


@contextlib.contextmanager
def _bigquery_errors(dataset: str) -> Iterator[None]:
    """BigQuery's refusals (no such dataset, no permission, a bad query) and missing credentials: one line,
    exit status 2, like every other error of the command."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except GoogleAPIError as exc:
        raise ValueError(f"BigQuery refused ({dataset}): {str(exc).splitlines()[0]}") from exc
    except GoogleAuthError as exc:
        raise ValueError(f"no credentials for BigQuery ({exc}); run: gcloud auth application-default login") from exc


def _cmd_explain(args: argparse.Namespace) -> int:
    from stagewatch.investigate.explain import explain
    from stagewatch.store.readers import BigQueryTables, LocalTables

    day_us = None
    if args.day is not None:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.day):
            raise ValueError(f"--day must be a date such as 2026-06-06, got {args.day!r}")
        day_us = _time_option("--day", f"{args.day}T00:00:00Z")
    if args.input is not None:
        print(explain(args.uid, LocalTables(args.input), day_us))
        return 0
    with _bigquery_errors(args.bigquery):
        print(explain(args.uid, BigQueryTables(args.bigquery), day_us))
    return 0


def _add_bigquery(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bigquery",
        help="create the views over the job's BigQuery tables; run or print the parameterised queries",
        description="The views and queries of templates/bigquery/ (stagewatch bigquery list shows them).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="{create,query,sql,list}")
    create = actions.add_parser("create", help="create the dataset, its missing tables, and (or replace) the views")
    query = actions.add_parser("query", help="run a query and print its rows")
    show = actions.add_parser("sql", help="print a query's SQL for the dataset (for bq query or the console)")
    actions.add_parser("list", help="the queries, their parameters and their views")
    for action in (create, query, show):
        action.add_argument("--dataset", required=True, metavar="PROJECT.DATASET")
    for action in (query, show):
        action.add_argument("name", help="a query (stagewatch bigquery list) or a view")
    query.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a query parameter, e.g. day=2026-06-06 (repeatable; defaults as listed)")
    query.add_argument("--json", action="store_true", help="print the rows as JSON lines")
    p.set_defaults(func=_cmd_bigquery)


def _format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    if isinstance(value, list):
        return ",".join(map(_format_cell, value))
    return str(value)


def _print_rows(rows: list[dict[str, Any]]) -> None:
    """An aligned table: the columns as the query names them."""
    if not rows:
        print("(no rows)")
        return
    columns = list(rows[0])
    cells = [[_format_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _cmd_bigquery(args: argparse.Namespace) -> int:
    from stagewatch.store.schemas import bigquery_client, dataset_id
    from stagewatch.store.views import load_queries

    queries = load_queries()
    if args.action == "list":
        for q in queries.values():
            params = " ".join(f"--param {p.name}=<{p.type}>" + (f" (default {p.default})" if p.default else "")
                              for p in q.params)
            print(f"{q.name} {params}\n  {q.summary}\n  {q.reads}")
            for v in q.views:
                print(f"  view {v.name}: " + "; ".join(f"{k} = {e}" for k, e in v.bindings.items()))
        return 0
    dataset = dataset_id(args.dataset)
    if args.action == "sql":
        query = queries.get(args.name)
        if query is None:
            raise ValueError(f"no query {args.name!r}; the queries: {', '.join(queries)}")
        print(query.sql(dataset), end="")
        return 0
    with _bigquery_errors(dataset):
        return _bigquery_action(args, dataset, queries, bigquery_client(dataset.split(".")[0]))


def _bigquery_action(args: argparse.Namespace, dataset: str, queries: dict[str, Query], client: Any) -> int:
    from stagewatch.store.readers import json_shaped
    from stagewatch.store.views import create_all, run_query

    if args.action == "create":
        tables, created = create_all(client, dataset)
        print(f"stagewatch bigquery: {dataset}: tables created: {', '.join(tables) or 'none (all there)'}; "
              f"views created or replaced: {', '.join(created)}")
        return 0
    views = {v.name: q.name for q in queries.values() for v in q.views}
    if args.name in views:
        if args.param:
            raise ValueError(f"{args.name} is a view: it takes no parameters (its query {views[args.name]} does)")
        rows = [dict(r.items()) for r in client.query(f"SELECT * FROM `{dataset}.{args.name}`").result()]
    elif args.name in queries:
        values: dict[str, str] = {}
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ValueError(f"--param takes NAME=VALUE, got {item!r}")
            values[name] = value
        rows = run_query(client, dataset, queries[args.name], values)
    else:
        raise ValueError(f"no query or view {args.name!r}; the queries: {', '.join(queries)}; the views: "
                         f"{', '.join(views)}")
    shaped = [json_shaped(row) for row in rows]
    if args.json:
        for row in shaped:
            print(orjson.dumps(row).decode())
    else:
        _print_rows(shaped)
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page: latency by stage, incidents, tenants, end to end, lots",
        description="Read a local output folder (stagewatch run --output_dir) or the streaming job's BigQuery "
        "dataset and write one HTML file that works offline: per-stage latency over time with the usual band "
        "and the anomalies, the incidents, a per-tenant breakdown, the end-to-end distribution and the lots "
        "that did not complete. Prints the file's path.",
    )
    p.add_argument("input", metavar="DIR", nargs="?", help="the --output_dir of stagewatch run")
    p.add_argument("--bigquery", metavar="PROJECT.DATASET",
                   help="read the streaming job's dataset instead (default span: the 24 hours before --until or now)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--since", metavar="RFC3339", help="only rows from this time on, e.g. 2026-06-06T00:00:00Z")
    p.add_argument("--until", metavar="RFC3339", help="only rows before this time")
    p.set_defaults(func=_cmd_report)


def _time_option(name: str, value: str | None) -> int | None:
    from stagewatch.core.timeutil import parse_rfc3339_us

    if value is None:
        return None
    try:
        return parse_rfc3339_us(value)
    except ValueError:
        raise ValueError(f"{name} must be an RFC 3339 time such as 2026-06-06T00:00:00Z, got {value!r}") from None


def _cmd_report(args: argparse.Namespace) -> int:
    from stagewatch.core.timeutil import US_PER_S
    from stagewatch.investigate.report import render_report
    from stagewatch.store.readers import BigQueryTables, LocalTables, Tables
    from stagewatch.store.schemas import TABLES

    if (args.input is None) == (args.bigquery is None):
        raise ValueError("give either a local output folder (DIR) or --bigquery PROJECT.DATASET")
    since_us, until_us = _time_option("--since", args.since), _time_option("--until", args.until)
    out = Path(args.output).resolve()
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {args.output}: folder {out.parent} does not exist")
    tables: Tables
    if args.bigquery is not None:
        # Every table read is bounded on its partition column: a day's report reads a day's partitions.
        if since_us is None:
            until_us = until_us if until_us is not None else int(time.time() * US_PER_S)
            since_us = until_us - 24 * 3600 * US_PER_S
        with _bigquery_errors(args.bigquery):  # no credentials: one line, not a traceback
            tables = BigQueryTables(args.bigquery)
    else:
        tables = LocalTables(args.input)
        # An empty page from the wrong folder (demo instead of demo/out) would read as "all quiet".
        if not any(glob.glob(os.path.join(glob.escape(args.input), f"{t}*.jsonl")) for t in TABLES):
            raise ValueError(f"{args.input} holds none of {', '.join(f'{t}*.jsonl' for t in TABLES)} (give the "
                             "--output_dir of stagewatch run)")
    with _bigquery_errors(args.bigquery or ""):
        html = render_report(tables, since_us=since_us, until_us=until_us)
    out.write_text(html, encoding="utf-8")
    print(f"stagewatch report: {len(html.encode()) / 1024:,.0f} KiB", file=sys.stderr)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stagewatch",
        description="Per-file latency anomaly detection for multi-service pipelines.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_replay(sub)
    _add_simulate(sub)
    _add_evaluate(sub)
    _add_run(sub)
    _add_notify_slack(sub)
    _add_explain(sub)
    _add_report(sub)
    _add_bigquery(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and not {"-h", "--help"} & set(argv[1:]):
        # Everything after "run" is a pipeline option (ours and Beam's): Beam parses it, not argparse.
        try:
            return _cmd_run(argparse.Namespace(beam_args=argv[1:]))
        except ValueError as exc:
            print(f"stagewatch run: error: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"stagewatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(f"stagewatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
