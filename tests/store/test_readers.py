"""The run's tables read back: BigQuery rows in the JSON shape of the local files, and the filters on both."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stagewatch.core.timeutil import parse_rfc3339_us
from stagewatch.store.readers import BigQueryTables, LocalTables, json_shaped
from stagewatch.store.schemas import TABLES
from tests.emulators import PROJECT, bigquery_client
from tests.simulated_run import load_run, write_run


def _canonical(rows: Iterator[dict[str, Any]]) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)


@pytest.mark.unit
def test_json_shaped_writes_timestamps_as_the_local_files_do() -> None:
    t = dt.datetime(2026, 6, 6, 13, 30, 19, 884269, tzinfo=dt.UTC)
    row = {"at": t, "day": dt.date(2026, 6, 6), "stages": [{"time": t, "duration_ms": 1.5}], "tenants": ("a", "b"),
           "none": None}
    assert json_shaped(row) == {"at": "2026-06-06T13:30:19.884269Z", "day": "2026-06-06",
                                "stages": [{"time": "2026-06-06T13:30:19.884269Z", "duration_ms": 1.5}],
                                "tenants": ["a", "b"], "none": None}
    assert json_shaped(dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)) == "1969-12-31T23:59:59.999999Z"


@pytest.mark.unit
def test_a_dataset_that_is_not_project_dot_dataset_is_refused_before_any_query() -> None:
    class NoClient:
        def query(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no query may be sent")

    for bad in ("stagewatch", "my-proj.data-set", "my-proj.x`; DROP TABLE y; --", "My-Proj.d"):
        with pytest.raises(ValueError, match=r"must look like PROJECT\.DATASET"):
            BigQueryTables(bad, client=NoClient())
    assert BigQueryTables("my-proj:stagewatch", client=NoClient()).where == "bigquery:my-proj.stagewatch"


@pytest.fixture(scope="module")
def run_in_bigquery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, BigQueryTables]]:
    out = write_run(tmp_path_factory.mktemp("run"))
    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_tables_{uuid.uuid4().hex[:8]}"
    try:
        load_run(client, dataset, out)
        yield out, BigQueryTables(dataset, client=client)
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()


@pytest.mark.integration
def test_every_table_reads_back_from_bigquery_equal_to_its_local_file(
    run_in_bigquery: tuple[Path, BigQueryTables],
) -> None:
    out, bq = run_in_bigquery
    local = LocalTables(str(out))
    for table in TABLES:
        assert _canonical(bq.rows(table)) == _canonical(local.rows(table)), table
    # Nested and repeated fields came back as dicts and lists, timestamps as the same text.
    trace = next(bq.rows("traces"))
    assert isinstance(trace["stages"], list) and isinstance(trace["stages"][0], dict)
    assert trace["first_time"] == trace["stages"][0]["time"]
    assert parse_rfc3339_us(trace["first_time"]) > 0
    lot = next(r for r in bq.rows("lots") if r["unfinished"])
    assert set(lot["unfinished"][0]) == {"uid", "status", "tenant", "last_stage"}


@pytest.mark.integration
def test_uid_and_span_filters_select_the_same_rows_as_the_local_reader(
    run_in_bigquery: tuple[Path, BigQueryTables],
) -> None:
    out, bq = run_in_bigquery
    local = LocalTables(str(out))
    stalled = next(a for a in local.rows("anomalies") if a["kind"] == "stalled")
    for table in ("traces", "anomalies"):
        mine = _canonical(bq.rows(table, uid=stalled["uid"]))
        assert mine and mine == _canonical(local.rows(table, uid=stalled["uid"]))
    # A uid that only a parameter could smuggle into SQL: a value, never text of the query.
    assert list(bq.rows("traces", uid="x' OR '1'='1")) == []
    assert list(bq.rows("incidents", uid=stalled["uid"])) == []  # no uid column: no row is one file's
    # Half-open spans on each table's partition column, bounds to the microsecond.
    for table in TABLES:
        column = TABLES[table].partition_field
        times = sorted(parse_rfc3339_us(r[column]) for r in local.rows(table))
        since, until = times[len(times) // 4], times[3 * len(times) // 4]
        got = _canonical(bq.rows(table, since_us=since, until_us=until))
        assert got == _canonical(local.rows(table, since_us=since, until_us=until)), table
        assert 0 < len(got) < len(times)
        assert _canonical(bq.rows(table, since_us=since)) == _canonical(local.rows(table, since_us=since))
        assert _canonical(bq.rows(table, until_us=until)) == _canonical(local.rows(table, until_us=until))


@pytest.mark.unit
def test_a_local_folder_with_broken_rows_gives_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    from stagewatch.store.readers import LocalTables

    (tmp_path / "traces-1.jsonl").write_bytes(b'{"uid": "f-1", "first_time": "2026-06-06T12:00:00Z"}\n{"uid": "f-')
    with pytest.raises(ValueError, match=r"traces-1.jsonl, line 2: not JSON"):
        list(LocalTables(str(tmp_path)).rows("traces"))
    (tmp_path / "traces-1.jsonl").write_bytes(b"[1, 2]\n")
    with pytest.raises(ValueError, match="line 1: not a traces row"):
        list(LocalTables(str(tmp_path)).rows("traces"))
    (tmp_path / "dead_letters-1.jsonl").write_bytes(b'{"reason": "invalid_json", "detail": "", "line": "{"}\n')
    with pytest.raises(ValueError, match="has no received_at"):
        list(LocalTables(str(tmp_path)).rows("dead_letters", since_us=0))
