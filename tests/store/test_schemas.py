"""BigQuery tables: row checks (unit), and creation, partitioning, inserts and queries on the emulator."""

from __future__ import annotations

import uuid

import pytest

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.core.records import dead_letter
from stagewatch.store.bigquery import create_tables
from stagewatch.store.schemas import TABLES, row_problems
from tests.emulators import PROJECT, bigquery_client
from tests.streams import PIPE_FOR_TABLES, run, steady_stream


def _records():  # type: ignore[no-untyped-def]
    def slow(stage: str, t: int) -> float:
        return 20.0 if stage == "b" and t > steady[-1].t_us - 600_000_000 else 1.0

    steady = steady_stream(PIPE_FOR_TABLES, hours=1, every_s=10, seed=1)
    events = steady_stream(PIPE_FOR_TABLES, hours=1, every_s=10, seed=1, factor=slow)
    anomalies, summaries, _ = run(events, PIPE_FOR_TABLES.stages, DetectorConfig())
    assert anomalies and summaries
    return anomalies, summaries


@pytest.mark.unit
def test_rows_of_real_records_fit_their_schemas() -> None:
    anomalies, summaries = _records()
    assert all(row_problems("anomalies", a.to_dict()) == [] for a in anomalies)
    assert all(row_problems("traces", s.to_dict()) == [] for s in summaries)
    dead = dead_letter("invalid_json", "unexpected end", "{", "2026-06-06T00:00:00Z", "parse").to_dict()
    assert row_problems("dead_letters", dead) == []


@pytest.mark.unit
def test_row_problems_name_what_bigquery_would_reject() -> None:
    anomalies, summaries = _records()
    row = anomalies[0].to_dict()
    assert row_problems("anomalies", {**row, "kind": None}) == ["kind: required"]
    assert row_problems("anomalies", {**row, "score": "high"}) == ["score: expected FLOAT, got str"]
    assert row_problems("anomalies", {**row, "event_time": "yesterday"}) == ["event_time: not an RFC 3339 timestamp"]
    assert row_problems("anomalies", {**row, "extra": 1}) == ["extra: not in the schema"]
    assert row_problems("anomalies", {**row, "observed_ms": float("nan")}) == ["observed_ms: NaN"]
    trace = summaries[0].to_dict()
    trace["stages"][0]["time"] = 5
    assert row_problems("traces", trace) == ["stages.time: expected TIMESTAMP, got int"]


@pytest.mark.integration
def test_tables_created_partitioned_clustered_and_queryable_on_the_emulator() -> None:
    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_tables_{uuid.uuid4().hex[:8]}"
    try:
        assert sorted(create_tables(client, dataset)) == sorted(TABLES)
        assert create_tables(client, dataset) == []  # created only when missing
        for name, spec in TABLES.items():
            table = client.get_table(f"{dataset}.{name}")
            assert [f.name for f in table.schema] == [f.name for f in spec.fields]
            assert table.time_partitioning.field == spec.partition_field
            assert table.time_partitioning.type_ == "DAY"
            assert table.clustering_fields == list(spec.clustering)
        anomalies, summaries = _records()
        assert client.insert_rows_json(f"{dataset}.anomalies", [a.to_dict() for a in anomalies]) == []
        assert client.insert_rows_json(f"{dataset}.traces", [s.to_dict() for s in summaries[:50]]) == []
        rows = list(client.query(
            f"SELECT kind, stage, COUNT(*) AS n FROM `{dataset}.anomalies` "
            f"WHERE DATE(event_time) >= '2020-01-01' GROUP BY kind, stage ORDER BY n DESC"
        ).result(timeout=60))
        assert rows and rows[0]["kind"] == "slow_stage" and rows[0]["stage"] == "b"
        assert sum(r["n"] for r in rows) == len(anomalies)
        n_traces = list(client.query(f"SELECT COUNT(*) AS n FROM `{dataset}.traces`").result(timeout=60))
        assert n_traces[0]["n"] == 50
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()


@pytest.mark.integration
def test_an_older_release_table_gains_the_new_columns_and_takes_new_rows() -> None:
    """A dataset made by an older release: its incidents table lacks ``lots`` and ``arrived``; the launch's
    ``create_tables`` adds them (as REPEATED / NULLABLE, the only modes BigQuery adds)."""
    from google.cloud import bigquery

    from stagewatch.store.bigquery import _schema

    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_evolve_{uuid.uuid4().hex[:8]}"
    try:
        client.create_dataset(dataset)
        spec = TABLES["incidents"]
        old = tuple(f for f in spec.fields if f.name not in ("lots", "arrived"))
        client.create_table(bigquery.Table(f"{dataset}.incidents", schema=_schema(old)))
        done = create_tables(client, dataset)
        assert "incidents +lots,arrived" in done and "lots" in done
        table = client.get_table(f"{dataset}.incidents")
        assert {f.name: f.mode for f in table.schema}["lots"] == "REPEATED"
        assert {f.name for f in table.schema} == {f.name for f in spec.fields}
        # Rows with the new columns cannot be checked here: the emulator records the new schema but its
        # storage does not grow the columns (an insert answers HTTP 500). On BigQuery, adding NULLABLE and
        # REPEATED columns with tables.update is the documented way to evolve a table in place.
        assert create_tables(client, dataset) == []  # nothing left to add
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()
