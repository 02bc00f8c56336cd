"""stagewatch explain: a simulated stalled file's timeline from a local output folder, and from BigQuery."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main
from stagewatch.core.timeutil import format_duration_ms
from tests.emulators import PROJECT, bigquery_client
from tests.simulated_run import load_run, write_run

pytestmark = pytest.mark.cli


def test_explain_a_stalled_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tmp_path / "sim"), "--short", "--seed", "4", "--rate", "8"]) == 0
    out = tmp_path / "out"
    out.mkdir()
    assert main(["replay", str(tmp_path / "sim" / "logs.jsonl"), "-o", str(out / "anomalies.jsonl"),
                 "--traces", str(out / "traces.jsonl"), "--no-progress"]) == 0
    stalled = next(a for a in map(orjson.loads, (out / "anomalies.jsonl").read_bytes().splitlines())
                   if a["kind"] == "stalled")
    capsys.readouterr()
    assert main(["explain", stalled["uid"], "--input", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith(f"{stalled['uid']} · tenant {stalled['tenant']}") and lines[0].endswith("STALLED")
    last = next(line for line in lines if line.strip().startswith(stalled["last_stage"]))
    assert "(n=" in last  # what is usual at that hour, from the other files
    missing = [line for line in lines if line.strip().startswith(stalled["stage"])]
    assert "deadline passed" in missing[-1] and missing[-1].rstrip().endswith("STALLED")
    # Before its stall, flagged slow while still waiting there (at the stage's line).
    assert missing[0].rstrip().endswith("SLOW_STAGE (still in it)")
    assert f"has not reached {stalled['stage']}" in text
    assert main(["explain", "no-such-file", "--input", str(out)]) == 2
    assert "no file 'no-such-file'" in capsys.readouterr().err
    # Told the file's day, it reads only the partitions around it: the same timeline; another day, none.
    day = stalled["event_time"][:10]
    assert main(["explain", stalled["uid"], "--input", str(out), "--day", day]) == 0
    assert capsys.readouterr().out == text
    assert main(["explain", stalled["uid"], "--input", str(out), "--day", "2026-01-01"]) == 2
    assert "near that day" in capsys.readouterr().err
    assert main(["explain", stalled["uid"], "--input", str(out), "--day", "June 6"]) == 2
    assert "--day must be a date" in capsys.readouterr().err
    # One baseline in both places: a customer's slow upload shows, in the table, the usual its message names.
    anomalies = list(map(orjson.loads, (out / "anomalies.jsonl").read_bytes().splitlines()))
    slow = next(a for a in anomalies if a["kind"] == "slow_stage" and a["baseline"] == "tenant")
    assert main(["explain", slow["uid"], "--input", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.strip().startswith(slow["stage"] + " "))
    usual = format_duration_ms(slow["expected_ms"])
    assert f"{usual} for {slow['tenant']}" in row and f"usually {usual} for {slow['tenant']}" in slow["message"]
    others = [line for line in lines[2:] if "(n=" in line]
    assert others and all(f"for {slow['tenant']} (n=" in line for line in others)  # the customer's own, too


@pytest.mark.integration
def test_explain_from_bigquery_prints_the_timeline_explain_prints_from_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = write_run(tmp_path)
    stalled = next(a for a in map(orjson.loads, (out / "anomalies.jsonl").read_bytes().splitlines())
                   if a["kind"] == "stalled")
    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_explain_{uuid.uuid4().hex[:8]}"
    try:
        load_run(client, dataset, out)
        capsys.readouterr()
        assert main(["explain", stalled["uid"], "--input", str(out)]) == 0
        from_folder = capsys.readouterr().out
        assert main(["explain", stalled["uid"], "--bigquery", dataset]) == 0
        from_bigquery = capsys.readouterr().out
        assert from_bigquery == from_folder
        assert from_bigquery.splitlines()[0].endswith("STALLED") and "deadline passed" in from_bigquery
        assert main(["explain", "no-such-file", "--bigquery", dataset]) == 2
        assert f"no file 'no-such-file' in bigquery:{dataset}" in capsys.readouterr().err
        assert main(["explain", stalled["uid"], "--bigquery", f"{PROJECT}.no_such_dataset"]) == 2
        assert "BigQuery refused" in capsys.readouterr().err
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()


def test_explain_takes_exactly_one_of_input_and_bigquery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["explain", "f-1"], ["explain", "f-1", "--input", str(tmp_path), "--bigquery", "my-proj.sw"]):
        assert main(argv) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["explain", "f-1", "--bigquery", "stagewatch"]) == 2
    assert "--bigquery must look like PROJECT.DATASET" in capsys.readouterr().err
