"""Where a slow file's time went: the stages a ``slow_trace`` verdict names (``core.evidence``)."""

from __future__ import annotations

import math

import pytest

from stagewatch.core.baselines import Snapshot
from stagewatch.core.evidence import MAX_NAMED, contributors
from stagewatch.core.stages import StageOrder
from stagewatch.core.traces import TraceRules
from tests.streams import T0, Pipeline, S, run, steady_stream

pytestmark = pytest.mark.unit

RULES = TraceRules(StageOrder.parse("a,b,c,d,e"))


def _snap(median_ms: float) -> Snapshot:
    return Snapshot(median_ms, 4 * median_ms, 500.0, 0.3, 10**9, 0.0, math.nan, math.nan)


def _lookup(medians: dict[str, float]):  # type: ignore[no-untyped-def]
    return lambda name: (_snap(medians[name]), False) if name in medians else (None, False)


def test_the_stages_over_their_usual_are_named_largest_first_until_most_of_the_excess_is_covered() -> None:
    medians = {"b": 100.0, "c": 1000.0, "d": 50.0, "e": 10.0}
    # Excess: b +900, c +3000, d +40 (under a tenth of the total: not named), e below its usual.
    parts = (("wait", 1, 1000.0), ("wait", 2, 4000.0), ("wait", 3, 90.0), ("wait", 4, 5.0))
    assert contributors(parts, _lookup(medians), RULES) == (("c", 3000.0), ("b", 900.0))


def test_a_stage_measured_twice_is_named_once_and_a_cold_baseline_not_at_all() -> None:
    medians = {"b": 100.0, "b (reported)": 50.0, "c": 100.0}
    parts = (("wait", 1, 600.0), ("latency", 1, 800.0), ("wait", 2, 700.0), ("wait", 3, 9000.0))  # d is cold
    assert contributors(parts, _lookup(medians), RULES) == (("b", 750.0), ("c", 600.0))


def test_at_most_a_few_stages_are_named() -> None:
    medians = {name: 100.0 for name in "bcde"}
    parts = tuple(("wait", i, 1100.0) for i in range(1, 5))
    named = contributors(parts, _lookup(medians), RULES)
    assert len(named) == MAX_NAMED and {s for s, _ in named} <= set("bcde")
    assert contributors((), _lookup(medians), RULES) == ()


def test_a_slow_file_names_the_stages_that_made_it_slow() -> None:
    # After six normal hours, "process" and "publish" both turn 6x slower for half an hour: the files' slow end to
    # end names them, the larger first (a file whose publish came after the half hour names process alone);
    # "check" (unchanged) is never named.
    pipe = Pipeline(stages=("receive", "check", "process", "publish"),
                    medians={"check": 0.5, "process": 60.0, "publish": 20.0})
    start, end = T0 + 6 * 3600 * S, T0 + int(6.5 * 3600 * S)

    def slow(stage: str, t: int) -> float:
        return 6.0 if stage in ("process", "publish") and start <= t < end else 1.0

    anomalies, _, _ = run(steady_stream(pipe, hours=7, every_s=30, seed=3, factor=slow), pipe.stages)
    traces = [a for a in anomalies if a.kind == "slow_trace"]
    assert len(traces) >= 30
    assert all("; most of it in process (+" in a.message for a in traces)
    assert sum(", publish (+" in a.message for a in traces) >= len(traces) * 0.4
    assert not any("check (+" in a.message for a in traces)
