"""Incidents: grouping, scope from concentration, consequences joining causes, quiet resolution, a real day."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from stagewatch.evaluate import score_incidents
from stagewatch.incidents import IncidentConfig, IncidentTracker
from stagewatch.records import Anomaly, anomaly_id
from stagewatch.timeutil import US_PER_S, format_rfc3339
from tests.streams import T0

MIN = 60 * US_PER_S


def _a(kind: str, uid: str, stage: str, t_us: int, tenant: str | None, lot: str | None = None,
       observed: float = 900.0) -> Anomaly:
    return Anomaly(
        anomaly_id(kind, uid, stage, t_us), kind, uid, stage, None, tenant, lot, format_rfc3339(t_us),
        format_rfc3339(t_us), observed, 100.0, 250.0, observed / 250.0, 500, "stage", "critical", "wait", "m",
    )


def _feed(tracker: IncidentTracker, anomalies: list[Anomaly]) -> list[dict[str, Any]]:
    out = []
    for a in anomalies:
        out += tracker.add(a)
    return out


@pytest.mark.unit
def test_many_tenants_open_one_global_incident_with_counts() -> None:
    tracker = IncidentTracker()
    tenants = ["t1", "t2", "t3", "t4"]
    events = _feed(tracker, [_a("slow_stage", f"f{i}", "analyse", T0 + i * MIN, tenants[i % 4]) for i in range(30)])
    opened = [e for e in events if e["event"] == "opened"]
    assert len(opened) == 1
    assert (opened[0]["scope"], opened[0]["scope_key"], opened[0]["files"]) == ("global", None, 5)
    assert opened[0]["affected_tenants"] == 4
    updates = [e for e in events if e["event"] == "updated"]
    assert 1 <= len(updates) <= 6  # rate-limited: at most one per 5 minutes over 25 minutes
    assert tracker.open[0].uids == {f"f{i}" for i in range(30)}


@pytest.mark.unit
def test_one_tenant_opens_a_tenant_incident_that_others_do_not_join() -> None:
    tracker = IncidentTracker()
    slow = [_a("slow_stage", f"w{i}", "upload", T0 + i * MIN, "wayne") for i in range(8)]
    other = [_a("slow_stage", "x1", "upload", T0 + 9 * MIN, "acme")]
    events = _feed(tracker, slow + other)
    opened = [e for e in events if e["event"] == "opened"]
    assert [(e["scope"], e["scope_key"], e["tenants"]) for e in opened] == [("tenant", "wayne", ["wayne"])]
    assert "x1" not in tracker.open[0].uids
    assert "tenant wayne" in opened[0]["message"]


@pytest.mark.unit
def test_a_few_scattered_anomalies_open_nothing() -> None:
    tracker = IncidentTracker()
    scattered = [_a("slow_stage", f"f{i}", "register", T0 + i * 10 * MIN, "hooli") for i in range(10)]
    assert _feed(tracker, scattered) == []


@pytest.mark.unit
def test_slow_end_to_end_joins_the_stage_incident_that_explains_it() -> None:
    tracker = IncidentTracker()
    cause = [_a("slow_stage", f"f{i}", "analyse", T0 + i * MIN, f"t{i % 3}") for i in range(6)]
    effect = [_a("slow_trace", f"f{i}", "end_to_end", T0 + (i + 1) * MIN, f"t{i % 3}") for i in range(20)]
    events = _feed(tracker, cause + effect)
    assert [(e["kind"], e["stage"]) for e in events if e["event"] == "opened"] == [("slow_stage", "analyse")]
    assert len(tracker.open[0].uids) == 20


@pytest.mark.unit
def test_resolved_after_quiet_and_not_at_the_end_of_input() -> None:
    tracker = IncidentTracker(IncidentConfig(quiet_s=600))
    _feed(tracker, [_a("stalled", f"f{i}", "download", T0 + i * MIN, f"t{i % 4}") for i in range(10)])
    assert tracker.advance(T0 + 15 * MIN) == []  # 6 minutes after the last: not yet
    done = tracker.observe_summary({"closed_at": format_rfc3339(T0 + 25 * MIN), "tenant": "t1"})
    assert [(e["event"], e["resolved_at"]) for e in done] == [("resolved", format_rfc3339(T0 + 19 * MIN))]
    assert "resolved:" in done[0]["message"]
    again = IncidentTracker()
    _feed(again, [_a("failed", f"f{i}", "analyse", T0 + i * MIN, f"t{i % 4}") for i in range(10)])
    assert again.finish() == [] and len(again.open) == 1  # the end of a file is not the passage of time


@pytest.mark.unit
def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        IncidentConfig(open_count=0)


@pytest.mark.cli
def test_a_simulated_day_gives_one_incident_per_fault(tmp_path: Path) -> None:
    """Seed 6 (the tests' seeds are 1-9; benchmarks/incidents.py reports seeds 101-105)."""
    from stagewatch.cli import main
    from stagewatch.simulate import SimConfig, simulate_to_dir

    manifest = simulate_to_dir(SimConfig(seed=6), tmp_path)
    assert main(["replay", str(tmp_path / "logs.jsonl"), "-o", str(tmp_path / "a.jsonl"),
                 "--incidents", str(tmp_path / "incidents.jsonl"), "--no-progress"]) == 0
    events = [orjson.loads(x) for x in (tmp_path / "incidents.jsonl").read_bytes().splitlines()]
    rows, spurious = score_incidents(events, manifest["faults"])
    assert spurious == []
    for r in rows:
        assert r.incidents == 1 and r.scope_ok, r
        assert r.resolved_after_end_s is not None and r.resolved_after_end_s >= 0, r
    tenant = next(e for e in events if e["event"] == "opened" and e["scope"] == "tenant")
    assert tenant["tenants"] == ["wayne"]
    assert {e["event"] for e in events} == {"opened", "updated", "resolved"}
