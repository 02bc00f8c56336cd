"""A wait measured across a skipped optional stage is judged and learned on its own baseline: it spans another
path. Zoo 10018: with the optional stage skipped, the stage before it was on another service whose clock two
customers skewed, and a 4 ms wait took 0.9 s or 2.9 s for a quarter of their files -- 101 false alerts under
the tail line, as a second mode of the stage's one baseline."""

from __future__ import annotations

import pickle
import random

import pytest

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.events import StageEvent
from stagewatch.core.evidence import contributors
from stagewatch.core.judged_by import lookup
from stagewatch.core.measurements import Measurement
from stagewatch.core.stages import StageOrder, infer_stage_order
from stagewatch.core.traces import TraceRules
from stagewatch.core.verdicts import baseline_stage
from tests.streams import T0, Pipeline, S, file_events, mixed_stream, run

pytestmark = pytest.mark.unit

FULL = Pipeline(stages=("a", "b", "c"), medians={"b": 0.5, "c": 0.1})
SKIPPING = Pipeline(stages=("a", "c"), medians={"c": 3.0})  # c's wait from a: 30x its wait from b


def _waits(events: list[StageEvent]) -> list[StageEvent]:
    """Lines that report no latency of their own: only the waits tell the paths apart."""
    return [e._replace(reported_ms=None) for e in events]


def _day(seed: int) -> list[StageEvent]:
    """Four hours, a file every 2 s; one in eight skips b."""
    return _waits(mixed_stream(lambda k: SKIPPING if k % 8 == 3 else FULL, 7200, 2, random.Random(seed)))


@pytest.mark.parametrize("line", ["body", "tail"])
def test_a_wait_after_a_skipped_optional_stage_is_judged_by_its_own_path(line: str) -> None:
    rng = random.Random(7)
    events = _day(3)
    t = T0 + 7200 * 2 * S
    events += file_events(SKIPPING, "slow-skip", t, rng, factor=lambda stage, _: 10.0)  # 30 s from a
    events += file_events(FULL, "slow-full", t + S, rng, factor=lambda stage, _: 1.0 if stage == "b" else 30.0)
    events += [e for k in range(60) for e in file_events(FULL, f"n{k}", t + (k + 2) * 2 * S, rng)]
    events = _waits(events)
    events.sort(key=lambda e: e.t_us)
    cfg = DetectorConfig(baseline=BaselineConfig(line=line))
    anomalies, _, det = run(events, ("a", "b", "c"), cfg, optional=frozenset({"b"}))
    slow = {a.uid: a for a in anomalies if a.kind == "slow_stage"}
    # One baseline for c would hold a second mode an eighth of its files take, and page on it (hundreds of false
    # alerts under either line before the paths had their own). The path's judges nothing while cold.
    assert set(slow) == {"slow-skip", "slow-full"}
    skip, full = slow["slow-skip"], slow["slow-full"]
    assert skip.stage == full.stage == "c"
    assert skip.expected_ms is not None and 2_500 <= skip.expected_ms <= 3_500  # its path's usual
    assert "(since a, b skipped)" in skip.message
    assert full.expected_ms is not None and 80 <= full.expected_ms <= 120
    assert "skipped" not in full.message
    assert ("c (after a)", None) in det.base.snaps and ("c", None) in det.base.snaps
    # Each path's baseline learns its own waits: c's those after b, the path's those after a.
    assert det.base.snaps[("c", None)].median_ms < 150 < 2_500 < det.base.snaps[("c (after a)", None)].median_ms
    # Its stall deadline allows for that path: 30 s from a is slow, not stalled (b's and c's lines add to 2 s).
    assert not [a for a in anomalies if a.kind == "stalled"]


