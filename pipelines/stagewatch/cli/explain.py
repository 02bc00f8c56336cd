"""``stagewatch explain UID``: one file's timeline from a local output folder or the job's BigQuery dataset."""

from __future__ import annotations

import argparse
import re
import sys

from stagewatch.cli.common import add_uid_key_options, bigquery_errors, for_terminal, time_option, uid_key

__all__ = ["add"]


def add(sub: argparse._SubParsersAction) -> None:
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
    add_uid_key_options(p)
    p.add_argument("--day", metavar="YYYY-MM-DD",
                   help="the day (UTC) the file began: only that day's partitions (and the next) are read")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from stagewatch.core.privacy import is_pseudonym, pseudonym
    from stagewatch.investigate.explain import explain
    from stagewatch.store.readers import BigQueryTables, LocalTables

    key = uid_key(args)
    if key is not None and not is_pseudonym(args.uid):
        # The run hashed its uids: look for the hash of the one given (a hash already is taken as it is).
        args.uid = pseudonym(key.resolve(), args.uid)
    day_us = None
    if args.day is not None:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.day):
            raise ValueError(f"--day must be a date such as 2026-06-06, got {args.day!r}")
        day_us = time_option("--day", f"{args.day}T00:00:00Z")
    if args.input is not None:
        tables = LocalTables(args.input)
        if tables.incomplete:  # said first: the file's story may stop where the writer stopped
            print(for_terminal(f"stagewatch explain: warning: {tables.incomplete}"), file=sys.stderr)
        print(for_terminal(explain(args.uid, tables, day_us)))
        return 0
    with bigquery_errors(args.bigquery):
        print(for_terminal(explain(args.uid, BigQueryTables(args.bigquery), day_us)))
    return 0

