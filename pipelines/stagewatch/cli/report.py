"""``stagewatch report``: one self-contained HTML page from a run's tables (a local folder or BigQuery)."""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

from stagewatch.cli.common import bigquery_errors, for_terminal, time_option

__all__ = ["add"]


def add(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from stagewatch.core.timeutil import US_PER_S

    try:
        from stagewatch.investigate.report import render_report
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            raise
        raise ValueError("the report draws its charts with matplotlib, which is not installed here: "
                         "pip install 'stagewatch[report]'") from None
    from stagewatch.store.readers import BigQueryTables, LocalTables, Tables
    from stagewatch.store.schemas import TABLES

    if (args.input is None) == (args.bigquery is None):
        raise ValueError("give either a local output folder (DIR) or --bigquery PROJECT.DATASET")
    since_us, until_us = time_option("--since", args.since), time_option("--until", args.until)
    out = Path(args.output).resolve()
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {args.output}: folder {out.parent} does not exist")
    tables: Tables
    if args.bigquery is not None:
        # Every table read is bounded on its partition column: a day's report reads a day's partitions.
        if since_us is None:
            until_us = until_us if until_us is not None else int(time.time() * US_PER_S)
            since_us = until_us - 24 * 3600 * US_PER_S
        with bigquery_errors(args.bigquery):  # no credentials: one line, not a traceback
            tables = BigQueryTables(args.bigquery)
    else:
        tables = LocalTables(args.input)
        if tables.incomplete:  # said first: what follows may stop where the writer stopped
            print(for_terminal(f"stagewatch report: warning: {tables.incomplete}"), file=sys.stderr)
        # An empty page from the wrong folder (demo instead of demo/out) would read as "all quiet".
        if not any(glob.glob(os.path.join(glob.escape(args.input), f"{t}*.jsonl")) for t in TABLES):
            raise ValueError(f"{args.input} holds none of {', '.join(f'{t}*.jsonl' for t in TABLES)} (give the "
                             "--output_dir of stagewatch run)")
    with bigquery_errors(args.bigquery or ""):
        html = render_report(tables, since_us=since_us, until_us=until_us)
    out.write_text(html, encoding="utf-8")
    print(f"stagewatch report: {len(html.encode()) / 1024:,.0f} KiB", file=sys.stderr)
    print(out)
    return 0

