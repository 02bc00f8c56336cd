"""Whole lines drawn by hypothesis through the streaming job (local runner): the job finishes, the verdicts about
the clean input's files are unchanged (Jaccard >= 0.999), and its dead letters are the backtest's rejected lines,
reason for reason -- the two drivers take every drawn line the same way. Few examples: a run takes ~15 s; the
backtest's fuzz test draws many more through the same parser and clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewatch.cli import main
from stagewatch.store.readers import read_table
from tests.hostile import CleanDay, Drawn, Verdict, jaccard, placed, whole_lines

pytestmark = pytest.mark.pipeline


def run(logs: Path, out: Path) -> tuple[list[dict], Counter[str]]:
    assert main(["run", "--input_file", str(logs), "--output_dir", str(out)]) == 0
    return list(read_table(str(out), "anomalies")), Counter(d["reason"] for d in read_table(str(out), "dead_letters"))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[CleanDay, set[Verdict]]:
    folder = tmp_path_factory.mktemp("fuzz")
    clean = CleanDay(folder)
    want = clean.verdicts(run(clean.path, folder / "clean")[0])
    assert len(want) > 50
    return clean, want


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_drawn_lines_change_no_verdict_of_the_streaming_job(day: tuple[CleanDay, set[Verdict]], tmp_path: Path,
                                                            data: st.DataObject) -> None:
    clean, want = day
    drawn: list[Drawn] = data.draw(st.lists(whole_lines(clean.template), min_size=4, max_size=16), label="lines")
    logs = tmp_path / "mixed.jsonl"
    logs.write_bytes(b"\n".join(placed(clean.lines, drawn)) + b"\n")
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    anomalies, dead = run(logs, out)
    assert jaccard(clean.verdicts(anomalies), want) >= 0.999
    summary = out / "replay.json"
    assert main(["replay", str(logs), "-o", str(out / "replay.jsonl"), "--summary-json", str(summary),
                 "--no-progress"]) == 0
    assert dead == Counter(orjson.loads(summary.read_bytes())["rejected"])
