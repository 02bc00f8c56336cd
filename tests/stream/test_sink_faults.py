"""Faults injected into the sinks on the wire (``tests/faults.py``), against the real emulators: BigQuery answering
5xx for a while, BigQuery unreachable, an answer lost after the rows were written, a permanent schema rejection,
Pub/Sub unreachable mid-publish. Each time: every row written once or dead-lettered with its reason, nothing
written twice (what is sent again carries the insert id it was first sent with), and the counters say what
happened."""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream

from stagewatch.core.records import Anomaly, DeadLetter
from stagewatch.store.bigquery import create_tables
from stagewatch.store.inserts import Backoff
from stagewatch.stream.bigquery_sink import WriteTableRows
from stagewatch.stream.sinks import PublishAnomalies
from tests.emulators import BIGQUERY_ENV, PROJECT, PUBSUB_ENV, bigquery_client, bigquery_host, pubsub_host
from tests.faults import CUT_AFTER, CUT_BEFORE, FORWARD, HttpFaultProxy, TcpFaultProxy, http_error, reply
from tests.records import MIN, anomaly

pytestmark = pytest.mark.integration

FAST = Backoff(first_s=0.05, max_s=0.2, request_timeout_s=30)
T0 = 1_780_000_000_000_000


def _keep(dead: DeadLetter, path: str) -> None:
    """A dead letter kept in a file (the runner pickles what a step refers to: a list would be a copy)."""
    with open(path, "ab") as f:
        f.write(orjson.dumps(dead.to_dict()) + b"\n")


def _rows(n: int) -> list[Anomaly]:
    return [anomaly("slow_stage", f"f-{i:04d}", "upload", T0 + i * MIN, "acme") for i in range(n)]


@contextlib.contextmanager
def _dataset() -> Iterator[tuple[Any, str]]:
    client = bigquery_client()
    dataset = f"{PROJECT}.faults_{uuid.uuid4().hex[:8]}"
    create_tables(client, dataset)
    try:
        yield client, dataset
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()


def _write(rows: list[Anomaly], dataset: str, proxy: HttpFaultProxy, monkeypatch: pytest.MonkeyPatch,
           **batch: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows through the sink, the sink's client pointed at the proxy; the dead letters and the counters."""
    kept = Path(tempfile.mkdtemp()) / "dead.jsonl"
    kept.touch()
    with monkeypatch.context() as m:
        m.setenv(BIGQUERY_ENV, proxy.url)
        p = beam.Pipeline(options=PipelineOptions())
        _ = p | beam.Create(rows) | WriteTableRows(dataset, "anomalies", FAST, **batch) | beam.Map(_keep, str(kept))
        result = p.run()
        result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("stagewatch"))["counters"]
    return [orjson.loads(line) for line in kept.read_bytes().splitlines()], {
        c.key.metric.name: c.committed for c in counters}


def _stored(client: Any, dataset: str) -> list[str]:
    rows = client.query(f"SELECT anomaly_id FROM `{dataset}.anomalies`").result(timeout=60)
    return sorted(r["anomaly_id"] for r in rows)


def _ids(rows: list[Anomaly]) -> list[str]:
    return sorted(r.anomaly_id for r in rows)


def test_bigquery_answering_503_for_a_while_then_recovering_writes_every_row_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows(30)
    with _dataset() as (client, dataset), HttpFaultProxy(bigquery_host()) as proxy:
        proxy.rule = lambda n, body: http_error(503) if n < 3 else FORWARD
        dead, counters = _write(rows, dataset, proxy, monkeypatch)
        assert _stored(client, dataset) == _ids(rows)
    assert dead == []
    assert proxy.actions[:4] == ["status", "status", "status", "forward"]
    assert counters["bigquery_retries_anomalies"] == 3 and counters["bigquery_rows_anomalies"] == 30
    assert counters.get("bigquery_rejected_anomalies", 0) == 0


def test_bigquery_unreachable_for_a_while_then_back_writes_every_row_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections cut before the request reaches BigQuery, three times (the service unreachable)."""
    rows = _rows(20)
    with _dataset() as (client, dataset), HttpFaultProxy(bigquery_host()) as proxy:
        proxy.rule = lambda n, body: CUT_BEFORE if n < 3 else FORWARD
        dead, counters = _write(rows, dataset, proxy, monkeypatch)
        assert _stored(client, dataset) == _ids(rows)
    assert dead == [] and proxy.actions == ["cut_before"] * 3 + ["forward"]
    assert counters["bigquery_retries_anomalies"] == 3 and counters["bigquery_rows_anomalies"] == 20


def test_an_answer_lost_after_the_rows_were_written_sends_them_again_with_the_same_insert_ids(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows reached BigQuery; the answer did not reach the job. They are sent again with the insert ids they
    were first sent with, which BigQuery uses to drop the copies (the emulator does not: it keeps both, so what
    is checked here is the ids, the part that is ours)."""
    rows = _rows(10)
    with _dataset() as (client, dataset), HttpFaultProxy(bigquery_host()) as proxy:
        proxy.rule = lambda n, body: CUT_AFTER if n == 0 else FORWARD
        dead, counters = _write(rows, dataset, proxy, monkeypatch)
        assert _stored(client, dataset) == sorted(_ids(rows) * 2)  # the emulator kept the copies
    first, again = proxy.inserts[0]["rows"], proxy.inserts[1]["rows"]
    assert [r["insertId"] for r in again] == [r["insertId"] for r in first]
    assert len({r["insertId"] for r in first}) == len(rows)
    assert dead == [] and counters["bigquery_retries_anomalies"] == 1