def test_only_optional_stages_make_a_path_and_records_from_before_it_keep_the_stage_baseline() -> None:
    rules = TraceRules(StageOrder(("a", "b", "c", "d", "e"), frozenset({"b", "c"})))
    assert rules.skip_names == {(0, 2): "c (after a)", (0, 3): "d (after a)", (1, 3): "d (after b)"}
    # Across a lost line of a required stage (c after a when d is missing is not a path: d is required).
    assert rules.wait_name(2, 4) == "e"
    assert baseline_stage(Measurement("wait", 3, 5.0, T0, 0), rules) == "d (after a)"
    assert baseline_stage(Measurement("latency", 3, 5.0, T0, -1), rules) == "d (reported)"
    # An order inferred from the data has them across an optional stage PATH_FROM of the files take (one in ten
    # here), and none across a stage of stray lines (one in a hundred): another sample, after a restart, may not
    # have that line, and the keys would move with it.
    inferred = infer_stage_order([[(1, "a"), (2, "c")]] * 9 + [[(1, "a"), (2, "b"), (3, "c")]])
    assert inferred.optional == {"b"} and TraceRules(inferred).skip_names == {(0, 2): "c (after a)"}
    stray = infer_stage_order([[(1, "a"), (2, "c")]] * 99 + [[(1, "a"), (2, "b"), (3, "c")]])
    assert stray.optional == {"b"} and TraceRules(stray).skip_names == {}
    # Nor does a stray stage between a common optional one and the next take that path away or add one; no path
    # ends at it either.
    both = infer_stage_order([[(1, "a"), (3, "c")]] * 60 + [[(1, "a"), (2, "b"), (3, "c")]] * 39
                             + [[(1, "a"), (2, "b"), (2.5, "x"), (3, "c")]])
    assert both.stages == ("a", "b", "x", "c") and both.optional == {"b", "x"}
    assert TraceRules(both).skip_names == {(0, 3): "c (after a)"}
    # Nor does one count towards MAX_SKIPPED: b, c and d skipped are still a path (a review's case: one file
    # [a, b, x, c, d, e] moved 43 of 600 files' waits to e's own baseline).
    three = infer_stage_order([[(10 * f + t, s) for t, s in ((1, "a"), (2, "b"), (4, "c"), (5, "d"), (6, "e"))
                                 if s in "ae" or (f >> t) & 1] for f in range(640)]
                              + [[(1, "a"), (2, "b"), (3, "x"), (4, "c"), (5, "d"), (6, "e")]])
    assert three.stages == ("a", "b", "x", "c", "d", "e") and three.optional == {"b", "x", "c", "d"}
    assert TraceRules(three).skip_names[(0, 5)] == "e (after a)"
    # A stray stage named as a path's or a reported latency's baseline (or end to end's) takes neither: its own
    # waits have a key of their own.
    named = infer_stage_order([[(1, "a"), (3, "c")]] * 60 + [[(1, "a"), (2, "b"), (3, "c")]] * 39
                              + [[(1, "a"), (2, "c (after a)"), (2, "c (reported)"), (2, "end_to_end"), (3, "c")]])
    kept = TraceRules(named)
    assert kept.wait_name(0, named.index["c"]) == "c (after a)" and "c (reported)" in kept.latency_names
    assert {kept.wait_name(-1, named.index[s]) for s in ("c (after a)", "c (reported)", "end_to_end")} == {
        "c (after a) #2", "c (reported) #2", "end_to_end #2"}
    assert kept.keys[named.index["c"]] == "c" and kept.wait_keys[named.index["c"]] == ("c", "c (after a)")
    # Keys stay unique whatever the stages are called (an order inferred from the data may hold any line's name).
    odd = TraceRules(StageOrder(("a", "b", "c", "c (after a)", "a (reported)"), frozenset({"b"})))
    assert odd.skip_names == {(0, 2): "c (after a) #2"} and odd.latency_names[0] == "a (reported) #2"
    # A record pickled before ``after_i`` was kept (four fields) loads as measured from the stage before.
    old = pickle.loads(pickle.dumps(tuple.__new__(Measurement, ("wait", 3, 5.0, T0))))
    assert old.after_i == -1 and baseline_stage(old, rules) == "d"


