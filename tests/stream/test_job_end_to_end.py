"""The whole job against the emulators: LogEntry messages published to Pub/Sub, the job run on the subscription
(DirectRunner, streaming), anomalies pulled from the anomaly topic, rows queried back from BigQuery."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.cloud import pubsub_v1

from stagewatch.core.timeutil import US_PER_S, format_rfc3339
from stagewatch.stream.pipeline import run
from tests.emulators import PROJECT, bigquery_client

pytestmark = pytest.mark.integration

TIMESTAMP_ATTRIBUTE = "logging.googleapis.com/timestamp"


def _entry(uid: str, stage: str, t_us: int, severity: str = "INFO") -> tuple[bytes, dict[str, str]]:
    body = {
        "insertId": f"{uid}-{stage}", "timestamp": format_rfc3339(t_us), "severity": severity,
        "jsonPayload": {"uid": uid, "stage": stage, "tenant": "acme", "lot": "lot-1"},
    }
    # What a Cloud Logging sink sets: the entry's time as the message's timestamp attribute.
    return orjson.dumps(body), {TIMESTAMP_ATTRIBUTE: format_rfc3339(t_us)}


def _until(what: str, check: Callable[[], Any], seconds: float = 150) -> Any:
    deadline = time.time() + seconds
    while time.time() < deadline:
        got = check()
        if got:
            return got
        time.sleep(2)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def test_logentries_in_anomalies_out_through_pubsub_and_bigquery(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    logs_topic = publisher.topic_path(PROJECT, f"logs-{suffix}")
    logs_sub = subscriber.subscription_path(PROJECT, f"logs-{suffix}")
    out_topic = publisher.topic_path(PROJECT, f"anomalies-{suffix}")
    out_sub = subscriber.subscription_path(PROJECT, f"anomalies-{suffix}")
    for topic, sub in ((logs_topic, logs_sub), (out_topic, out_sub)):
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=sub, topic=topic)
    dataset = f"{PROJECT}.stagewatch_e2e_{suffix}"
    bq = bigquery_client()
    result = run([
        "--input_subscription", logs_sub, "--output_topic", out_topic, "--bigquery_dataset", dataset,
        "--stages", "a,b,c", "--output_dir", str(tmp_path), "--publish_anomalies", "true",
        "--runner", "StagewatchLocalRunner", "--allowed_lateness_s", "5",
        # One-minute baseline intervals: the job's first interval, which the first verdicts wait for, ends sooner.
        "--baseline_interval_s", "60",
    ], wait=False)
    try:
        # The local runner's Pub/Sub watermark trails the oldest line of each pull by --allowed_lateness_s (5 s
        # here: the entries are published in order; the default 60 s would add a minute to every wait below):
        # entries of a few seconds ago are on time.
        now = int(time.time() * US_PER_S)
        messages = [
            _entry("ok-1", "a", now - 30 * US_PER_S), _entry("ok-1", "b", now - 28 * US_PER_S),
            _entry("ok-1", "c", now - 25 * US_PER_S),
            *[entry for i in range(1, 6) for entry in (
                _entry(f"bad-{i}", "a", now - (21 - i) * US_PER_S),
                _entry(f"bad-{i}", "b", now - (16 - i) * US_PER_S, "ERROR"),
            )],
            (b"{this is not json", {}),
            # Dated an hour ahead of the processing time: dead-lettered as future, never a trace (nor a watermark).
            _entry("ahead-1", "a", now + 3600 * US_PER_S),
        ]
        for data, attrs in messages:
            publisher.publish(logs_topic, data, **attrs).result(timeout=30)

        def pulled() -> list[Any]:
            resp = subscriber.pull(subscription=out_sub, max_messages=10, timeout=10)
            if resp.received_messages:
                subscriber.acknowledge(subscription=out_sub, ack_ids=[m.ack_id for m in resp.received_messages])
            return list(resp.received_messages)

        received: list[Any] = []

        def anomalies_and_incident() -> bool:
            received.extend(pulled())
            bodies = [orjson.loads(m.message.data) for m in received]
            return len([b for b in bodies if "anomaly_id" in b]) >= 5 and any("incident_id" in b for b in bodies)

        # The incident step decides half a baseline interval (30 s) behind the watermark (docs/incidents.md);
        # in a job's first interval the watermark behind the judging waits up to a fold's grace (30 s) more for
        # the next snapshot, which judges what that interval measured (JudgeDeferred): up to 60 s, and the
        # wall clock here decides where the interval ends; the watermark trails the wall clock by 5 s more.
        _until("five failed anomalies and an incident on the topic", anomalies_and_incident, seconds=300)
        first = next(m for m in received if orjson.loads(m.message.data).get("uid") == "bad-1")
        body = orjson.loads(first.message.data)
        assert (body["kind"], body["uid"], body["stage"], body["last_stage"]) == ("failed", "bad-1", "b", "a")
        assert dict(first.message.attributes) == {
            "kind": "failed", "stage": "b", "tenant": "acme", "severity": body["severity"]
        }
        incident = next(m for m in received if "incident_id" in orjson.loads(m.message.data))
        opened = orjson.loads(incident.message.data)
        # Five failures of one customer's one batch: the narrowest scope that holds them is that lot.
        assert (opened["event"], opened["kind"], opened["stage"], opened["scope"], opened["scope_key"]) == (
            "opened", "failed", "b", "lot", "lot-1")
        assert dict(incident.message.attributes) == {"kind": "failed", "stage": "b", "event": "opened",
                                                     "scope": "lot"}

        def rows(sql: str, at_least: int = 1) -> list[Any]:
            got = list(bq.query(sql).result(timeout=60))
            return got if len(got) >= at_least else []

        anomalies = _until("the anomaly in BigQuery", lambda: rows(
            f"SELECT anomaly_id, kind, uid FROM `{dataset}.anomalies` WHERE uid = 'bad-1'"))
        assert [(r["anomaly_id"], r["kind"]) for r in anomalies] == [(body["anomaly_id"], "failed")]
        traces = _until("the trace summaries in BigQuery", lambda: rows(
            f"SELECT uid, status FROM `{dataset}.traces` ORDER BY uid", at_least=6))
        assert [(r["uid"], r["status"]) for r in traces] == [
            *[(f"bad-{i}", "failed") for i in range(1, 6)], ("ok-1", "complete")]
        stored = _until("the incident in BigQuery", lambda: rows(
            f"SELECT incident_id, event, files FROM `{dataset}.incidents` WHERE event = 'opened'"))
        assert [(r["incident_id"], r["files"]) for r in stored] == [(opened["incident_id"], 5)]
        dead = _until("the malformed and the future message as dead letters", lambda: rows(
            f"SELECT reason, source FROM `{dataset}.dead_letters` ORDER BY reason", at_least=2))
        assert [(r["reason"], r["source"]) for r in dead] == [("future", "parse"), ("invalid_json", "parse")]
        # The local output folder (given too) holds the same, as JSONL named for the tables.
        local = [orjson.loads(line) for f in tmp_path.glob("anomalies*.jsonl") for line in f.read_bytes().splitlines()]
        assert sorted(a["uid"] for a in local) == [f"bad-{i}" for i in range(1, 6)]
    except AssertionError:
        # Say what the job did write, locally: the BigQuery dead letters tell why rows were refused.
        for f in sorted(tmp_path.glob("*.jsonl")):
            print(f.name, f.read_text()[:3000])
        raise
    finally:
        result.cancel()
        for sub in (logs_sub, out_sub):
            subscriber.delete_subscription(subscription=sub)
        for topic in (logs_topic, out_topic):
            publisher.delete_topic(topic=topic)
        bq.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        bq.close()
