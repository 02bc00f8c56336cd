"""Whole lines drawn by hypothesis through the backtest, in one process and in two: no crash, every line
accounted for (event, rejected with its reason, or blank), each rejected line dead-lettered, and the verdicts
about the files of the clean input unchanged (Jaccard >= 0.999 -- in practice equal)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewatch.cli import main
from tests.hostile import CleanDay, Drawn, Verdict, jaccard, placed, whole_lines

pytestmark = pytest.mark.cli


def replay(logs: Path, out: Path, processes: str) -> tuple[list[dict], list[dict], dict]:
    out.mkdir()
    code = main(["replay", str(logs), "-o", str(out / "a.jsonl"), "--dead-letters", str(out / "d.jsonl"),
                 "--summary-json", str(out / "s.json"), "--processes", processes, "--no-progress"])
    assert code == 0
    rows = [[orjson.loads(x) for x in (out / name).read_bytes().splitlines()] for name in ("a.jsonl", "d.jsonl")]
    return rows[0], rows[1], orjson.loads((out / "s.json").read_bytes())


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[CleanDay, dict[str, set[Verdict]]]:
    folder = tmp_path_factory.mktemp("fuzz")
    clean = CleanDay(folder)
    want = {p: clean.verdicts(replay(clean.path, folder / f"clean{p}", p)[0]) for p in ("1", "2")}
    assert want["1"] == want["2"] and len(want["1"]) > 50
    return clean, want


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_drawn_lines_change_no_verdict_and_are_all_accounted_for(day: tuple[CleanDay, dict[str, set[Verdict]]],
                                                                 tmp_path: Path, data: st.DataObject) -> None:
    clean, want = day
    drawn: list[Drawn] = data.draw(st.lists(whole_lines(clean.template), min_size=1, max_size=12), label="lines")
    processes = data.draw(st.sampled_from(["1", "2"]), label="processes")
    lines = placed(clean.lines, drawn)
    logs = tmp_path / "mixed.jsonl"
    logs.write_bytes(b"\n".join(lines) + b"\n")
    anomalies, dead, stats = replay(logs, tmp_path / f"out{len(list(tmp_path.iterdir()))}", processes)

    assert stats["lines"] == len(lines)
    assert stats["lines"] == stats["events"] + sum(stats["rejected"].values()) - stats["late"] + stats["blank"]
    assert Counter(d["reason"] for d in dead) == Counter(stats["rejected"])
    assert all(len(d.get("line") or "") <= 1000 for d in dead)
    assert jaccard(clean.verdicts(anomalies), want[processes]) >= 0.999
