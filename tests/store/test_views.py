"""The views and queries of templates/bigquery/: hand-made rows with known answers on the BigQuery emulator, their
partition filters, the views against their queries, the CLI, and the SQL shipped with the package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagewatch.cli import main
from stagewatch.core.lots import LotJudge, add_file
from stagewatch.core.records import Anomaly, TraceSummary
from stagewatch.core.timeutil import US_PER_MS, US_PER_S, format_rfc3339, parse_rfc3339_us
from stagewatch.investigate.explain import explain
from stagewatch.store.readers import LocalTables, json_shaped, read_table
from stagewatch.store.schemas import TABLES, row_problems
from stagewatch.store.views import PACKAGED_DIR, REPO_DIR, Query, create_all, load_queries, run_query
from tests.emulators import PROJECT, bigquery_client
from tests.simulated_run import load_run, write_run
from tests.stream.test_template_files import DOCKERFILE, image_file, parse_dockerfile, pip_installs

REPO = Path(__file__).resolve().parents[2]
DAY = "2026-06-06"
BIG = 1e6  # a wait no answer may contain: rows with it sit where the query must not look

# --- rows in the sink's shapes ----------------------------------------------------------------------------------


def _us(text: str) -> int:
    return parse_rfc3339_us(text)


def trace(uid: str, first: str, waits: list[tuple[str, float]], *, tenant: str | None = "acme",
          lot: str | None = None, status: str = "complete") -> dict[str, Any]:
    """A trace summary: ``detect`` at ``first``, then each (stage, wait in ms) after the one before; a negative wait
    is written as the trace does (``skew``, 0 ms, and counted in ``negative_gaps``)."""
    t = _us(first)
    stages = [{"stage": "detect", "time": format_rfc3339(t), "duration_ms": None, "reported_ms": None,
               "verdict": "start"}]
    for stage, wait_ms in waits:
        t += int(wait_ms * US_PER_MS)
        stages.append({"stage": stage, "time": format_rfc3339(t), "duration_ms": max(0.0, float(wait_ms)),
                       "reported_ms": None, "verdict": "ok" if wait_ms >= 0 else "skew"})
    # A trace's first and last times are its earliest and latest stage's (``Trace``), whatever their order.
    first_us = min(_us(s["time"]) for s in stages)
    row = {"uid": uid, "tenant": tenant, "lot": lot, "status": status, "first_time": format_rfc3339(first_us),
           "last_time": max(s["time"] for s in stages),
           "end_to_end_ms": (t - first_us) / US_PER_MS if status == "complete" else None,
           "stages": stages, "missing_stages": [], "negative_gaps": sum(w < 0 for _, w in waits),
           "closed_at": max(s["time"] for s in stages)}
    assert row_problems("traces", row) == []
    return row


def anomaly(uid: str, kind: str, stage: str, at: str, *, tenant: str = "acme", observed_ms: float = 5000.0,
            expected_ms: float = 1000.0) -> dict[str, Any]:
    return (Anomaly(
        anomaly_id=f"{kind}-{uid}-{stage}-{at}", kind=kind, uid=uid, stage=stage, last_stage="detect", tenant=tenant,
        lot=None, event_time=at, detected_at=at, observed_ms=observed_ms, expected_ms=expected_ms,
        threshold_ms=2 * expected_ms, score=observed_ms / (2 * expected_ms), baseline_n=100, baseline="stage",
        severity="critical", measure="wait", message=f"{stage} of {uid}: {kind}")).to_dict()


def incident(incident_id: str, event: str, at: str, started: str, files: int, sample: list[str],
             resolved: str | None = None) -> dict[str, Any]:
    row = {"incident_id": incident_id, "event": event, "kind": "slow_stage", "stage": "upload", "scope": "global",
           "scope_key": None, "tenants": ["acme"], "affected_tenants": 1, "active_tenants": 3, "started_at": started,
           "resolved_at": resolved, "at": at, "files": files, "sample_uids": sample, "worst_observed_ms": 9000.0,
           "expected_ms": 1000.0, "message": f"{incident_id} {event}"}
    assert row_problems("incidents", row) == []
    return row


def minutes(text: str, n: float) -> str:
    return format_rfc3339(_us(text) + int(n * 60 * US_PER_S))


# --- the emulator -----------------------------------------------------------------------------------------------


@pytest.fixture
def bq() -> Iterator[tuple[Any, str]]:
    """A client and a fresh dataset with the tables and the views."""
    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_views_{uuid.uuid4().hex[:8]}"
    try:
        tables, views = create_all(client, dataset)
        assert sorted(tables) == sorted(TABLES)
        assert sorted(views) == ["clock_skew_today", "incidents_today", "lot_durations_today",
                                 "slowest_tenants_today", "stage_latency_today"]
        yield client, dataset
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()


def insert(bq: tuple[Any, str], table: str, rows: list[dict[str, Any]]) -> None:
    client, dataset = bq
    assert client.insert_rows_json(f"{dataset}.{table}", rows) == []


def answer(bq: tuple[Any, str], name: str, **params: str) -> list[dict[str, Any]]:
    client, dataset = bq
    return [json_shaped(r) for r in run_query(client, dataset, QUERIES[name], params)]


QUERIES: dict[str, Query] = load_queries()


# --- the answers ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_stage_latency_compares_the_day_with_the_same_hours_of_the_same_weekday(bq: tuple[Any, str]) -> None:
    rows = []
    # The day: 21 files from 10:00 to 10:20, uploads waiting 100, 200, ... 2100 ms; registers 10 ms.
    rows += [trace(f"d{i}", minutes(f"{DAY}T10:00:00Z", i), [("upload", 100 * (i + 1)), ("register", 10)])
             for i in range(21)]
    # The same hours one and two weeks before: uploads 50 .. 1050 ms over the two days.
    rows += [trace(f"w1-{i}", minutes("2026-05-30T10:00:00Z", i), [("upload", 50 * (i + 1)), ("register", 10)])
             for i in range(11)]
    rows += [trace(f"w2-{i}", minutes("2026-05-23T10:00:30Z", i), [("upload", 50 * (i + 12)), ("register", 10)])
             for i in range(10)]
    slow = [("upload", BIG), ("register", BIG)]
    rows += [
        trace("before-the-hours", "2026-05-30T09:59:59Z", slow),
        trace("after-the-hours", "2026-05-30T10:20:01Z", slow),
        trace("another-weekday", "2026-06-05T10:05:00Z", slow),
        trace("three-weeks-before", "2026-05-16T10:05:00Z", slow),
        trace("the-day-after", "2026-06-07T10:05:00Z", slow),
        trace("a-week-after", "2026-06-13T10:05:00Z", slow),
    ]
    insert(bq, "traces", rows + rows[:1])  # a retried streaming insert: one file's row twice, counted once
    got = answer(bq, "stage_latency", day=DAY, weeks="2")
    hours = {"hours_from": f"{DAY}T10:00:00.000000Z", "hours_to": f"{DAY}T10:20:00.000000Z"}
    assert got == [
        {"stage": "upload", "n": 21, "p50_ms": 1100.0, "p95_ms": 2000.0, "n_before": 21, "days_before": 2,
         "p50_before_ms": 550.0, "p95_before_ms": 1000.0, "p50_ratio": 2.0, "p95_ratio": 2.0, **hours},
        {"stage": "register", "n": 21, "p50_ms": 10.0, "p95_ms": 10.0, "n_before": 21, "days_before": 2,
         "p50_before_ms": 10.0, "p95_before_ms": 10.0, "p50_ratio": 1.0, "p95_ratio": 1.0, **hours},
    ]
    # Three weeks reach the decoy on the same weekday; the default (four) too.
    for weeks in ({"weeks": "3"}, {}):
        upload = answer(bq, "stage_latency", day=DAY, **weeks)[0]
        assert (upload["stage"], upload["n_before"], upload["days_before"]) == ("upload", 22, 3)
    assert answer(bq, "stage_latency", day="2026-06-08") == []  # no data that day


@pytest.mark.integration
def test_slowest_tenants_rank_by_p95_end_to_end_with_counts_and_anomalies(bq: tuple[Any, str]) -> None:
    t = f"{DAY}T12:00:00Z"
    insert(bq, "traces", [
        trace("w1", t, [("upload", 9000)], tenant="wayne"),
        trace("w1", t, [("upload", 9000)], tenant="wayne"),  # a retried streaming insert: counted once
        trace("w2", t, [("upload", 10)], tenant="wayne", status="failed"),
        *[trace(f"a{ms}", t, [("upload", ms)], tenant="acme") for ms in (1000, 2000, 3000)],
        trace("a-stalled", t, [("upload", 10)], tenant="acme", status="stalled"),
        trace("h1", t, [("upload", 10)], tenant="hooli", status="open"),
        trace("nobody", t, [("upload", BIG)], tenant=None),
        trace("acme-the-day-before", "2026-06-05T23:59:59.999999Z", [("upload", BIG)], tenant="acme"),
        trace("acme-the-day-after", "2026-06-07T00:00:00Z", [("upload", BIG)], tenant="acme"),
    ])
    twice = anomaly("a1000", "slow_stage", "upload", f"{DAY}T12:00:01Z")
    insert(bq, "anomalies", [
        twice, twice,  # a retried streaming insert counts once
        anomaly("a-stalled", "stalled", "download", f"{DAY}T12:10:00Z"),
        anomaly("w1", "slow_trace", "end_to_end", f"{DAY}T12:00:09Z", tenant="wayne"),
        anomaly("w9", "slow_trace", "end_to_end", "2026-06-07T00:00:01Z", tenant="wayne"),
    ])
    got = answer(bq, "slowest_tenants", day=DAY)
    assert [r["tenant"] for r in got] == ["wayne", "acme", "hooli"]
    wayne, acme, hooli = got
    assert wayne == {"tenant": "wayne", "p50_ms": 9000.0, "p95_ms": 9000.0, "files": 2, "complete": 1, "stalled": 0,
                     "failed": 1, "open": 0, "anomalies": 1}
    assert acme["p95_ms"] == pytest.approx(2900.0, rel=1e-12)  # 2000 + 0.9 x (3000 - 2000)
    assert {k: v for k, v in acme.items() if k != "p95_ms"} == {
        "tenant": "acme", "p50_ms": 2000.0, "files": 4, "complete": 3, "stalled": 1, "failed": 0, "open": 0,
        "anomalies": 2}
    assert hooli == {"tenant": "hooli", "p50_ms": None, "p95_ms": None, "files": 1, "complete": 0, "stalled": 0,
                     "failed": 0, "open": 1, "anomalies": 0}


@pytest.mark.integration
def test_clock_skew_names_the_customers_and_stages_whose_waits_came_out_negative(bq: tuple[Any, str]) -> None:
    t = f"{DAY}T12:00:00Z"
    held = trace("a5", t, [("upload", 100)], tenant="acme", status="open")
    held["stages"][1].update(duration_ms=None, verdict="held")
    insert(bq, "traces", [
        # wayne's host of `detect` runs 2.5 s ahead of the upload service: its waits at upload, the stage after,
        # come out negative, all but one slow file's.
        *[trace(f"w{i}", t, [("upload", -2500 + i), ("analyse", 900)], tenant="wayne") for i in range(3)],
        trace("w-slow", t, [("upload", 400), ("analyse", 900)], tenant="wayne"),
        trace("w0", t, [("upload", -2500), ("analyse", 900)], tenant="wayne"),  # a retried insert: counted once
        # acme's clock is right but for one file; hooli's never inverts, and is not listed.
        trace("a1", t, [("upload", -5), ("analyse", 900)], tenant="acme"),
        *[trace(f"a{i}", t, [("upload", 100), ("analyse", 900)], tenant="acme") for i in range(2, 5)],
        trace("h1", t, [("upload", 100), ("analyse", 900)], tenant="hooli"),
        held,  # a stage waiting for the one before it when the trace closed: no wait, not counted
        trace("n1", t, [("upload", -10)], tenant=None),
        # Dated by their first stage's time: upload's, 2.5 s before detect's.
        trace("w-the-day-before", "2026-06-06T00:00:02Z", [("upload", -2500)], tenant="wayne"),
        trace("w-the-day-after", "2026-06-07T00:00:02.5Z", [("upload", -2500)], tenant="wayne"),
    ])
    got = [(r["tenant"], r["stage"], r["negative"], r["waits"], r["negative_share"])
           for r in answer(bq, "clock_skew", day=DAY)]
    assert got == [(None, "upload", 1, 1, 1.0), ("wayne", "upload", 3, 4, 0.75), ("acme", "upload", 1, 4, 0.25)]


@pytest.mark.integration
def test_lot_durations_measure_as_the_lots_judge_and_carry_its_verdict(bq: tuple[Any, str]) -> None:
    lot_a = [
        trace("a1", f"{DAY}T10:00:00Z", [("upload", 300_000)], lot="lot-a", tenant="wayne"),
        trace("a2", f"{DAY}T10:02:00Z", [("upload", 120_000)], lot="lot-a", tenant="acme"),
        trace("a3", f"{DAY}T10:03:00Z", [("upload", 1_020_000)], lot="lot-a", tenant="acme", status="stalled"),
    ]
    # Begun before midnight, its last file after: it is the day's, whole.
    lot_b = [trace("b1", f"{DAY}T23:50:00Z", [("upload", 60_000)], lot="lot-b", tenant="hooli"),
             trace("b2", "2026-06-07T00:10:00Z", [("upload", 300_000)], lot="lot-b", tenant="hooli")]
    lot_c = [trace("c1", "2026-06-05T23:55:00Z", [("upload", 1000)], lot="lot-c"),  # began the day before
             trace("c2", f"{DAY}T00:05:00Z", [("upload", 1000)], lot="lot-c")]
    lot_d = [trace("d1", "2026-06-07T09:00:00Z", [("upload", 1000)], lot="lot-d")]  # begins the day after
    insert(bq, "traces", lot_a + lot_a[2:] + lot_b + lot_c + lot_d +  # a3 twice (a retried insert): one file
           [trace("no-lot", f"{DAY}T11:00:00Z", [("upload", 1)])])
    lot = None
    for row in lot_a:
        lot = add_file(lot, TraceSummary.from_dict(row))
    assert lot is not None
    verdict = LotJudge().judge("lot-a", lot)  # the core's own verdict on lot-a
    assert verdict is not None and verdict.kind == "lot_incomplete"
    incomplete = verdict.to_dict()
    slow = {"lot": "lot-b", "kind": "lot_slow", "tenants": ["hooli"], "files": 2,
            "started_at": lot_b[0]["first_time"],
            "submitted_at": lot_b[1]["first_time"], "finished_at": lot_b[1]["last_time"],
            "judged_at": f"{DAY}T12:00:00.000000Z", "duration_ms": 300_000.0, "expected_ms": 60_000.0,
            "unfinished": [], "message": "lot lot-b took 5.0 min"}
    assert row_problems("lots", incomplete) == [] and row_problems("lots", slow) == []
    insert(bq, "lots", [incomplete, slow])
    got = answer(bq, "lot_durations", day=DAY)
    assert got == [
        {"lot": "lot-a", "tenants": ["acme", "wayne"], "files": 3, "unfinished": 1,
         "started_at": f"{DAY}T10:00:00.000000Z", "submitted_at": f"{DAY}T10:03:00.000000Z",
         "finished_at": f"{DAY}T10:20:00.000000Z", "duration_ms": 1_020_000.0, "span_ms": 1_200_000.0,
         "verdict": "lot_incomplete", "expected_ms": None, "message": incomplete["message"]},
        {"lot": "lot-b", "tenants": ["hooli"], "files": 2, "unfinished": 0,
         "started_at": f"{DAY}T23:50:00.000000Z", "submitted_at": "2026-06-07T00:10:00.000000Z",
         "finished_at": "2026-06-07T00:15:00.000000Z", "duration_ms": 300_000.0, "span_ms": 1_500_000.0,
         "verdict": "lot_slow", "expected_ms": 60_000.0, "message": "lot lot-b took 5.0 min"},
    ]
    assert got[0]["duration_ms"] == incomplete["duration_ms"] == (lot.last_us - lot.submitted_us) / US_PER_MS


@pytest.mark.integration
def test_uid_timeline_lists_stages_anomalies_and_incidents_in_time_order(bq: tuple[Any, str]) -> None:
    me = trace("f-1", f"{DAY}T10:00:00Z", [("upload", 5000), ("register", 1000)], status="stalled")
    others = [trace(f"o{i}", f"{DAY}T10:10:00Z", [("upload", 1000 * i)] + ([("register", 500)] if i < 5 else []))
              for i in range(1, 6)]
    # An upload an hour before mine to the microsecond counts ("within an hour either side", as explain has
    # it); one more than an hour before does not ...
    others += [trace("hour-before", f"{DAY}T08:59:59Z", [("upload", 6000)]),
               trace("more-than-an-hour-before", f"{DAY}T08:30:00Z", [("upload", BIG)])]
    # ... nor a file begun more than 2 h before mine, though its upload came near mine; nor one begun more
    # than an hour after my last stage; nor my own older trace.
    others += [trace("too-early", f"{DAY}T07:55:00Z", [("upload", 95 * 60_000)]),
               trace("too-late", f"{DAY}T11:00:07Z", [("upload", BIG)]),
               trace("f-1", "2026-06-05T23:00:00Z", [("upload", BIG)])]
    insert(bq, "traces", [me, *others])
    slow = anomaly("f-1", "slow_stage", "register", f"{DAY}T10:00:06Z")
    stall = anomaly("f-1", "stalled", "analyse", f"{DAY}T10:30:00Z", observed_ms=1_794_000.0)
    insert(bq, "anomalies", [slow, slow, stall, anomaly("f-1", "slow_stage", "upload", "2026-06-08T10:00:00Z"),
                             anomaly("o1", "slow_stage", "upload", f"{DAY}T10:10:01Z")])
    insert(bq, "incidents", [incident("i1", "opened", f"{DAY}T10:02:00Z", f"{DAY}T10:00:05Z", 5, ["f-1", "o2"]),
                             incident("i2", "opened", f"{DAY}T10:03:00Z", f"{DAY}T10:00:05Z", 5, ["o1"])])
    got = [tuple(r.values()) for r in answer(bq, "uid_timeline", uid="f-1", day=DAY)]
    assert got == [
        (f"{DAY}T10:00:00.000000Z", "stage", "detect", "start", None, None, None, None),
        # usual: the median of 1000 .. 5000 and the hour-before's 6000
        (f"{DAY}T10:00:05.000000Z", "stage", "upload", "ok", 5000.0, 3500.0, 6, None),
        # flagged there (4 others would be too few anyway): the usual its verdict used, as explain shows it
        (f"{DAY}T10:00:06.000000Z", "stage", "register", "ok", 1000.0, 1000.0, None, None),
        (f"{DAY}T10:00:06.000000Z", "anomaly", "register", "slow_stage", 5000.0, 1000.0, None, slow["message"]),
        (f"{DAY}T10:02:00.000000Z", "incident", "upload", "opened", 9000.0, 1000.0, None, "i1 opened"),
        (f"{DAY}T10:30:00.000000Z", "anomaly", "analyse", "stalled", 1_794_000.0, 1000.0, None, stall["message"]),
    ]
    # A day with no trace of the file still shows its anomalies of that day and the next: the streaming job
    # writes a stalled file's trace only when its session closes, an hour after the stall.
    assert [(r["time"], r["source"]) for r in answer(bq, "uid_timeline", uid="f-1", day="2026-06-07")] == [
        ("2026-06-08T10:00:00.000000Z", "anomaly")]


@pytest.mark.integration
def test_incidents_of_a_day_as_their_last_event_that_day_left_them(bq: tuple[Any, str]) -> None:
    insert(bq, "incidents", [
        incident("i1", "opened", f"{DAY}T09:00:00Z", f"{DAY}T08:59:00Z", 5, ["a"]),
        incident("i1", "updated", f"{DAY}T09:05:00Z", f"{DAY}T08:59:00Z", 8, ["a"]),
        incident("i1", "resolved", f"{DAY}T09:30:00Z", f"{DAY}T08:59:00Z", 8, ["a"], resolved=f"{DAY}T09:30:00Z"),
        incident("i2", "opened", "2026-06-05T23:00:00Z", "2026-06-05T22:58:00Z", 5, ["b"]),
        incident("i2", "updated", f"{DAY}T00:10:00Z", "2026-06-05T22:58:00Z", 7, ["b"]),
        incident("i2", "updated", "2026-06-07T00:00:00Z", "2026-06-05T22:58:00Z", 9, ["b"]),
        incident("i3", "opened", "2026-06-07T00:30:00Z", "2026-06-07T00:29:00Z", 5, ["c"]),
    ])
    got = [(r["incident_id"], r["last_event"], r["started_at"], r["resolved_at"], r["last_event_at"], r["files"])
           for r in answer(bq, "incidents", day=DAY)]
    assert got == [
        ("i2", "updated", "2026-06-05T22:58:00.000000Z", None, f"{DAY}T00:10:00.000000Z", 7),
        ("i1", "resolved", f"{DAY}T08:59:00.000000Z", f"{DAY}T09:30:00.000000Z", f"{DAY}T09:30:00.000000Z", 8),
    ]


@pytest.mark.integration
def test_each_view_answers_as_its_query_does_for_today(bq: tuple[Any, str]) -> None:
    client, dataset = bq

    def today() -> str:
        return str(next(iter(client.query("SELECT CURRENT_DATE() AS d").result()))["d"])

    day = today()
    week_before = format_rfc3339(_us(f"{day}T00:00:00Z") - 7 * 86_400 * US_PER_S)[:10]
    insert(bq, "traces", [
        trace("t1", f"{day}T00:00:01Z", [("upload", 300)], lot="lot-1"),
        trace("t2", f"{day}T00:00:02Z", [("upload", 100)], lot="lot-1", tenant="wayne"),
        trace("b1", f"{week_before}T00:00:01Z", [("upload", 100)]),
        trace("s1", f"{day}T00:00:03Z", [("upload", -2500)], tenant="wayne"),
    ])
    insert(bq, "anomalies", [anomaly("t1", "slow_stage", "upload", f"{day}T00:00:01.3Z")])
    insert(bq, "incidents", [incident("i1", "opened", f"{day}T00:00:02Z", f"{day}T00:00:01Z", 5, ["t1"])])
    views = {v.name: q for q in QUERIES.values() for v in q.views}
    for _ in range(2):  # once more if midnight (UTC) passed meanwhile
        got = {v: [json_shaped(dict(r.items())) for r in client.query(f"SELECT * FROM `{dataset}.{v}`").result()]
               for v in views}
        want = {v: answer(bq, q.name, day=day) for v, q in views.items()}
        if today() == day:
            break
    assert got == want
    assert all(got.values())  # every view saw today's rows
    assert got["stage_latency_today"][0]["p95_ratio"] == pytest.approx(2.9)  # (100 + 0.95 x 200) / 100


@pytest.mark.integration
def test_uid_timeline_shows_what_explain_shows_for_a_simulated_file(tmp_path: Path) -> None:
    out = write_run(tmp_path)
    stalled = next(a for a in read_table(str(out), "anomalies") if a["kind"] == "stalled")
    first_time = next(t for t in read_table(str(out), "traces") if t["uid"] == stalled["uid"])["first_time"]
    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_timeline_{uuid.uuid4().hex[:8]}"
    try:
        load_run(client, dataset, out)
        rows = [json_shaped(r) for r in run_query(client, dataset, QUERIES["uid_timeline"],
                                                  {"uid": stalled["uid"], "day": first_time[:10]})]
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()
    text = explain(stalled["uid"], LocalTables(str(out)))
    stages = [r for r in rows if r["source"] == "stage"]
    assert len(stages) >= 3
    for r in stages:  # explain's row for the stage: "  stage  time  waited  usual (n=N)  verdict"
        line = next(line for line in text.splitlines() if line.split()[:2] == [r["stage"], r["time"]])
        usual = re.search(r"\(n=(\d+)\)", line)
        assert (int(usual.group(1)) if usual else None) == r["usual_n"], line
    assert [(r["what"], r["stage"]) for r in rows if r["source"] == "anomaly"] == [
        (a["kind"], a["stage"]) for a in sorted(read_table(str(out), "anomalies"),
                                                key=lambda a: (a["event_time"], a["stage"]))
        if a["uid"] == stalled["uid"]]


# --- the CLI ----------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_cli_creates_the_views_and_runs_a_query_and_a_view(capsys: pytest.CaptureFixture[str]) -> None:
    dataset = f"{PROJECT}.stagewatch_cli_{uuid.uuid4().hex[:8]}"
    client = bigquery_client()
    try:
        assert main(["bigquery", "create", "--dataset", dataset]) == 0
        said = capsys.readouterr().out
        assert "tables created: anomalies, traces, dead_letters, incidents, lots" in said
        assert "views created or replaced: clock_skew_today, incidents_today, lot_durations_today, " \
               "slowest_tenants_today, stage_latency_today" in said
        assert main(["bigquery", "create", "--dataset", dataset]) == 0
        assert "tables created: none (all there)" in capsys.readouterr().out
        assert client.insert_rows_json(f"{dataset}.traces", [trace("x1", f"{DAY}T10:00:00Z", [("upload", 250)])]) == []
        assert main(["bigquery", "query", "stage_latency", "--dataset", dataset, "--param", f"day={DAY}"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split()[:4] == ["stage", "n", "p50_ms", "p95_ms"]
        assert lines[1].split()[:4] == ["upload", "1", "250", "250"]
        assert main(["bigquery", "query", "incidents_today", "--dataset", dataset, "--json"]) == 0
        assert capsys.readouterr().out == ""  # no incident today: no line
        for argv, says in [
            (["bigquery", "query", "stage_latency", "--dataset", dataset], "needs --param day="),
            (["bigquery", "query", "stage_latency", "--dataset", dataset, "--param", "day=06/06"], "not a DATE"),
            (["bigquery", "query", "stage_latency", "--dataset", dataset, "--param", "week=2"], "no parameter week"),
            (["bigquery", "query", "stage_latency_today", "--dataset", dataset, "--param", "day=2026-06-06"],
             "is a view: it takes no parameters"),
            (["bigquery", "query", "slow", "--dataset", dataset], "no query or view 'slow'"),
            (["bigquery", "create", "--dataset", "stagewatch"], "--dataset must look like PROJECT.DATASET"),
            (["bigquery", "query", "incidents", "--dataset", f"{PROJECT}.missing", "--param", f"day={DAY}"],
             "BigQuery refused"),
        ]:
            assert main(argv) == 2, argv
            assert says in capsys.readouterr().err, argv
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()


@pytest.mark.cli
def test_cli_prints_a_query_for_bq_and_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bigquery", "sql", "stage_latency", "--dataset", "my-proj.stagewatch"]) == 0
    sql = capsys.readouterr().out
    text = (REPO_DIR / "stage_latency.sql").read_text(encoding="utf-8")
    assert sql == text.replace("${dataset}", "my-proj.stagewatch")
    assert "`my-proj.stagewatch.traces`" in sql and "@day" in sql
    assert main(["bigquery", "list"]) == 0
    listed = capsys.readouterr().out
    for q in QUERIES.values():
        assert q.name in listed and q.reads in listed


# --- the SQL files themselves -----------------------------------------------------------------------------------

# What a partition filter's bound may be made of, so that BigQuery prunes with it: a constant expression
# (literals, query parameters, CURRENT_DATE()), never a column.
_CONSTANT_WORDS = {"TIMESTAMP", "TIMESTAMP_SUB", "TIMESTAMP_ADD", "DATE_SUB", "DATE_ADD", "INTERVAL", "DAY", "WEEK",
                   "HOUR", "CURRENT_DATE"}


def _constant(expr: str) -> bool:
    words = re.findall(r"@?[A-Za-z_][A-Za-z_0-9]*", expr)
    return all(w.startswith("@") or w in _CONSTANT_WORDS for w in words)


def _bounds(sql: str, column: str) -> tuple[list[str], list[str]]:
    """The right-hand sides of ``column >= ...`` and ``column < ...`` comparisons, to the end of the line."""
    found: dict[str, list[str]] = {">=": [], "<": []}
    for op, rhs in re.findall(rf"(?<![\w.])(?:\w+\.)?`?{column}`?\s*(>=|<)\s*([^\n]+)", sql):
        found[op].append(rhs.split("--")[0].strip())
    return found[">="], found["<"]


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_and_view_filters_every_table_it_reads_on_its_partition_column(name: str) -> None:
    query = QUERIES[name]
    assert query.tables, "reads no table"
    texts = [query.body] + [query.view_sql(v, "p.d") for v in query.views]
    for table in query.tables:
        column = TABLES[table].partition_field
        assert table in query.reads and column in query.reads, f"the comment does not say how {table} is read"
        assert len(re.findall(rf"`\$\{{dataset\}}\.{table}`", query.body)) == 1, f"{table} read more than once"
        for text in texts:
            lower, upper = _bounds(text, column)
            assert any(map(_constant, lower)) and any(map(_constant, upper)), (table, column, lower, upper)


@pytest.mark.unit
def test_the_static_check_catches_a_missing_or_non_constant_partition_filter() -> None:
    assert _bounds("WHERE t.first_time >= TIMESTAMP(@day)\n AND first_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))",
                   "first_time") == (["TIMESTAMP(@day)"], ["TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))"])
    assert _bounds("WHERE DATE(first_time) = @day", "first_time") == ([], [])
    assert not _constant("TIMESTAMP_SUB(t.first_time, INTERVAL 2 HOUR)")
    assert _bounds("WHERE last_first_time >= @a AND x.first_time_2 < @b", "first_time") == ([], [])
    assert _constant("TIMESTAMP(DATE_SUB((CURRENT_DATE()), INTERVAL (4) WEEK))")


@pytest.mark.unit
def test_views_are_their_queries_with_the_parameters_bound() -> None:
    query = QUERIES["stage_latency"]
    (view,) = query.views
    assert view.name == "stage_latency_today" and view.bindings == {"day": "CURRENT_DATE()", "weeks": "4"}
    sql = query.view_sql(view, "my-proj.sw")
    assert "@" not in sql and "${" not in sql and "`my-proj.sw.traces`" in sql
    assert "DATE_SUB((CURRENT_DATE()), INTERVAL (4) WEEK)" in sql
    assert "-- " not in query.runnable("p.d").split("\n", 1)[0]  # the comment block is not sent


@pytest.mark.unit
@pytest.mark.parametrize(("edit", "says"), [
    (lambda s: s.replace("-- Partitions read:", "-- Reads:"), "which partitions it reads"),
    (lambda s: s.replace("-- param @weeks INT64 = 4: how many earlier weeks to compare it with\n", ""),
     "parameters used ['day', 'weeks'] but declared ['day']"),
    (lambda s: s.replace("; weeks = 4", ""), "view stage_latency_today binds ['day']"),
    (lambda s: s.replace("`${dataset}.traces`", "`${dataset}.trace`"), "unknown tables ['trace']"),
    (lambda s: s.replace("@day DATE", "@day DAY"), "TYPE one of"),
])
def test_a_malformed_sql_file_is_refused_with_what_is_wrong(tmp_path: Path, edit: Any, says: str) -> None:
    text = (REPO_DIR / "stage_latency.sql").read_text(encoding="utf-8")
    (tmp_path / "stage_latency.sql").write_text(edit(text), encoding="utf-8")
    assert edit(text) != text
    with pytest.raises(ValueError, match=re.escape(says)):
        load_queries(tmp_path)


# --- shipped with the package -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_sql_ships_in_the_sdist_and_the_built_package(tmp_path: Path) -> None:
    """setup.py copies templates/bigquery into the package it builds; MANIFEST.in puts it in the sdist (which
    Beam builds for the workers), so a package built from the sdist has it too."""
    source = tmp_path / "source"  # what the Dockerfile copies next to setup.py
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(REPO / name, source / name)
    for folder in ("pipelines", "templates"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=source, check=True,
                   capture_output=True)
    (sdist,) = (tmp_path / "dist").glob("stagewatch-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    built = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(built)], cwd=unpacked, check=True,
                   capture_output=True)
    shipped = built / PACKAGED_DIR.relative_to(PACKAGED_DIR.parents[2])
    assert sorted(p.name for p in shipped.glob("*.sql")) == sorted(f"{q}.sql" for q in QUERIES)
    found = subprocess.run([sys.executable, "-c", "from stagewatch.store.views import load_queries, sql_dir; "
                            "print(sql_dir()); print(sorted(load_queries()))"], cwd=tmp_path, check=True,
                           capture_output=True, text=True, env={"PYTHONPATH": str(built)}).stdout.splitlines()
    assert found == [str(shipped), str(sorted(QUERIES))]


@pytest.mark.unit
def test_the_flex_template_image_holds_the_sql_next_to_setup_py() -> None:
    """The image installs the package from the folder that holds setup.py (``pip install .``): the views and
    queries must be there for setup.py's build to copy them into the package."""
    df = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    (setup_dir,) = {workdir for args, workdir in pip_installs(df) if "." in args}
    for sql in REPO_DIR.glob("*.sql"):
        assert image_file(df, f"{setup_dir}/templates/bigquery/{sql.name}") == sql
