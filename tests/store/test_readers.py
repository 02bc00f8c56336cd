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
def run_in_bigquery(tmp_path_factory: pytest.TempPathFactory,
                    emulator_hosts: dict[str, str]) -> Iterator[tuple[Path, BigQueryTables]]:
    # (emulator_hosts: started before this module-scoped fixture, which the per-test gate would come after)
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

    t = "2026-06-06T12:00:00Z"
    trace = {"uid": "f-1", "status": "complete", "first_time": t, "last_time": t, "closed_at": t,
             "stages": [{"stage": "upload", "time": t}]}
    traces = tmp_path / "traces-1.jsonl"
    traces.write_bytes(orjson.dumps(trace) + b'\n{"uid": "f-')
    with pytest.raises(ValueError, match=r"traces-1.jsonl, line 2: not JSON"):
        list(LocalTables(str(tmp_path)).rows("traces"))
    traces.write_bytes(b"[1, 2]\n")
    with pytest.raises(ValueError, match="line 1: not a traces row"):
        list(LocalTables(str(tmp_path)).rows("traces"))
    # A field missing or of another type: said with the file, the line and the field, not a KeyError later.
    broken: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in trace.items() if k != "status"}, "status: missing"),
        ({**trace, "status": None}, "status: missing"),
        ({**trace, "tenant": {"a": 1}}, "tenant: not a string"),
        ({**trace, "end_to_end_ms": "slow"}, "end_to_end_ms: not a float"),
        ({**trace, "end_to_end_ms": True}, "end_to_end_ms: not a float"),
        ({**trace, "stages": {"stage": "upload"}}, "stages: not a list"),
        ({**trace, "stages": [{"time": t}]}, "stages.stage: missing"),
        ({**trace, "missing_stages": ["upload", 3]}, "missing_stages: not a string"),
    ]
    for row, problem in broken:
        traces.write_bytes(orjson.dumps(trace) + b"\n" + orjson.dumps(row) + b"\n")
        with pytest.raises(ValueError, match=f"traces-1.jsonl, line 2: this traces row is not as stagewatch writes "
                                             f"it \\({problem}\\)"):
            list(LocalTables(str(tmp_path)).rows("traces"))
    traces.write_bytes(orjson.dumps({k: v for k, v in trace.items() if k != "stages"}) + b"\n")
    assert [r["stages"] for r in LocalTables(str(tmp_path)).rows("traces")] == [[]]  # absent repeated: empty
    (tmp_path / "dead_letters-1.jsonl").write_bytes(b'{"reason": "invalid_json", "received_at": "noon"}\n')
    with pytest.raises(ValueError, match="has a received_at that is not an RFC 3339 time: 'noon'"):
        list(LocalTables(str(tmp_path)).rows("dead_letters", since_us=0))
