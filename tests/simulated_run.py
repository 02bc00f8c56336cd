"""A simulated run's tables, locally and in the BigQuery emulator: the same rows in both, for the readers' tests.

``write_run`` simulates three hours with the five faults (seed 4) and replays them into one folder, named as
``stagewatch run --output_dir`` names its files, holding every table in the shape the streaming job's BigQuery
sink inserts: anomalies and traces are the records' ``to_dict()`` (what ``replay`` writes), incidents
the tracker's events; replay's dead letters are re-stamped a second apart just after the run (distinct
times, for the span filters' tests); lots come from the core's ``LotJudge`` (three hours are too short for
``replay --lots`` to judge any).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from stagewatch.cli import main
from stagewatch.core.lots import Lot, LotJudge, add_file
from stagewatch.core.records import TraceSummary, dead_letter
from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us
from stagewatch.store.bigquery import create_tables
from stagewatch.store.readers import read_table
from stagewatch.store.schemas import TABLES, row_problems

__all__ = ["load_run", "write_run"]


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def write_run(folder: Path) -> Path:
    """The run's tables as ``<table>.jsonl`` in ``folder / "out"``; returns that folder."""
    sim, out = folder / "sim", folder / "out"
    out.mkdir(parents=True)
    assert main(["simulate", str(sim), "--short", "--seed", "4", "--rate", "8"]) == 0
    assert main(["replay", str(sim / "logs.jsonl"), "-o", str(out / "anomalies.jsonl"), "--traces",
                 str(out / "traces.jsonl"), "--incidents", str(out / "incidents.jsonl"), "--dead-letters",
                 str(folder / "replay_dead_letters.jsonl"), "--no-progress"]) == 0
    replayed = map(orjson.loads, (folder / "replay_dead_letters.jsonl").read_bytes().splitlines())
    received = parse_rfc3339_us("2026-06-06T15:00:00.000001Z")
    dead = [dead_letter(d["reason"], d.get("detail") or "", d.get("line") or "",
                        format_rfc3339(received + i * US_PER_S), "parse").to_dict() for i, d in enumerate(replayed)]
    _write(out / "dead_letters.jsonl", dead)
    lots: dict[str, Lot] = {}
    for row in read_table(str(out), "traces"):
        trace = TraceSummary.from_dict(row)
        if trace.lot:
            lots[trace.lot] = add_file(lots.get(trace.lot), trace)
    judge = LotJudge()
    records = [r.to_dict() for lot_id, lot in sorted(lots.items()) if (r := judge.judge(lot_id, lot)) is not None]
    _write(out / "lots.jsonl", records)
    return out


def load_run(client: Any, dataset: str, out: Path) -> dict[str, list[dict[str, Any]]]:
    """Create the tables in ``dataset`` and insert every row of ``out``; returns the rows by table."""
    create_tables(client, dataset)
    by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for table in TABLES:
        rows = list(read_table(str(out), table))
        assert rows, f"the simulated run has no {table}"
        # The emulator takes rows BigQuery would refuse (it does not enforce REQUIRED), so check them here.
        assert [p for r in rows if (p := row_problems(table, r))] == []
        for start in range(0, len(rows), 500):  # the sink's batch size
            assert client.insert_rows_json(f"{dataset}.{table}", rows[start:start + 500]) == []
        by_table[table] = rows
    return by_table
