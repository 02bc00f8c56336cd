"""Reading what a run wrote, wherever it wrote it: one interface for a local output folder and BigQuery.

``explain`` and ``report`` ask a ``Tables`` for rows of a table (``traces``, ``anomalies``, ``incidents``,
``lots``, ``dead_letters``), optionally only one file's or only a span of event time, and get the same dicts
either way: the JSON shape of the local ``<table>*.jsonl`` files (timestamps as RFC 3339 strings, repeated
fields as lists). A BigQuery reader turns the filters into a ``WHERE`` on the partition column, so a
question about one day reads one day's partitions.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from stagewatch.bigquery_tables import TABLES
from stagewatch.timeutil import parse_rfc3339_us

__all__ = ["LocalTables", "Tables", "read_table"]


class Tables(Protocol):
    """Where a run's tables are read from."""

    #: shown to people: the folder, or ``bigquery:PROJECT.DATASET``
    where: str

    def rows(self, table: str, *, uid: str | None = None, since_us: int | None = None,
             until_us: int | None = None) -> Iterator[dict[str, Any]]:
        """Rows of ``table``; with ``uid`` only that file's; with a span only rows whose partition column
        (``TABLES[table].partition_field``) falls in ``[since_us, until_us)``."""
        ...


def read_table(folder: str, table: str) -> Iterator[dict[str, Any]]:
    """The rows of ``<table>*.jsonl`` in ``folder`` (a local run's stand-in for the BigQuery table)."""
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), f"{table}*.jsonl")))
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    yield orjson.loads(line)


class LocalTables:
    """The JSONL files of ``stagewatch run --output_dir`` (or ``replay``'s files put in one folder)."""

    def __init__(self, folder: str) -> None:
        if not os.path.isdir(folder):
            raise ValueError(f"{folder} is not a folder (give the --output_dir of stagewatch run)")
        self.folder = folder
        self.where = folder

    def rows(self, table: str, *, uid: str | None = None, since_us: int | None = None,
             until_us: int | None = None) -> Iterator[dict[str, Any]]:
        column = TABLES[table].partition_field
        for row in read_table(self.folder, table):
            if uid is not None and row.get("uid") != uid:
                continue
            if since_us is not None or until_us is not None:
                t = parse_rfc3339_us(row[column])
                if (since_us is not None and t < since_us) or (until_us is not None and t >= until_us):
                    continue
            yield row
