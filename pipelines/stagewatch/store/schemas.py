"""The BigQuery tables stagewatch writes: schemas, partitioning, clustering, and the checks of a row against them.

Pure (no client here: ``store.bigquery`` talks to BigQuery). The rows are the core records' ``to_dict()``.

One module owns them so that the streaming job's sink, the table creation, and the queries that read them
(reports, views) agree. Every table is partitioned by day on its event-time column and clustered for the
questions people ask of it ("which stage", "which kind").

Rows are checked here before they are sent (``row_problems``): the BigQuery emulator answers an invalid row
with an HTTP 500 that the client retries for minutes, and in production a rejected row must reach the
dead-letter path with its reason rather than vanish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from stagewatch.core.timeutil import parse_rfc3339_us

__all__ = ["DATASET_RE", "PROJECT_PATTERN", "TABLES", "Field", "Table", "dataset_id", "row_problems"]

#: A Google Cloud project id (6 to 30 characters: lower-case letters, digits, hyphens; a letter first).
PROJECT_PATTERN = r"[a-z][-a-z0-9]{4,28}[a-z0-9]"
#: ``PROJECT.DATASET`` (or ``PROJECT:DATASET``, as the bq tool writes it).
DATASET_RE = rf"^{PROJECT_PATTERN}[.:][A-Za-z0-9_]{{1,1024}}$"


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # STRING, FLOAT, INTEGER, TIMESTAMP, RECORD
    mode: str = "NULLABLE"  # NULLABLE, REQUIRED, REPEATED
    fields: tuple[Field, ...] = ()


@dataclass(frozen=True)
class Table:
    name: str
    fields: tuple[Field, ...]
    partition_field: str
    clustering: tuple[str, ...]
    description: str


_ANOMALY = (
    Field("anomaly_id", "STRING", "REQUIRED"),
    Field("kind", "STRING", "REQUIRED"),
    Field("uid", "STRING", "REQUIRED"),
    Field("stage", "STRING", "REQUIRED"),
    Field("last_stage", "STRING"),
    Field("tenant", "STRING"),
    Field("lot", "STRING"),
    Field("event_time", "TIMESTAMP", "REQUIRED"),
    Field("detected_at", "TIMESTAMP", "REQUIRED"),
    Field("observed_ms", "FLOAT"),
    Field("expected_ms", "FLOAT"),
    Field("threshold_ms", "FLOAT"),
    Field("score", "FLOAT"),
    Field("baseline_n", "INTEGER"),
    Field("baseline", "STRING"),
    Field("severity", "STRING", "REQUIRED"),
    Field("measure", "STRING"),
    Field("message", "STRING", "REQUIRED"),
    Field("cause_stage", "STRING"),
)
_STAGE = (
    Field("stage", "STRING", "REQUIRED"),
    Field("time", "TIMESTAMP", "REQUIRED"),
    Field("duration_ms", "FLOAT"),
    Field("reported_ms", "FLOAT"),
    Field("verdict", "STRING"),
)
_TRACE = (
    Field("uid", "STRING", "REQUIRED"),
    Field("tenant", "STRING"),
    Field("lot", "STRING"),
    Field("status", "STRING", "REQUIRED"),
    Field("first_time", "TIMESTAMP", "REQUIRED"),
    Field("last_time", "TIMESTAMP", "REQUIRED"),
    Field("end_to_end_ms", "FLOAT"),
    Field("stages", "RECORD", "REPEATED", _STAGE),
    Field("missing_stages", "STRING", "REPEATED"),
    Field("negative_gaps", "INTEGER"),
    Field("closed_at", "TIMESTAMP", "REQUIRED"),
)
_DEAD_LETTER = (
    Field("reason", "STRING", "REQUIRED"),
    Field("detail", "STRING"),
    Field("line", "STRING"),
    Field("received_at", "TIMESTAMP", "REQUIRED"),
    Field("source", "STRING"),  # which step rejected it: parse, late, bigquery:<table>
)

_INCIDENT = (
    Field("incident_id", "STRING", "REQUIRED"),
    Field("event", "STRING", "REQUIRED"),  # opened, updated, resolved
    Field("kind", "STRING", "REQUIRED"),
    Field("stage", "STRING", "REQUIRED"),
    Field("scope", "STRING", "REQUIRED"),  # trace, lot, tenant, global
    Field("scope_key", "STRING"),
    Field("tenants", "STRING", "REPEATED"),
    Field("affected_tenants", "INTEGER"),
    Field("active_tenants", "INTEGER"),
    Field("started_at", "TIMESTAMP", "REQUIRED"),
    Field("resolved_at", "TIMESTAMP"),
    Field("at", "TIMESTAMP", "REQUIRED"),
    Field("files", "INTEGER"),
    Field("sample_uids", "STRING", "REPEATED"),
    Field("lots", "STRING", "REPEATED"),  # batches it left incomplete or slow
    Field("arrived", "INTEGER"),  # held-up files that arrived after all
    Field("worst_observed_ms", "FLOAT"),
    Field("expected_ms", "FLOAT"),
    Field("message", "STRING", "REQUIRED"),
)

_UNFINISHED = (
    Field("uid", "STRING", "REQUIRED"),
    Field("status", "STRING", "REQUIRED"),
    Field("tenant", "STRING"),
    Field("last_stage", "STRING"),
)
_LOT = (
    Field("lot", "STRING", "REQUIRED"),
    Field("kind", "STRING", "REQUIRED"),  # lot_incomplete, lot_slow
    Field("tenants", "STRING", "REPEATED"),
    Field("files", "INTEGER", "REQUIRED"),
    Field("started_at", "TIMESTAMP", "REQUIRED"),
    Field("submitted_at", "TIMESTAMP", "REQUIRED"),
    Field("finished_at", "TIMESTAMP", "REQUIRED"),
    Field("judged_at", "TIMESTAMP", "REQUIRED"),  # when it had been quiet long enough to judge
    Field("duration_ms", "FLOAT"),
    Field("expected_ms", "FLOAT"),
    Field("unfinished", "RECORD", "REPEATED", _UNFINISHED),
    Field("message", "STRING", "REQUIRED"),
    Field("slowed_by", "STRING"),  # lot_slow: the one file that made it slow (then no incident)
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("anomalies", _ANOMALY, "event_time", ("kind", "stage"), "One row per anomaly verdict."),
        Table("traces", _TRACE, "first_time", ("status", "tenant"), "One row per file's journey, when it closed."),
        Table("dead_letters", _DEAD_LETTER, "received_at", ("reason",), "Input that was not used, and why."),
        Table("incidents", _INCIDENT, "at", ("kind", "stage"), "Incident events: opened, updated, resolved."),
        Table("lots", _LOT, "finished_at", ("kind",), "Batches that did not complete or took far too long."),
    )
}


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,),
    "FLOAT": (int, float),
    "INTEGER": (int,),
    "TIMESTAMP": (str,),
    "RECORD": (dict,),
}


def _problems(fields: tuple[Field, ...], row: dict[str, Any], path: str) -> list[str]:
    out = []
    known = {f.name for f in fields}
    out += [f"{path}{k}: not in the schema" for k in row if k not in known]
    for f in fields:
        value = row.get(f.name)
        where = f"{path}{f.name}"
        if value is None:
            if f.mode == "REQUIRED":
                out.append(f"{where}: required")
            continue
        values: list[Any] = value if f.mode == "REPEATED" else [value]
        if f.mode == "REPEATED" and not isinstance(value, list):
            out.append(f"{where}: expected a list")
            continue
        for v in values:
            if isinstance(v, bool) or not isinstance(v, _PY_TYPES[f.type]):
                out.append(f"{where}: expected {f.type}, got {type(v).__name__}")
            elif f.type == "TIMESTAMP":
                try:
                    parse_rfc3339_us(str(v))
                except ValueError:
                    out.append(f"{where}: not an RFC 3339 timestamp")
            elif f.type == "FLOAT" and v != v:
                out.append(f"{where}: NaN")
            elif f.type == "RECORD":
                out += _problems(f.fields, cast(dict[str, Any], v), where + ".")
    return out


def row_problems(table: str, row: dict[str, Any]) -> list[str]:
    """Why BigQuery would reject ``row`` for ``table``; empty when it fits the schema."""
    return _problems(TABLES[table].fields, row, "")


def dataset_id(text: str, flag: str = "--dataset") -> str:
    """``PROJECT.DATASET`` checked and normalised (``PROJECT:DATASET`` accepted). It is spliced into SQL as a
    quoted identifier, so nothing else may pass; ``ValueError`` names ``flag`` and what to type instead."""
    if not re.match(DATASET_RE, text):
        raise ValueError(f"{flag} must look like PROJECT.DATASET (e.g. my-proj.stagewatch), got {text!r}")
    return text.replace(":", ".", 1)
