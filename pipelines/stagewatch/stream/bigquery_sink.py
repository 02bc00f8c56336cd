"""The streaming job's BigQuery sink: checked rows, streaming inserts with insert ids and retries
(``store/inserts.py``), and a dead letter with the reason for every row BigQuery will not take.

Why not Beam's ``WriteToBigQuery``: its streaming inserts go through a client that Beam makes from the default
credentials (offline, against the emulator, there are none; the only way to give it another is ``test_client``,
one object that must also serve Beam's older API client), so it cannot be run against the emulator as it would
run in production; and its Storage Write API path is a cross-language transform whose Java expansion service is
fetched at graph construction, which neither the tests nor a ``--dry_run`` can do offline. What it offers is done
here and tested against the emulator behind a fault-injecting proxy (``tests/stream/test_sink_faults.py``): insert
ids (a row sent again is not written twice), retries of transient failures in place, failed rows to dead letters
with the reason, counters of each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import orjson
from apache_beam.metrics import Metrics

from stagewatch.core.records import DeadLetter, Record, dead_letter
from stagewatch.core.timeutil import US_PER_S, format_rfc3339
from stagewatch.store.bigquery import bigquery_client
from stagewatch.store.inserts import Backoff, insert_rows, row_id, wire_bytes
from stagewatch.store.schemas import row_problems

__all__ = ["BIGQUERY_DEAD", "WriteTableRows"]

BIGQUERY_DEAD = "bigquery_dead_letters"
#: Rows per request: BigQuery's recommended maximum for ``insertAll``.
BATCH_ROWS = 500
#: Bytes per request as the client sends them (``wire_bytes``), well under BigQuery's 10 MB request limit; a row
#: bigger than that is sent alone (and, if BigQuery refuses its size, dead-lettered alone).
BATCH_BYTES = 5_000_000
#: Fields left out of a row's insert id: the time the job stamped on a dead letter it made, which a retried
#: bundle would stamp anew (the same dead letter would get another id and be written twice).
_NOT_IN_ID = {"dead_letters": ("received_at",)}
_LOG = logging.getLogger(__name__)


class _InsertRowsFn(beam.DoFn):
    """Checked streaming inserts in batches; what does not fit or is refused goes out tagged with the reason."""

    def __init__(self, table_id: str, table: str, backoff: Backoff, batch_rows: int, batch_bytes: int) -> None:
        self._table_id = table_id
        self._table = table
        self._backoff = backoff
        self._batch_rows = batch_rows
        self._batch_bytes = batch_bytes
        self._written = Metrics.counter("stagewatch", f"bigquery_rows_{table}")
        self._rejected = Metrics.counter("stagewatch", f"bigquery_rejected_{table}")
        self._retries = Metrics.counter("stagewatch", f"bigquery_retries_{table}")
        self._client: Any = None
        self._rows: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._bytes = 0

    def setup(self) -> None:
        self._client = bigquery_client(self._table_id.split(".")[0])

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()  # its pooled connections

    def start_bundle(self) -> None:
        self._rows, self._ids, self._bytes = [], [], 0

    def process(self, record: Record) -> Iterator[Any]:
        row = record.to_dict()
        problems = row_problems(self._table, row)
        if problems:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(BIGQUERY_DEAD, _dead(self._table, "; ".join(problems), row))
            return
        insert_id = row_id(self._table, row, _NOT_IN_ID.get(self._table, ()))
        size = wire_bytes(row, insert_id)
        if self._rows and self._bytes + size > self._batch_bytes:
            yield from self._flush()
        self._rows.append(row)
        self._ids.append(insert_id)
        self._bytes += size
        if len(self._rows) >= self._batch_rows:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MAX_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        for tagged in self._flush():
            # Outside process() there is no element to inherit a window from.
            window = (GlobalWindow(),)
            yield beam.pvalue.TaggedOutput(tagged.tag, WindowedValue(tagged.value, MAX_TIMESTAMP - 1, window))

    def _flush(self) -> Iterator[beam.pvalue.TaggedOutput]:
        rows, ids = self._rows, self._ids
        self._rows, self._ids, self._bytes = [], [], 0
        if not rows:
            return
        outcome = insert_rows(self._client, self._table_id, rows, ids, self._backoff)
        self._written.inc(outcome.written)
        self._retries.inc(outcome.retries)
        self._rejected.inc(len(outcome.rejected))
        if outcome.rejected:
            # Said in the worker's log too: the dead letters of the dead-letter table itself have nowhere else to go.
            _LOG.warning("BigQuery refused %d rows for %s: %s", len(outcome.rejected), self._table_id,
                         outcome.rejected[0][1])
        for row, reason in outcome.rejected:
            yield beam.pvalue.TaggedOutput(BIGQUERY_DEAD, _dead(self._table, reason, row))


def _dead(table: str, reason: str, row: dict[str, Any]) -> DeadLetter:
    return dead_letter(
        "bigquery_rejected", reason[:1000], orjson.dumps(row).decode(), format_rfc3339(int(time.time() * US_PER_S)),
        f"bigquery:{table}",
    )


class WriteTableRows(beam.PTransform):
    """Rows into ``dataset.table``; returns the dead letters (tagged ``BIGQUERY_DEAD``) for the dead-letter sink."""

    def __init__(self, dataset: str, table: str, backoff: Backoff | None = None, batch_rows: int = BATCH_ROWS,
                 batch_bytes: int = BATCH_BYTES) -> None:
        super().__init__()
        self._dataset = dataset
        self._table = table
        self._backoff = backoff or Backoff()
        self._batch = (batch_rows, batch_bytes)

    def expand(self, rows: beam.PCollection) -> Any:
        out = rows | "InsertCheckedRows" >> beam.ParDo(
            _InsertRowsFn(f"{self._dataset}.{self._table}", self._table, self._backoff, *self._batch)
        ).with_outputs(BIGQUERY_DEAD, main="written")
        return out[BIGQUERY_DEAD]
