"""Hostile lines through the streaming job (on the local runner): each rejected one dead-lettered with its reason
(blank ones counted, not dead-lettered), none changes a verdict about the other files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main
from stagewatch.evaluation.simulate import SHORT_FAULTS, SHORT_HOURS, SHORT_START, SimConfig, simulate_to_dir
from stagewatch.store.readers import read_table
from tests.hostile import hostile_lines, spliced

pytestmark = pytest.mark.pipeline


def _run(logs: Path, out: Path) -> tuple[set[tuple[str, str, str, str]], Counter[str]]:
    assert main(["run", "--input_file", str(logs), "--output_dir", str(out)]) == 0
    verdicts = {(a["kind"], a["uid"], a["stage"], a["event_time"]) for a in read_table(str(out), "anomalies")
                if not a["uid"].startswith("hostile-")}
    return verdicts, Counter(d["reason"] for d in read_table(str(out), "dead_letters"))


def test_hostile_lines_change_no_verdict_of_the_streaming_job(tmp_path: Path) -> None:
    simulate_to_dir(SimConfig(seed=5, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=3,
                              faults=SHORT_FAULTS), tmp_path)
    clean = tmp_path / "logs.jsonl"
    valid = clean.read_bytes().splitlines()
    template = next(e for e in map(orjson.loads, valid[:200]) if e.get("jsonPayload", {}).get("stage") == "detect")
    cases = hostile_lines(template)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\n".join(spliced(valid, cases)) + b"\n")
    want, want_dead = _run(clean, tmp_path / "clean")
    got, dead = _run(mixed, tmp_path / "mixed")
    assert got == want and len(want) > 100
    rejected = Counter(outcome for _, outcome, _ in cases if outcome not in ("blank", "event"))
    assert dead - want_dead == rejected
