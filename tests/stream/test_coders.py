"""The records that travel between the job's steps survive the coder Beam picks for them: same type, same value,
and a deterministic form exists (what a grouping by them would need). On Dataflow every fusion break encodes them;
the in-process runner mostly does not, so this is checked here directly."""

from __future__ import annotations

from typing import Any

import pytest
from apache_beam.coders import registry

from stagewatch.core.events import StageEvent
from stagewatch.core.feed import TenantActivity
from stagewatch.core.measurements import Arrival, Deadline, FileRef, Measured, Measurement, Progress, StallInfo
from stagewatch.core.records import DeadLetter, IncidentEvent, LotFile, LotRecord, StageTiming, TraceSummary
from tests.records import anomaly, closed_summary, lot_record
from tests.streams import T0

pytestmark = pytest.mark.unit

_FILE = FileRef("f-1", "acme", None)
RECORDS: list[Any] = [
    StageEvent("f-1", "upload", T0, "acme", "lot-1", "id-1", False, 12.5),
    Measured(_FILE, "upload", Measurement("wait", 1, 830.0, T0), T0 + 5),
    Progress(_FILE, "enqueue", 4, T0, T0 + 5),
    Deadline(Progress(_FILE, "enqueue", 4, T0, T0 + 5), T0 + 60_000_000, StallInfo(4, 900.0, 60_000.0, 41, True)),
    Arrival("f-1", "download", T0 + 90_000_000),
    TenantActivity(T0, ("acme", "hooli")),
    anomaly("stalled", "f-1", "download", T0, "acme"),
    closed_summary("f-1", "acme", T0),
    TraceSummary(uid="f-2", tenant=None, lot="lot-1", status="stalled", first_time="2026-06-06T00:00:00.000000Z",
                 last_time="2026-06-06T00:00:01.000000Z", end_to_end_ms=None,
                 stages=(StageTiming("a", "2026-06-06T00:00:00.000000Z", None, None, "start"),),
                 missing_stages=("b",), negative_gaps=0, closed_at="2026-06-06T00:05:00.000000Z"),
    lot_record("lot-1", "lot_incomplete", T0, ["f-1", "f-2"]),
    LotRecord("lot-2", ("acme",), 3, "a", "b", "c", "d", 1.0, "lot_slow", 0.2, (LotFile("f", "complete", None, "z"),),
              "slow"),
    IncidentEvent("i-1", "opened", "stalled", "download", "global", None, ("acme",), 1, 3, "a", None, "b", 5,
                  ("f-1",), (), 0, 900.0, 100.0, "files stall before download"),
    DeadLetter("late", "behind", "{}", "2026-06-06T00:00:00.000000Z", "late"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_record_round_trips_through_its_beam_coder(record: Any) -> None:
    coder = registry.get_coder(type(record))
    back = coder.decode(coder.encode(record))
    assert type(back) is type(record) and back == record
    deterministic = coder.as_deterministic_coder("a step grouping by it")
    assert deterministic.decode(deterministic.encode(record)) == record
