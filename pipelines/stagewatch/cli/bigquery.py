"""``stagewatch bigquery``: create the views over the job's tables; run or print the parameterised queries."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import orjson

from stagewatch.cli.common import bigquery_errors, print_rows

if TYPE_CHECKING:
    from stagewatch.store.views import Query

__all__ = ["add"]


def add(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run)



def _run(args: argparse.Namespace) -> int:
    from stagewatch.store.bigquery import bigquery_client
    from stagewatch.store.schemas import dataset_id
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
    with bigquery_errors(dataset):
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
        print_rows(shaped)
    return 0

