"""Where the streaming job's records go: Pub/Sub, BigQuery, and local JSONL files named for their tables.

BigQuery's sink is ``stream/bigquery_sink.py``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, ClassVar

import apache_beam as beam
import orjson
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import StandardOptions

from stagewatch.core.records import Record, dumps
from stagewatch.store import manifest
from stagewatch.stream.steps.contain import ContainedStep

__all__ = [
    "LOCAL_TABLES",
    "MAX_ATTRIBUTE_BYTES",
    "PublishAnomalies",
    "WriteJsonl",
    "clear_local_output",
    "local_output_summary",
    "pubsub_message",
]

_ATTRIBUTES = ("kind", "stage", "tenant", "severity", "event", "scope")


LOCAL_TABLES = ("anomalies", "traces", "dead_letters", "incidents", "lots")


def clear_local_output(output_dir: str) -> list[str]:
    """Remove a previous run's ``<table>*.jsonl`` files (a local run appends), and what a replay stopped while
    writing into this folder left (``*.jsonl.partial``: it would mark the new run's folder incomplete); returns
    what was removed."""
    import glob

    removed = []
    for table in LOCAL_TABLES:
        for pattern in (f"{table}*.jsonl", f"{table}*.jsonl{manifest.PARTIAL}"):
            for path in glob.glob(os.path.join(glob.escape(output_dir), pattern)):
                os.remove(path)
                removed.append(path)
    return removed


def append_local_rows(output_dir: str, table: str, rows: list[dict[str, Any]]) -> None:
    """Rows the driver itself has for a local table (a dead letter of reading the input), after the job's own:
    in ``<table>-driver.jsonl``, read with the rest."""
    with open(os.path.join(output_dir, f"{table}-driver.jsonl"), "ab") as f:
        f.write(b"".join(dumps(r) + b"\n" for r in rows))


def local_output_summary(output_dir: str) -> str:
    """What a local run wrote, counted from its files: anomalies by kind, traces by status, dead letters by
    reason."""
    import glob
    from collections import Counter

    field = {"anomalies": "kind", "traces": "status", "dead_letters": "reason", "incidents": "event", "lots": "kind"}
    lines = []
    for table in LOCAL_TABLES:
        counts: Counter[str] = Counter()
        for path in sorted(glob.glob(os.path.join(glob.escape(output_dir), f"{table}*.jsonl"))):
            with open(path, "rb") as f:
                counts.update(str(orjson.loads(line).get(field[table])) for line in f if line.strip())
        detail = " · ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
        lines.append(f"  {table:<13}{sum(counts.values()):>8,}" + (f": {detail}" if detail else ""))
    return "\n".join(lines)


MAX_ATTRIBUTE_BYTES = 1024  # Pub/Sub refuses a message with an attribute value longer than this (UTF-8 bytes)


def _attribute(value: object) -> str:
    """A value within Pub/Sub's limit for an attribute: cut at a character boundary. The values come from logs
    (a tenant of 256 four-byte characters, a scope naming it): a publish refused for one attribute would
    fail the bundle and, on Dataflow, be retried without end. The body keeps the whole value."""
    text = str(value)
    raw = text.encode("utf-8", "replace")
    if len(raw) <= MAX_ATTRIBUTE_BYTES:
        return text
    return raw[:MAX_ATTRIBUTE_BYTES].decode("utf-8", "ignore")


def pubsub_message(record: Record) -> PubsubMessage:
    """JSON body; ``kind``, ``stage``, ``tenant``, ``severity`` (anomalies) and ``event``, ``scope``
    (incidents) as attributes, when present, so subscribers can filter."""
    row = record.to_dict()
    attributes = {k: _attribute(row[k]) for k in _ATTRIBUTES if row.get(k) is not None}
    return PubsubMessage(orjson.dumps(row), attributes)


class PublishAnomalies(ContainedStep):
    """Records as Pub/Sub messages to ``topic``; one that cannot be made a message is an ``internal_error`` dead
    letter (``internal_errors``). The publish itself is not contained: a failed publish is retried."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self._topic = topic

    def expand(self, records: beam.PCollection) -> Any:
        messages = self.map(records, "ToPubsubMessage", pubsub_message, "publish")
        return messages | "PublishToTopic" >> beam.io.WriteToPubSub(self._topic, with_attributes=True)


class WriteJsonl(beam.PTransform):
    """Local runs: ``<output_dir>/<table>*.jsonl``, read later like the BigQuery table of the same name."""

    def __init__(self, output_dir: str, table: str) -> None:
        super().__init__()
        self._prefix = os.path.join(output_dir, table)

    def expand(self, records: beam.PCollection) -> Any:
        if records.pipeline._options.view_as(StandardOptions).streaming:
            # A local stream: each writer appends to its own file. (Beam's streaming text sink writes a
            # window at a time and drops what a timer emits after its window closed.)
            return records | "AppendJsonLines" >> beam.ParDo(_AppendJsonl(self._prefix))
        lines = records | "ToJsonLine" >> beam.Map(lambda r: dumps(r).decode())
        return lines | "WriteJsonLines" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")


class _AppendJsonl(beam.DoFn):
    """Local runs only: every record appended to one ``<prefix>-<pid>.jsonl`` per process.

    The in-process runner makes a fresh DoFn instance for every bundle, so the file is shared by the process
    (opened once, written under a lock, flushed at each bundle's end), not owned by an instance.
    """

    _files: ClassVar[dict[str, tuple[Any, threading.Lock]]] = {}
    _opening = threading.Lock()

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def _file(self) -> tuple[Any, threading.Lock]:
        with _AppendJsonl._opening:
            entry = _AppendJsonl._files.get(self._prefix)
            if entry is None:
                path = f"{self._prefix}-{os.getpid()}.jsonl"
                entry = _AppendJsonl._files[self._prefix] = (open(path, "ab"), threading.Lock())  # noqa: SIM115
            return entry

    def start_bundle(self) -> None:
        self._lines: list[bytes] = []

    def process(self, record: Record) -> None:
        self._lines.append(dumps(record) + b"\n")

    def finish_bundle(self) -> None:
        if self._lines:
            f, lock = self._file()
            with lock:
                f.write(b"".join(self._lines))
                f.flush()
            self._lines = []
