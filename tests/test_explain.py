"""stagewatch explain: a simulated stalled file's timeline from a local output folder."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main

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
    missing = next(line for line in lines if line.strip().startswith(stalled["stage"]))
    assert "deadline passed" in missing and missing.rstrip().endswith("STALLED")
    assert f"has not reached {stalled['stage']}" in text
    assert main(["explain", "no-such-file", "--input", str(out)]) == 2
    assert "no file 'no-such-file'" in capsys.readouterr().err