def _schema_rejection(refused: str) -> Any:
    """A rule: BigQuery's answer to a request holding the anomaly ``refused``, as if the table lacked a column
    the release writes -- that row ``invalid`` with the message, the others ``stopped``; others forwarded."""
    def rule(n: int, body: dict[str, Any]) -> Any:
        sent = [r["json"]["anomaly_id"] for r in body["rows"]]
        if refused not in sent:
            return FORWARD
        return reply({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": [
            {"index": i, "errors": [{"reason": "invalid", "location": "cause_stage", "message": "no such field: "
                                     "cause_stage."} if a == refused else {"reason": "stopped", "message": ""}]}
            for i, a in enumerate(sent)]})
    return rule


def test_a_row_bigquery_refuses_for_its_schema_is_dead_lettered_with_the_reason_and_the_rest_written_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """BigQuery's answer to a request with a row the table's schema refuses (here, as if the table lacked a
    column the release writes): that row ``invalid`` with the message, the others ``stopped``."""
    rows = _rows(12)
    refused = rows[5].anomaly_id
    with _dataset() as (client, dataset), HttpFaultProxy(bigquery_host()) as proxy:
        proxy.rule = _schema_rejection(refused)
        dead, counters = _write(rows, dataset, proxy, monkeypatch)
        assert _stored(client, dataset) == sorted(set(_ids(rows)) - {refused})
    assert [(d["reason"], d["source"], orjson.loads(d["line"])["anomaly_id"]) for d in dead] == [
        ("bigquery_rejected", "bigquery:anomalies", refused)]
    assert "no such field: cause_stage" in dead[0]["detail"]
    assert counters["bigquery_rejected_anomalies"] == 1 and counters["bigquery_rows_anomalies"] == 11


def test_big_bundles_go_in_requests_within_the_limits_and_a_row_refused_mid_bundle_is_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows(1200)
    refused = rows[7].anomaly_id
    with _dataset() as (client, dataset), HttpFaultProxy(bigquery_host()) as proxy:
        proxy.rule = _schema_rejection(refused)
        dead, counters = _write(rows, dataset, proxy, monkeypatch, batch_rows=500, batch_bytes=100_000)
        assert _stored(client, dataset) == sorted(set(_ids(rows)) - {refused})
    assert max(proxy.insert_bytes) <= 100_000 and max(len(b["rows"]) for b in proxy.inserts) <= 500
    # Split by size (a row is some 500 bytes on the wire: 200 a request), not only by count (3), and one retry.
    assert len(proxy.inserts) - 1 >= 6
    assert [orjson.loads(d["line"])["anomaly_id"] for d in dead] == [refused]
    assert counters["bigquery_rows_anomalies"] == 1199 and counters["bigquery_rejected_anomalies"] == 1


def test_a_missing_table_dead_letters_its_rows_with_bigquerys_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request refused outright is not sent again; the dead letters say why, in BigQuery's words."""
    rows = _rows(5)
    with _dataset() as (client, dataset), HttpFaultProxy(bigquery_host()) as proxy:
        client.delete_table(f"{dataset}.anomalies")
        dead, counters = _write(rows, dataset, proxy, monkeypatch)
    assert sorted(orjson.loads(d["line"])["anomaly_id"] for d in dead) == _ids(rows)
    assert all(d["detail"].startswith("404 NotFound: ") and "not found" in d["detail"].lower() for d in dead)
    assert len(proxy.inserts) == 1 and counters["bigquery_rejected_anomalies"] == 5


def test_pubsub_lost_mid_run_then_back_delivers_every_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job publishes four bundles; a publish after the first reached Pub/Sub is cut in flight and the
    emulator is unreachable for 4 s (connections cut, new ones refused): the publisher's retries carry the
    messages over; none lost, none twice."""
    from google.api_core.exceptions import DeadlineExceeded
    from google.cloud import pubsub_v1

    rows = _rows(40)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    suffix = uuid.uuid4().hex[:8]
    topic = publisher.topic_path(PROJECT, f"faults-{suffix}")
    sub = subscriber.subscription_path(PROJECT, f"faults-{suffix}-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    try:
        with TcpFaultProxy(pubsub_host()) as proxy, monkeypatch.context() as m:
            proxy.trip(2, 1500, for_s=4.0)  # a publish of ten anomalies is several kB; the preamble is less
            m.setenv(PUBSUB_ENV, proxy.address)
            options = PipelineOptions()
            options.view_as(StandardOptions).streaming = True
            stream = TestStream()
            for i in range(0, len(rows), 10):  # a bundle each: four publishes, one after the other
                stream = stream.add_elements(rows[i:i + 10])
            with TestPipeline(options=options) as p:
                _ = p | stream.advance_watermark_to_infinity() | PublishAnomalies(topic)
            tripped, refused = proxy.tripped, proxy.refused
        received: list[Any] = []
        deadline = time.time() + 60
        while len(received) < len(rows) and time.time() < deadline:
            resp = subscriber.pull(subscription=sub, max_messages=50, timeout=10)
            received += resp.received_messages
            if resp.received_messages:
                subscriber.acknowledge(subscription=sub, ack_ids=[r.ack_id for r in resp.received_messages])
        with contextlib.suppress(DeadlineExceeded):  # a copy, if there were one, would arrive now
            received += subscriber.pull(subscription=sub, max_messages=50, timeout=5).received_messages
    finally:
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)
    assert tripped and refused >= 1  # a publish was cut in flight, and reconnecting was refused for a while
    assert sorted(orjson.loads(r.message.data)["anomaly_id"] for r in received) == _ids(rows)
