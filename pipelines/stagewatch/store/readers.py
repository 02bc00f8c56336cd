"""Reading what a run wrote, wherever it wrote it: one interface for a local output folder and BigQuery.

``explain`` and ``report`` ask a ``Tables`` for rows of a table (``traces``, ``anomalies``, ``incidents``,
``lots``, ``dead_letters``), optionally only one file's or only a span of event time, and get the same dicts
either way: the JSON shape of the local ``<table>*.jsonl`` files (timestamps as RFC 3339 strings, repeated
fields as lists). A BigQuery reader turns the filters into a ``WHERE`` on the partition column, so a
question about one day reads one day's partitions.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
from collections.abc import Iterator
from typing import Any, Protocol, cast

import orjson

from stagewatch.core.timeutil import format_rfc3339, parse_rfc3339_us
from stagewatch.store.bigquery import bigquery_client
from stagewatch.store.manifest import incomplete
from stagewatch.store.schemas import TABLES, Field, dataset_id

__all__ = ["BigQueryTables", "LocalTables", "Tables", "json_shaped", "read_table"]


class Tables(Protocol):
    """Where a run's tables are read from."""

    #: shown to people: the folder, or ``bigquery:PROJECT.DATASET``
    where: str
    #: why the tables may not be whole (a stopped run's folder: ``store/manifest.py``), else None
    incomplete: str | None

    def rows(self, table: str, *, uid: str | None = None, since_us: int | None = None,
             until_us: int | None = None) -> Iterator[dict[str, Any]]:
        """Rows of ``table``; with ``uid`` only that file's; with a span only rows whose partition column
        (``TABLES[table].partition_field``) falls in ``[since_us, until_us)``."""
        ...


def read_table(folder: str, table: str) -> Iterator[dict[str, Any]]:
    """The rows of ``<table>*.jsonl`` in ``folder`` (a local run's stand-in for the BigQuery table), each with
    the fields the table requires (``ValueError`` naming the file, line and field for one without)."""
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), f"{table}*.jsonl")))
    fields = TABLES[table].fields
    for path in paths:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path}, line {n}: not JSON ({exc}); a run stopped mid-write?") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}, line {n}: not a {table} row (a JSON object)")
                problem = _shape_problem(fields, row)
                if problem:
                    raise ValueError(f"{path}, line {n}: this {table} row is not as stagewatch writes it ({problem}); "
                                     "edited by hand, or written by another program?")
                yield row


_TYPES: dict[str, tuple[type, ...]] = {"STRING": (str,), "TIMESTAMP": (str,), "INTEGER": (int,),
                                       "FLOAT": (int, float), "RECORD": (dict,)}


def _shape_problem(fields: tuple[Field, ...], row: dict[str, Any]) -> str | None:
    """What keeps ``row`` from being read as these fields say (a required one missing, a value of another type,
    a repeated one not a list), else None; a repeated field that is absent becomes ``[]``. Cheaper than
    ``schemas.row_problems`` (no timestamp parsing, nothing about unknown fields): it runs for every row read."""
    for f in fields:
        value = row.get(f.name)
        if value is None:
            if f.mode == "REPEATED":
                row[f.name] = []
            elif f.mode == "REQUIRED":
                return f"{f.name}: missing"
            continue
        items: Any = value if f.mode == "REPEATED" else (value,)
        if not isinstance(items, list | tuple):
            return f"{f.name}: not a list"
        for item in items:
            if isinstance(item, bool) or not isinstance(item, _TYPES[f.type]):
                return f"{f.name}: not a {f.type.lower()}"
            if f.type == "RECORD" and (problem := _shape_problem(f.fields, cast(dict[str, Any], item))) is not None:
                return f"{f.name}.{problem}"
    return None


class LocalTables:
    """The JSONL files of ``stagewatch run --output_dir`` (or ``replay``'s files put in one folder)."""

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise ValueError(f"{folder} is not a folder (give the --output_dir of stagewatch run)")
        self.folder = folder
        self.where = folder
        self.incomplete = incomplete(folder)

    def rows(self, table: str, *, uid: str | None = None, since_us: int | None = None,
             until_us: int | None = None) -> Iterator[dict[str, Any]]:
        column = TABLES[table].partition_field
        for row in read_table(self.folder, table):
            if uid is not None and row.get("uid") != uid:
                continue
            if since_us is not None or until_us is not None:
                try:  # read_table saw to it that it is a string
                    t = parse_rfc3339_us(row[column])
                except ValueError:
                    raise ValueError(f"a {table} row in {self.folder} has a {column} that is not an RFC 3339 "
                                     f"time: {row[column][:100]!r}") from None
                if (since_us is not None and t < since_us) or (until_us is not None and t >= until_us):
                    continue
            yield row


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def json_shaped(value: Any) -> Any:
    """A value as the BigQuery client returns it, in the JSON shape of the local files: a TIMESTAMP as the RFC
    3339 text ``format_rfc3339`` writes, a DATE as ``YYYY-MM-DD``, a RECORD as a dict, a REPEATED as a list."""
    if isinstance(value, dt.datetime):
        return format_rfc3339((value - _EPOCH) // dt.timedelta(microseconds=1))
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: json_shaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_shaped(v) for v in value]
    return value


def _timestamp(t_us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=t_us)


class BigQueryTables:
    """The streaming job's BigQuery dataset. A span becomes a ``WHERE`` on the table's partition column, so only
    the partitions it covers are read; values travel as query parameters, never inside the SQL text."""

    def __init__(self, dataset: str, client: Any | None = None) -> None:
        self.dataset = dataset_id(dataset, "--bigquery")
        self.where = f"bigquery:{self.dataset}"
        self.incomplete: str | None = None  # a table is whole at any time; a stopped job is Dataflow's to show
        self.client = client if client is not None else bigquery_client(self.dataset.split(".")[0])

    def rows(self, table: str, *, uid: str | None = None, since_us: int | None = None,
             until_us: int | None = None) -> Iterator[dict[str, Any]]:
        from google.cloud import bigquery

        spec = TABLES[table]
        if uid is not None and "uid" not in {f.name for f in spec.fields}:
            return  # as in a local folder: no row of a table without a uid is one file's
        column = f"`{spec.partition_field}`"  # quoted: `at` (incidents) is a reserved word
        where, params = [], []
        if uid is not None:
            where.append("uid = @uid")
            params.append(bigquery.ScalarQueryParameter("uid", "STRING", uid))
        if since_us is not None:
            where.append(f"{column} >= @since")
            params.append(bigquery.ScalarQueryParameter("since", "TIMESTAMP", _timestamp(since_us)))
        if until_us is not None:
            where.append(f"{column} < @until")
            params.append(bigquery.ScalarQueryParameter("until", "TIMESTAMP", _timestamp(until_us)))
        # In event-time order, as the files roughly are: explain takes a file's last trace as its latest.
        sql = (f"SELECT * FROM `{self.dataset}.{table}`" + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {column}")
        job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
        for row in job.result():
            yield {k: json_shaped(v) for k, v in row.items()}
