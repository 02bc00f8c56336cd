"""Sinks: Pub/Sub messages with filter attributes, local JSONL, checked BigQuery inserts with dead letters."""

from __future__ import annotations

import contextlib
import dataclasses
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from google.cloud import pubsub_v1

from stagewatch.core.records import Anomaly
from stagewatch.store.bigquery import create_tables
from stagewatch.stream.bigquery_sink import WriteTableRows
from stagewatch.stream.sinks import (
    MAX_ATTRIBUTE_BYTES,
    PublishAnomalies,
    WriteJsonl,
    pubsub_message,
)
from tests.emulators import PROJECT, bigquery_client
from tests.streams import PIPE_FOR_TABLES, run, steady_stream


def _anomalies() -> list[Anomaly]:
    def slow(stage: str, t: int) -> float:
        return 20.0 if stage == "b" and t > T_SLOW else 1.0

    base = steady_stream(PIPE_FOR_TABLES, hours=1, every_s=10, seed=3)
    global T_SLOW
    T_SLOW = base[-1].t_us - 600_000_000
    anomalies, _, _ = run(steady_stream(PIPE_FOR_TABLES, hours=1, every_s=10, seed=3, factor=slow),
                          PIPE_FOR_TABLES.stages)
    return anomalies


T_SLOW = 0


@pytest.mark.unit
def test_pubsub_message_carries_filter_attributes() -> None:
    record = {"kind": "slow_stage", "stage": "upload", "tenant": None, "severity": "warning", "uid": "f-1"}
    msg = pubsub_message(types.SimpleNamespace(to_dict=lambda: record))
    assert orjson.loads(msg.data) == record
    assert msg.attributes == {"kind": "slow_stage", "stage": "upload", "severity": "warning"}


@pytest.mark.unit
def test_pubsub_attributes_stay_within_pubsubs_limit() -> None:
    """A tenant from the logs may be 256 four-byte characters, a scope names it: Pub/Sub refuses an attribute
    value over 1,024 bytes (and the publish would be retried without end). Cut at a character boundary; the
    body keeps the whole value."""
    tenant = "\U0001F600" * 256
    record = {"kind": "slow_stage", "tenant": tenant, "scope": f"tenant:{tenant}", "stage": "é" * 600}
    msg = pubsub_message(types.SimpleNamespace(to_dict=lambda: record))
    assert orjson.loads(msg.data) == record
    for key in ("tenant", "scope", "stage"):
        value = msg.attributes[key]
        assert len(value.encode()) <= MAX_ATTRIBUTE_BYTES and record[key].startswith(value), key
    assert msg.attributes["tenant"] == tenant  # exactly 1,024 bytes: kept whole
    assert len(msg.attributes["scope"].encode()) == MAX_ATTRIBUTE_BYTES - 1  # "tenant:" + 254 whole characters
    assert msg.attributes["kind"] == "slow_stage"


@pytest.mark.pipeline
def test_local_jsonl_files_are_named_for_their_table(tmp_path: Path) -> None:
    rows = _anomalies()
    with TestPipeline() as p:
        _ = p | beam.Create(rows) | WriteJsonl(str(tmp_path), "anomalies")
    files = sorted(tmp_path.glob("anomalies*.jsonl"))
    assert files
    back = [orjson.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert sorted(r["anomaly_id"] for r in back) == sorted(r.anomaly_id for r in rows)


@pytest.mark.integration
def test_bigquery_rows_written_and_bad_rows_dead_lettered_on_the_emulator() -> None:
    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_sink_{uuid.uuid4().hex[:8]}"
    try:
        create_tables(client, dataset)
        rows = _anomalies()
        bad = dataclasses.replace(rows[0], anomaly_id="bad-1", score="very")
        with TestPipeline() as p:
            dead = p | beam.Create([*rows, bad]) | WriteTableRows(dataset, "anomalies")
            assert_that(
                dead | beam.Map(lambda d: (d.reason, d.source, orjson.loads(d.line)["anomaly_id"])),
                equal_to([("bigquery_rejected", "bigquery:anomalies", "bad-1")]),
            )
        got = list(client.query(f"SELECT COUNT(*) AS n FROM `{dataset}.anomalies`").result(timeout=60))
        assert got[0]["n"] == len(rows)
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()


@contextlib.contextmanager
def _topic(prefix: str) -> Iterator[tuple[str, Callable[[int], list]]]:
    """A fresh topic on the emulator, and a function that pulls (and acknowledges) up to n of its messages."""
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    suffix = uuid.uuid4().hex[:8]
    topic = publisher.topic_path(PROJECT, f"{prefix}-{suffix}")
    sub = subscriber.subscription_path(PROJECT, f"{prefix}-{suffix}-sub")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)

    def pull(n: int) -> list:
        received: list = []
        deadline = time.time() + 60
        while len(received) < n and time.time() < deadline:
            resp = subscriber.pull(subscription=sub, max_messages=10, timeout=10)
            received += resp.received_messages
            if resp.received_messages:
                subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in resp.received_messages])
        return received

    try:
        yield topic, pull
    finally:
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)


def _streaming() -> PipelineOptions:
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    return opts


@pytest.mark.integration
def test_anomalies_published_to_the_pubsub_emulator_with_attributes() -> None:
    rows = _anomalies()[:5]
    with _topic("anomalies") as (topic, pull):
        stream = TestStream().add_elements(rows).advance_watermark_to_infinity()
        with TestPipeline(options=_streaming()) as p:
            _ = p | stream | PublishAnomalies(topic)
        received = pull(len(rows))
    assert sorted(orjson.loads(m.message.data)["anomaly_id"] for m in received) == sorted(
        r.anomaly_id for r in rows
    )
    for m in received:
        body = orjson.loads(m.message.data)
        assert dict(m.message.attributes) == {k: body[k] for k in ("kind", "stage", "tenant", "severity")}


@pytest.mark.integration
def test_a_record_that_cannot_be_a_message_is_a_dead_letter_and_the_rest_are_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Turning a record into a Pub/Sub message is contained: the one that raises becomes an internal_error dead
    letter (source publish), the others reach the topic."""
    import stagewatch.stream.sinks as sinks

    original = sinks.pubsub_message

    def fussy(record: Anomaly) -> object:
        if record.anomaly_id == "poison":
            raise ValueError("cannot be a message")
        return original(record)

    monkeypatch.setattr(sinks, "pubsub_message", fussy)
    rows = _anomalies()[:3]
    with _topic("contained") as (topic, pull):
        stream = TestStream().add_elements([dataclasses.replace(rows[0], anomaly_id="poison"), *rows])
        with TestPipeline(options=_streaming()) as p:
            publish = PublishAnomalies(topic)
            _ = p | stream.advance_watermark_to_infinity() | publish
            (errors,) = publish.internal_errors
            assert_that(errors | beam.Map(lambda d: (d.reason, d.source, "cannot be a message" in d.detail)),
                        equal_to([("internal_error", "publish", True)]))
        received = pull(len(rows))
    assert sorted(orjson.loads(m.message.data)["anomaly_id"] for m in received) == sorted(r.anomaly_id for r in rows)
