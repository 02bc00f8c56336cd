"""Both emulators work end to end with the real Google client libraries (integration tier).

Pub/Sub: create a topic and a subscription, publish one message, pull it back, ack it.
BigQuery: create a dataset and a table, stream one row in with ``insert_rows_json``, query it back.
Names carry a random suffix so the tests also pass against a long-lived emulator.
"""

from __future__ import annotations

import time
import uuid

import pytest
from google.cloud import bigquery, pubsub_v1

from tests.emulators import PROJECT, bigquery_client

pytestmark = pytest.mark.integration


def _suffix() -> str:
    return uuid.uuid4().hex[:10]


def test_pubsub_emulator_publish_and_pull() -> None:
    # Both clients see PUBSUB_EMULATOR_HOST and switch to an insecure channel with no credentials.
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, f"stagewatch-topic-{_suffix()}")
    subscription = subscriber.subscription_path(PROJECT, f"stagewatch-sub-{_suffix()}")
    try:
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=30)
        message_id = publisher.publish(topic, b'{"file": "f-1"}', origin="stagewatch-test").result(timeout=30)

        received = []
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
            received.extend(response.received_messages)
        assert len(received) == 1, "the published message never arrived on the subscription"
        message = received[0].message
        assert message.message_id == message_id
        assert message.data == b'{"file": "f-1"}'
        assert message.attributes["origin"] == "stagewatch-test"
        subscriber.acknowledge(subscription=subscription, ack_ids=[received[0].ack_id])
    finally:
        subscriber.delete_subscription(subscription=subscription)
        publisher.delete_topic(topic=topic)
        subscriber.close()
        publisher.transport.close()


def test_bigquery_emulator_insert_and_query() -> None:
    client = bigquery_client()
    dataset_id = f"{PROJECT}.stagewatch_it_{_suffix()}"
    try:
        client.create_dataset(dataset_id)
        table = client.create_table(
            bigquery.Table(
                f"{dataset_id}.anomalies",
                schema=[
                    bigquery.SchemaField("file_id", "STRING", mode="REQUIRED"),
                    bigquery.SchemaField("stage", "STRING", mode="REQUIRED"),
                    bigquery.SchemaField("latency_s", "FLOAT64"),
                    bigquery.SchemaField("event_time", "TIMESTAMP"),
                ],
            )
        )
        row = {"file_id": "f-1", "stage": "ingest", "latency_s": 12.5, "event_time": "2026-01-02T03:04:05Z"}
        assert client.insert_rows_json(table, [row]) == []

        rows = list(
            client.query(
                f"SELECT file_id, stage, latency_s, FORMAT_TIMESTAMP('%FT%TZ', event_time) AS ts "
                f"FROM `{table.project}.{table.dataset_id}.{table.table_id}` WHERE stage = 'ingest'"
            ).result(timeout=60)
        )
        assert [dict(r.items()) for r in rows] == [
            {"file_id": "f-1", "stage": "ingest", "latency_s": 12.5, "ts": "2026-01-02T03:04:05Z"}
        ]
    finally:
        client.delete_dataset(dataset_id, delete_contents=True, not_found_ok=True)
        client.close()
