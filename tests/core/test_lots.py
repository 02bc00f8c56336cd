"""Lots: a batch that did not finish is listed, a batch slow for its size is flagged, quiet decides when."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stagewatch.core.lots import LotConfig, LotTracker
from stagewatch.core.records import StageTiming, TraceSummary
from stagewatch.core.timeutil import US_PER_S, format_rfc3339
from tests.streams import T0

MIN = 60 * US_PER_S


def _summary(uid: str, lot: str, first_us: int, took_s: float, status: str = "complete") -> TraceSummary:
    last = first_us + int(took_s * US_PER_S)
    stages = (StageTiming("detect", format_rfc3339(first_us), None, None, "start"),
              StageTiming("download" if status != "complete" else "lot_check", format_rfc3339(last), 1.0, None, "ok"))
    return TraceSummary(uid=uid, tenant="acme", lot=lot, status=status, first_time=format_rfc3339(first_us),
                        last_time=format_rfc3339(last), end_to_end_ms=None, stages=stages, missing_stages=(),
                        negative_gaps=0, closed_at=format_rfc3339(last))


def _lot(lot: str, start_us: int, files: int, took_s: float, status: dict[int, str] | None = None
         ) -> list[TraceSummary]:
    return [_summary(f"{lot}-f{i}", lot, start_us + i * US_PER_S, took_s, (status or {}).get(i, "complete"))
            for i in range(files)]


@pytest.mark.unit
def test_an_unfinished_lot_lists_its_unfinished_files_once_quiet() -> None:
    tracker = LotTracker(LotConfig(quiet_s=600))
    out = []
    for s in _lot("lot-1", T0, 8, 30, {2: "stalled", 5: "failed"}):
        out += tracker.observe(s)
    assert out == []  # not quiet yet
    out = tracker.advance(T0 + 20 * MIN)
    assert [r.kind for r in out] == ["lot_incomplete"]
    assert [(f.uid, f.status) for f in out[0].unfinished] == [("lot-1-f2", "stalled"), ("lot-1-f5", "failed")]
    assert "2 of 8 files did not finish" in out[0].message
    assert "lot-1-f2 (stalled after download)" in out[0].message


@pytest.mark.unit
def test_a_lot_slow_for_its_size_after_warmup_and_not_before() -> None:
    tracker = LotTracker(LotConfig(quiet_s=600, warmup=5))
    out = []
    for k in range(12):  # 12 usual lots of 8 files, 40 s each after the last came in
        for s in _lot(f"lot-{k}", T0 + k * 30 * MIN, 8, 40):
            out += tracker.observe(s)
    out += tracker.advance(T0 + 12 * 30 * MIN)
    assert out == []
    for s in _lot("lot-slow", T0 + 13 * 30 * MIN, 9, 400):  # same size class (8-15 files), 10x longer
        out += tracker.observe(s)
    out += tracker.advance(T0 + 15 * 30 * MIN)
    assert [(r.kind, r.lot) for r in out] == [("lot_slow", "lot-slow")]
    assert out[0].expected_ms == pytest.approx(40_000, rel=0.01)
    cold = LotTracker(LotConfig(quiet_s=600, warmup=5))
    for s in _lot("lot-slow", T0, 9, 400):
        cold.observe(s)
    assert cold.advance(T0 + 60 * MIN) == []  # nothing to compare with yet: no verdict


@pytest.mark.unit
def test_a_lot_slow_only_because_of_one_file_names_it_and_opens_no_incident() -> None:
    """A held-out day: five lot_slow incidents at no fault, each one slow file's end to end over again."""
    from stagewatch.core.incidents import IncidentTracker

    tracker = LotTracker(LotConfig(quiet_s=600, warmup=5))
    out = []
    for k in range(8):
        for s in _lot(f"lot-{k}", T0 + k * 30 * MIN, 8, 40):
            out += tracker.observe(s)
    one = _lot("lot-echo", T0 + 9 * 30 * MIN, 8, 40)
    one[-1] = _summary("lot-echo-f7", "lot-echo", T0 + 9 * 30 * MIN + 7 * US_PER_S, 600)  # one file 15x slower
    many = _lot("lot-many", T0 + 11 * 30 * MIN, 8, 400)  # every file slow: the batch's own
    for s in one + many:
        out += tracker.observe(s)
    out += tracker.advance(T0 + 14 * 30 * MIN)
    assert [(r.kind, r.lot, r.slowed_by) for r in out] == [
        ("lot_slow", "lot-echo", "lot-echo-f7"), ("lot_slow", "lot-many", None)]
    assert "all of it one file, lot-echo-f7" in out[0].message
    incidents = IncidentTracker()
    assert incidents.add_lot(out[0]) == [] and incidents.explained_lots == 1
    assert [(e.event, e.kind, e.scope_key) for e in incidents.add_lot(out[1])] == [("opened", "lot_slow", "lot-many")]


@pytest.mark.unit
def test_bad_lot_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        LotConfig(factor=1.0)


@pytest.mark.cli
def test_replay_writes_lot_records_during_the_faults(tmp_path: Path) -> None:
    from stagewatch.cli import main
    from stagewatch.evaluation.simulate import SimConfig, simulate_to_dir

    manifest = simulate_to_dir(SimConfig(seed=5, hours=18), tmp_path)
    assert main(["replay", str(tmp_path / "logs.jsonl"), "-o", str(tmp_path / "a.jsonl"),
                 "--lots", str(tmp_path / "lots.jsonl"), "--no-progress"]) == 0
    records = [orjson.loads(x) for x in (tmp_path / "lots.jsonl").read_bytes().splitlines()]
    kinds = {r["kind"] for r in records}
    assert kinds == {"lot_incomplete", "lot_slow"}
    windows = [(f["start"], f["end"]) for f in manifest["faults"]]
    # Every lot record is about a batch that was in flight during an injected fault (an hour's slack).
    for r in records:
        assert any(start[:11] == r["submitted_at"][:11] and int(start[11:13]) - 1 <= int(r["submitted_at"][11:13])
                   <= int(end[11:13]) + 1 for start, end in windows), r["message"]