def test_a_slow_files_evidence_reads_a_skipped_paths_wait_against_that_paths_baseline() -> None:
    rules = TraceRules(StageOrder(("a", "b", "c"), frozenset({"b"})))
    events = _day(5)
    events.sort(key=lambda e: e.t_us)
    _, _, det = run(events, rules.names, optional=frozenset({"b"}))

    def found(stage: str):  # type: ignore[no-untyped-def]
        return lookup(det.base, stage, None)

    # A skipping file whose c took 2.5 s, under its path's usual: nothing over. Old three-field parts: c's own.
    assert contributors((("wait", 2, 2_500.0, 0),), found, rules) == ()
    ((stage, excess),) = contributors((("wait", 2, 2_500.0),), found, rules)  # type: ignore[arg-type]
    assert stage == "c" and excess > 2_000


@pytest.mark.parametrize("line", ["body", "tail"])
def test_a_path_too_rare_to_warm_is_flagged_in_the_stage_and_stalled_by_its_stages_other_path(line: str) -> None:
    # One file in 300 goes through b: c's own baseline (its waits after b) never warms, and their finished waits
    # are not judged. But they are still flagged while in c, and stalled, at the line of c's other path (after
    # a) -- not left open for ever (a review found them so, with deadlines from c's own baseline alone).
    via_b = Pipeline(stages=("a", "b", "c"), medians={"b": 0.5, "c": 1.0})
    skipping = Pipeline(stages=("a", "c"), medians={"c": 1.0})
    rng = random.Random(9)
    events = mixed_stream(lambda k: via_b if k % 300 == 7 else skipping, 6000, 2, rng)
    t = T0 + 6000 * 2 * S
    events += file_events(via_b, "stuck-after-b", t, rng, drop_from="c")
    events += file_events(via_b, "slow-via-b", t + S, rng, factor=lambda stage, _: 30.0 if stage == "c" else 1.0)
    events += [e for k in range(40) for e in file_events(skipping, f"n{k}", t + (k + 2) * 2 * S, rng)]
    events = _waits(events)
    events.sort(key=lambda e: e.t_us)
    anomalies, _, det = run(events, ("a", "b", "c"), DetectorConfig(baseline=BaselineConfig(line=line)),
                            optional=frozenset({"b"}))
    assert det.base.snaps[("c", None)].n < 30  # c's own: cold
    assert {(a.uid, a.stage, a.last_stage) for a in anomalies if a.kind == "stalled"} == {("stuck-after-b", "c", "b")}
    # Both are flagged slow while still waiting for c, at that line (the stuck one before it is stalled).
    slow = {(a.uid, a.measure) for a in anomalies if a.kind == "slow_stage"}
    assert slow == {("slow-via-b", "in_progress"), ("stuck-after-b", "in_progress")}


@pytest.mark.parametrize("line", ["body", "tail"])
def test_a_chronically_slow_customer_on_a_path_it_rarely_takes_is_not_judged_by_the_other_customers_line(
        line: str) -> None:
    """A customer 5x slower at c (its network), one file in twenty, four of which skip b in the day: its key of
    the path has too few samples to tell it is slow, its key of c has plenty. Read from the path's key alone, the
    path's stage-wide line -- the other customers' -- judged its skipping files, in c and at their end; and the
    path's line, withheld for it, let the stall watch fall back on the stage's others (zoo 20013, not one the zoo
    was tuned on: 96 false alerts on such a customer)."""
    rng = random.Random(11)
    skipping_slow = {407, 2407, 4407, 6407}
    events: list[StageEvent] = []
    for k in range(7200):
        slow = k % 20 == 7
        pipe = SKIPPING if (k in skipping_slow if slow else k % 8 == 3) else FULL
        events += file_events(pipe, f"f{k:05d}", T0 + k * 2 * S, rng, tenant="slowco" if slow else None,
                              factor=(lambda stage, _: 5.0 if stage == "c" else 1.0) if slow else lambda s, _: 1.0)
    events = _waits(events)
    events.sort(key=lambda e: e.t_us)
    anomalies, _, _ = run(events, ("a", "b", "c"), DetectorConfig(baseline=BaselineConfig(line=line)),
                          optional=frozenset({"b"}))
    paged = [a for a in anomalies if a.tenant == "slowco" and a.kind in ("slow_stage", "stalled")]
    assert paged == [], [(a.kind, a.uid, a.stage, a.measure, a.threshold_ms) for a in paged]

