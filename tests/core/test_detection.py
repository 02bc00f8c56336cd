"""The detection core's behaviour on synthetic streams: the spec of traces, baselines, stalls and watermarks."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.events import StageEvent
from stagewatch.core.timeutil import parse_rfc3339_us
from tests.streams import T0, Pipeline, S, burst, diurnal, file_events, run, steady_stream

# The body line judges from 30 samples and flags a slow share present from the start (up to 30 %); the tail line, the
# default, waits for 100 and learns such a share as the stage's upper mode (docs/detection.md, "Which line").
BODY = DetectorConfig(baseline=BaselineConfig(line="body"))

pytestmark = pytest.mark.unit

PIPE = Pipeline(
    stages=("receive", "check", "process", "publish"),
    medians={"check": 0.5, "process": 60.0, "publish": 2.0},
)


def kinds(anomalies: list) -> Counter:
    return Counter(a.kind for a in anomalies)


def test_diurnal_pattern_alone_yields_no_anomalies() -> None:
    # Two days; every stage 2.5x slower at the daily peak than at night. Busy hours are not incidents.
    events = steady_stream(PIPE, hours=48, every_s=30, seed=1, factor=diurnal(1.5))
    anomalies, summaries, _ = run(events, PIPE.stages)
    assert anomalies == []
    assert Counter(s.status for s in summaries)["complete"] >= len(summaries) - 2  # the last files are open


def test_sustained_incident_stays_flagged_to_its_end() -> None:
    # Stage "process" turns 8x slower for 30 minutes after 6 hours of normal traffic.
    start, end = T0 + 6 * 3600 * S, T0 + int(6.5 * 3600 * S)

    def slow(stage: str, t: int) -> float:
        return 8.0 if stage == "process" and start <= t < end else 1.0

    events = steady_stream(PIPE, hours=8, every_s=10, seed=2, factor=slow)
    anomalies, summaries, _ = run(events, PIPE.stages)
    # Files whose "process" began inside the window, split into the first and the last five minutes.
    began = {}
    for s in summaries:
        times = {st.stage: st.time for st in s.stages}
        if "check" in times:
            began[s.uid] = times["check"]
    from stagewatch.core.timeutil import parse_rfc3339_us

    first = {u for u, t in began.items() if start <= parse_rfc3339_us(t) < start + 300 * S}
    last = {u for u, t in began.items() if end - 300 * S <= parse_rfc3339_us(t) < end}
    flagged = {a.uid for a in anomalies if a.kind == "slow_stage" and a.stage == "process"}
    assert len(first) > 20 and len(last) > 20
    assert len(first & flagged) / len(first) >= 0.97
    assert len(last & flagged) / len(last) >= 0.97
    # ... and nothing outside the window is flagged.
    outside = flagged - {u for u, t in began.items() if start <= parse_rfc3339_us(t) < end}
    assert outside == set()


def test_stall_deadlines_follow_each_stage_own_baseline() -> None:
    pipe = Pipeline(stages=("a", "fast", "slow", "z"), medians={"fast": 0.4, "slow": 120.0, "z": 1.0})
    rng = random.Random(3)
    events = steady_stream(pipe, hours=4, every_s=20, seed=3)
    later = T0 + 4 * 3600 * S
    # One file never reaches "fast", one never reaches "slow"; traffic continues so the watermark moves.
    events += file_events(pipe, "stuck-before-fast", later, rng, drop_from="fast")
    events += file_events(pipe, "stuck-before-slow", later, rng, drop_from="slow")
    events += [e for k in range(400) for e in file_events(pipe, f"after{k}", later + (k + 1) * 20 * S, rng)]
    events.sort(key=lambda e: e.t_us)
    anomalies, _, _ = run(events, pipe.stages)
    stalls = {a.uid: a for a in anomalies if a.kind == "stalled"}
    assert set(stalls) == {"stuck-before-fast", "stuck-before-slow"}
    fast, slow = stalls["stuck-before-fast"], stalls["stuck-before-slow"]
    assert (fast.stage, fast.last_stage) == ("fast", "a")
    assert (slow.stage, slow.last_stage) == ("slow", "fast")
    # A fast stage is declared stalled in seconds, a slow one in minutes.
    assert fast.threshold_ms is not None and slow.threshold_ms is not None
    assert fast.threshold_ms <= 15_000
    assert slow.threshold_ms >= 10 * 60_000
    assert "has not reached fast" in fast.message


def test_an_optional_stage_before_the_next_one_counts_in_its_stall_deadline() -> None:
    # "scan" is optional and takes a minute; "b" after it takes a second. A file that is in "scan" is not
    # stalled before "b" (zoo 10012: 1,209 files were, with b's deadline alone); one that stops after "a" is.
    full = Pipeline(stages=("a", "scan", "b", "z"), medians={"scan": 60.0, "b": 1.0, "z": 1.0})
    skipping = Pipeline(stages=("a", "b", "z"), medians={"b": 1.0, "z": 1.0})
    rng = random.Random(12)
    events = []
    for k in range(1500):
        pipe = full if k % 2 else skipping
        events += file_events(pipe, f"f{k}", T0 + k * 10 * S, rng)
    t_stuck = T0 + 1500 * 10 * S
    events += file_events(full, "stuck", t_stuck, rng, drop_from="scan")
    events += [e for k in range(300) for e in file_events(skipping, f"n{k}", t_stuck + (k + 1) * 10 * S, rng)]
    events.sort(key=lambda e: e.t_us)
    anomalies, _, _ = run(events, full.stages, optional=frozenset({"scan"}))
    stalls = [a for a in anomalies if a.kind == "stalled"]
    assert [(a.uid, a.stage, a.last_stage) for a in stalls] == [("stuck", "b", "a")]
    # Its deadline allows for scan (8 x its line, minutes), and its message adds scan's usual time to b's.
    (stall,) = stalls
    assert stall.threshold_ms is not None and stall.threshold_ms >= 8 * 60_000
    assert stall.expected_ms is not None and 55_000 <= stall.expected_ms <= 70_000


def test_an_optional_stage_too_rare_to_have_a_baseline_holds_no_deadline_back() -> None:
    # One line naming a stage nobody else logs (the fuzz test drew it: the order inferred from the data took it
    # as an optional stage before the last one) must not leave every file after it without a stall deadline:
    # a cold optional stage adds nothing to the deadline. Files stuck before "z" are still stalled.
    pipe = Pipeline(stages=("a", "b", "z"), medians={"b": 1.0, "z": 1.0})
    rng = random.Random(5)
    events = steady_stream(pipe, hours=2, every_s=10, seed=5)
    events.append(StageEvent("hostile-0", "acme", T0 + 600 * S, "t1", "lot-1", "h-0", False, None))
    t_stuck = T0 + 2 * 3600 * S
    events += file_events(pipe, "stuck", t_stuck, rng, drop_from="z")
    events += [e for k in range(30) for e in file_events(pipe, f"n{k}", t_stuck + (k + 1) * 10 * S, rng)]
    events.sort(key=lambda e: e.t_us)
    anomalies, _, _ = run(events, ("a", "b", "acme", "z"), optional=frozenset({"acme"}))
    stalls = {(a.uid, a.stage, a.last_stage) for a in anomalies if a.kind == "stalled"}
    assert stalls - {("hostile-0", "z", "acme")} == {("stuck", "z", "b")}  # the line's own file: it stopped there


def test_what_a_cold_baseline_saw_is_judged_from_the_first_tick_it_has_its_warm_up_samples() -> None:
    # The body line (``BODY``). A burst: 1,200 files in the first five minutes, before any baseline has a snapshot.
    # Sixty of them, begun 50 to 65 s in, are 10x slow in "b": they are judged by the early snapshot of the first 30 s
    # tick after
    # they were measured (the stage had its warm-up samples within the first tick), as of that tick -- not at
    # the end of the first five minutes (before early snapshots), and not lost to the warm-up.
    from stagewatch.core.timeutil import parse_rfc3339_us

    pipe, events, start = burst()
    anomalies, _, _ = run(events, pipe.stages, BODY)
    slow = {a.uid for a in anomalies if a.kind == "slow_stage" and a.stage == "b"}
    assert {f"f{k:05d}" for k in range(200, 260)} <= slow
    first = [a for a in anomalies if a.uid in {f"f{k:05d}" for k in range(200, 260)} and a.stage == "b"]
    at = sorted({(parse_rfc3339_us(a.detected_at) - start) // S for a in first})
    assert at == [90, 120]  # ticks: 30 s; the slow stage ended 70-85 s in, its reported latency up to 89 s in
    for a in first:
        assert parse_rfc3339_us(a.detected_at) - parse_rfc3339_us(a.event_time) <= 2 * 30 * S
    assert len(slow) <= 60 + 5  # and the burst's normal files are not paged for it
    # Their end to end names where the time went, by every stage's early snapshots of the same tick.
    traces = [a for a in anomalies if a.kind == "slow_trace" and a.uid in {f"f{k:05d}" for k in range(200, 260)}]
    assert len(traces) == 60 and {a.cause_stage for a in traces} == {"b"}


def test_an_early_tick_judges_only_what_its_snapshot_can() -> None:
    # The body line (``BODY``). One customer's files 2 s apart: "b" has its 30 warm-up samples a little after 60 s
    # in, so the ticks before 90 s have no snapshot to judge by. A file whose "b" ended 10x slow 28 s in is judged at
    # the first tick whose early snapshot is warm (90 s), one 100 s in at the tick after it (120 s), one after the
    # last early tick (120 s) at the interval's end (300 s), as before early snapshots.
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 1.0})
    rng = random.Random(3)
    start = T0 - T0 % (300 * S)
    slow_at = {4: 90, 40: 120, 70: 300}  # file -> when its slow "b" is judged (s after the start)

    def factor(k: int):  # type: ignore[no-untyped-def]
        return lambda stage, t: 10.0 if stage == "b" and k in slow_at else 1.0

    events = sorted((e for k in range(200)
                     for e in file_events(pipe, f"f{k:03d}", start + k * 2 * S, rng, factor(k), tenant="t1")),
                    key=lambda e: e.t_us)
    anomalies, _, _ = run(events, pipe.stages, BODY)
    judged = {a.uid: (parse_rfc3339_us(a.detected_at) - start) // S for a in anomalies
              if a.kind == "slow_stage" and a.stage == "b"}
    assert judged == {f"f{k:03d}": at for k, at in slow_at.items()}


def test_stall_fires_when_the_deadline_passes_not_at_the_end_of_input() -> None:
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 1.0, "c": 1.0})
    rng = random.Random(4)
    events = steady_stream(pipe, hours=2, every_s=10, seed=4)
    t_stuck = T0 + 2 * 3600 * S
    events += file_events(pipe, "stuck", t_stuck, rng, drop_from="b")
    events += [e for k in range(30) for e in file_events(pipe, f"n{k}", t_stuck + (k + 1) * 10 * S, rng)]
    events.sort(key=lambda e: e.t_us)
    anomalies, _, _ = run(events, pipe.stages)
    (stall,) = [a for a in anomalies if a.kind == "stalled"]
    from stagewatch.core.timeutil import parse_rfc3339_us

    waited_s = (parse_rfc3339_us(stall.detected_at) - t_stuck) / S
    # Deadline is a few seconds; the watermark lags by the allowed lateness (60 s) plus a release batch.
    assert waited_s < 60 + 30


def test_a_stalled_file_that_logs_again_is_reported_as_arrived() -> None:
    """After its stall the trace is closed; its next line is not a new trace but an arrival (incidents of
    stalls resolve when their files arrive)."""
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 1.0, "c": 1.0})
    rng = random.Random(5)
    events = steady_stream(pipe, hours=2, every_s=10, seed=5)
    t_stuck = T0 + 2 * 3600 * S
    late = file_events(pipe, "late", t_stuck, rng, factor=lambda stage, t: 600.0 if stage == "b" else 1.0)
    events += late + [e for k in range(90) for e in file_events(pipe, f"n{k}", t_stuck + (k + 1) * 10 * S, rng)]
    events.sort(key=lambda e: e.t_us)
    anomalies, summaries, det = run(events, pipe.stages)
    # Flagged slow once past b's line, then stalled at its deadline.
    assert [(a.kind, a.uid, a.stage) for a in anomalies if a.uid == "late"] == [
        ("slow_stage", "late", "b"), ("stalled", "late", "b")]
    assert det.out.arrivals[0] == ("late", "b", late[1].t_us)
    assert [s.status for s in summaries if s.uid == "late"] == ["stalled"]


def test_files_in_flight_at_end_of_input_are_open_not_stalled() -> None:
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 1.0, "c": 600.0})
    events = steady_stream(pipe, hours=3, every_s=15, seed=5)
    # Cut the input at a point in time: files whose "c" would come later are still in flight.
    cut = T0 + int(2.9 * 3600 * S)
    events = [e for e in events if e.t_us <= cut]
    anomalies, summaries, _ = run(events, pipe.stages)
    assert kinds(anomalies)["stalled"] == 0
    open_ = [s for s in summaries if s.status == "open"]
    assert len(open_) >= 20


def test_shuffle_within_lateness_and_duplicates_give_the_same_anomalies() -> None:
    def slow(stage: str, t: int) -> float:
        return 6.0 if stage == "process" and T0 + 3 * 3600 * S <= t < T0 + int(3.3 * 3600 * S) else 1.0

    drops = {f"u{k:06d}": "publish" for k in range(1300, 1310)}
    ordered = steady_stream(PIPE, hours=5, every_s=10, seed=6, factor=slow, drops=drops)
    rng = random.Random(7)
    # Delivery = event time + up to 50 s (the allowed lateness is 60 s); 1 % of lines delivered twice.
    delivered = [(e.t_us + rng.randint(0, 50 * S), e) for e in ordered]
    delivered += [(t + rng.randint(0, 30 * S), e) for t, e in delivered if rng.random() < 0.01]
    delivered.sort(key=lambda p: p[0])
    shuffled = [e for _, e in delivered]
    assert shuffled != ordered
    a1, _, _ = run(ordered, PIPE.stages)
    a2, _, d2 = run(shuffled, PIPE.stages)

    def key(a):  # detected_at (and a stall's wait so far) follow the watermark; the verdict itself must not
        observed = None if a.kind == "stalled" else a.observed_ms
        return (a.anomaly_id, a.kind, a.uid, a.stage, a.event_time, observed, a.threshold_ms)

    assert kinds(a1)["slow_stage"] > 50 and kinds(a1)["stalled"] == 10
    assert sorted(map(key, a1)) == sorted(map(key, a2))
    assert d2.out.counts["duplicates"] == len(delivered) - len(ordered)
    assert d2.out.counts.get("late", 0) == 0


def test_late_beyond_allowed_lateness_is_dead_lettered_not_dropped() -> None:
    events = steady_stream(PIPE, hours=1, every_s=10, seed=8)
    late = StageEvent("late-file", "check", events[-1].t_us - 600 * S, "t1", None, "late-1", False, None)
    _, _, det = run([*events, late], PIPE.stages)
    assert det.out.counts["late"] == 1
    ((got, watermark),) = det.late
    assert got == late and watermark - late.t_us > 60 * S  # the watermark it arrived behind


def test_duplicates_count_once_by_insert_id_or_by_uid_stage_time() -> None:
    events = steady_stream(PIPE, hours=1, every_s=10, seed=9)
    no_id = [e._replace(insert_id=None) for e in events[:50]]
    doubled = [*events, *events[:40], *no_id, *no_id[:5]]
    doubled.sort(key=lambda e: e.t_us)
    _, summaries, det = run(doubled, PIPE.stages)
    # events[:50] without an insertId are new keys once (uid+stage+time), then their 5 copies repeat.
    assert det.out.counts["duplicates"] == 40 + 5
    # Same stage of the same file again (another insertId): counted as a repeat, or after the file completed.
    counts = det.out.counts
    assert counts.get("repeated_stage", 0) + counts.get("after_complete", 0) == 50
    assert len(summaries) == len({e.uid for e in events})


_SKEWED = Pipeline(stages=("detect", "upload", "register", "done"),
                   medians={"upload": 5.0, "register": 0.3, "done": 1.0})


def _skewed_customer(files: int, seed: int, latency_x40_from: int | None = None) -> list[StageEvent]:
    """A customer whose host clock runs 2 s ahead: its lines (detect, upload) are stamped late, so register's wait
    comes out negative. From file ``latency_x40_from`` on, register reports 40x its usual latency."""
    rng = random.Random(seed)
    events: list[StageEvent] = []
    for k in range(files):
        late = latency_x40_from is not None and k >= latency_x40_from
        events += [e._replace(t_us=e.t_us + 2 * S) if e.stage in ("detect", "upload") else
                   e._replace(reported_ms=e.reported_ms * 40) if late and e.stage == "register" else e
                   for e in file_events(_SKEWED, f"f{k}", T0 + k * 10 * S, rng, tenant="skewed")]
    return sorted(events, key=lambda e: e.t_us)


def test_clock_skew_negative_gaps_are_clamped_counted_never_slow() -> None:
    anomalies, summaries, det = run(_skewed_customer(2000, seed=10), _SKEWED.stages)
    assert det.out.counts["negative_gaps"] > 1500
    assert [a for a in anomalies if a.stage == "register"] == []
    assert all(st.duration_ms is None or st.duration_ms >= 0 for s in summaries for st in s.stages)


def test_a_negative_wait_stays_skew_in_the_summary_when_the_stages_reported_latency_pages() -> None:
    """The wait was a clock's error and not measured; the page came from the latency the line reported, and is in
    the anomalies. The summary says "skew" (as the streaming job's does, and as the BigQuery query clock_skew
    counts), not "slow" over a 0 ms wait."""
    anomalies, summaries, _ = run(_skewed_customer(1200, seed=12, latency_x40_from=1100), _SKEWED.stages)
    paged = {a.uid for a in anomalies if a.stage == "register" and a.measure == "latency"}
    assert len(paged) > 50
    register = {s.uid: next(st for st in s.stages if st.stage == "register") for s in summaries}
    assert {(register[uid].verdict, register[uid].duration_ms) for uid in paged} == {("skew", 0.0)}


def test_trace_memory_released_on_completion_and_ttl() -> None:
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 1.0, "c": 1.0})
    rng = random.Random(11)
    events = steady_stream(pipe, hours=1, every_s=5, seed=11)
    events += file_events(pipe, "half", T0 + 3600 * S, rng, drop_from="b")
    events += [e for k in range(100) for e in file_events(pipe, f"z{k}", T0 + (3601 + k * 60) * S, rng)]
    events.sort(key=lambda e: e.t_us)
    cfg = DetectorConfig(ttl_s=600, baseline=DetectorConfig().baseline.__class__(warmup_n=10_000))
    _, summaries, det = run(events, pipe.stages, cfg)
    # With baselines cold there is no stall deadline: the TTL evicts the half trace, reported open.
    half = [s for s in summaries if s.uid == "half"]
    assert half[0].status == "open" and det.out.counts["traces_evicted"] == 1
    assert det.traces == {}


def test_a_failed_stage_is_reported_and_closes_the_trace() -> None:
    events = steady_stream(PIPE, hours=1, every_s=10, seed=12)
    rng = random.Random(12)
    bad = file_events(PIPE, "bad", T0 + 3600 * S, rng)
    bad[2] = bad[2]._replace(failed=True)
    anomalies, summaries, det = run(sorted([*events, *bad], key=lambda e: e.t_us), PIPE.stages)
    (failed,) = [a for a in anomalies if a.kind == "failed"]
    assert (failed.uid, failed.stage, failed.severity) == ("bad", "process", "error")
    assert [s.status for s in summaries if s.uid == "bad"] == ["failed"]
    assert det.out.counts["after_failed"] == 1  # its later "publish" line is counted, not a new trace


def test_warm_up_is_visible_and_makes_no_verdicts() -> None:
    events = steady_stream(PIPE, hours=0.2, every_s=10, seed=13, factor=lambda s, t: 20.0)
    anomalies, summaries, det = run(events, PIPE.stages)
    assert anomalies == []
    assert det.out.counts["verdicts_warmup"] > 0
    assert any(st.verdict == "warmup" for s in summaries for st in s.stages)


def test_unknown_stage_is_recorded_not_judged() -> None:
    events = steady_stream(PIPE, hours=0.5, every_s=10, seed=14)
    extra = StageEvent(events[5].uid, "audit", events[5].t_us + 1, "t1", None, "x-1", False, None)
    _, summaries, det = run(sorted([*events, extra], key=lambda e: e.t_us), PIPE.stages)
    assert det.out.counts["unknown_stage"] == 1
    (s,) = [s for s in summaries if s.uid == extra.uid]
    assert [st.verdict for st in s.stages if st.stage == "audit"] == ["unordered"]


def _in_progress_day(factor_b: float) -> tuple[list, list, int, list]:
    """Two normal hours through a, b (10 s), c; then one file whose b takes ``factor_b`` times as long, and
    normal traffic after it so the watermark moves on."""
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 10.0, "c": 1.0})
    rng = random.Random(6)
    events = steady_stream(pipe, hours=2, every_s=10, seed=6)
    t_in = T0 + 2 * 3600 * S
    late = file_events(pipe, "late", t_in, rng, factor=lambda stage, t: factor_b if stage == "b" else 1.0)
    events += late + [e for k in range(400) for e in file_events(pipe, f"n{k}", t_in + (k + 1) * 10 * S, rng)]
    events.sort(key=lambda e: e.t_us)
    anomalies, summaries, _ = run(events, pipe.stages)
    return anomalies, summaries, t_in, late


def test_a_file_past_its_stage_line_is_flagged_while_still_in_it_and_not_again_when_it_finishes() -> None:
    """Issue 16 item 5: a slowdown is seen when the first file crosses its stage's line, not when it finishes.
    The file is flagged slow there and then (``in_progress``), once: its finished wait, slower still, adds
    no second verdict."""
    from stagewatch.core.timeutil import parse_rfc3339_us

    anomalies, summaries, t_in, late = _in_progress_day(factor_b=5.0)
    mine = [a for a in anomalies if a.uid == "late" and a.kind == "slow_stage"]
    assert [(a.stage, a.measure) for a in mine] == [("b", "in_progress")]
    # Slow end to end too, filed under b (incidents count the file once, at b).
    assert [a.cause_stage for a in anomalies if a.uid == "late" and a.kind == "slow_trace"] in ([], ["b"])
    (a,) = mine
    assert a.threshold_ms is not None and a.observed_ms == a.threshold_ms
    # Flagged when it had been in b for its line, long before it left b (its wait is 5x the usual 10 s).
    assert parse_rfc3339_us(a.event_time) == t_in + int(a.threshold_ms * 1000)
    assert parse_rfc3339_us(a.event_time) < late[1].t_us
    assert "still in b" in a.message and "late" in a.message
    (summary,) = [s for s in summaries if s.uid == "late"]
    assert summary.status == "complete" and [t.verdict for t in summary.stages if t.stage == "b"] == ["slow"]


def test_a_file_that_stalls_is_flagged_slow_first_and_stalled_at_its_deadline() -> None:
    """The stall deadline stays the later, stronger verdict. (b's line comes 10 minutes late, within the
    session gap after the stall: counted as its arrival; an hour later it would be the file's next session.)"""
    anomalies, _, _, _ = _in_progress_day(factor_b=60.0)
    mine = [(a.kind, a.stage, a.measure) for a in anomalies if a.uid == "late"]
    assert mine == [("slow_stage", "b", "in_progress"), ("stalled", "b", "deadline")]
    slow, stall = (a for a in anomalies if a.uid == "late")
    assert slow.event_time < stall.event_time


def test_a_file_within_its_line_is_not_flagged_in_progress() -> None:
    anomalies, _, _, _ = _in_progress_day(factor_b=1.0)
    assert [a for a in anomalies if a.uid == "late"] == []
    assert all(a.measure != "in_progress" for a in anomalies)


def test_a_file_held_for_a_lost_line_is_not_flagged_by_a_watermark_past_its_next_stage() -> None:
    """b's line lost: c is held 30 s, then measured from a. d comes 36 s after c, within its line (~43 s).
    When the hold's timer fires, the watermark may already be past d's line with d still to be handed over:
    only what is due by the timer is done (the file was flagged slow in d, and its summary said so)."""
    pipe = Pipeline(stages=("a", "b", "c", "d"), medians={"b": 5.0, "c": 5.0, "d": 15.0})
    base = steady_stream(pipe, hours=2, every_s=10, seed=3)
    t_end = max(e.t_us for e in base)
    for off in (50, 70, 90):
        tx = t_end - off * S
        x = [StageEvent("x", "a", tx, "t1", "lot-1", "x-0", False, None),
             StageEvent("x", "c", tx + 5 * S, "t1", "lot-1", "x-2", False, None),
             StageEvent("x", "d", tx + 41 * S, "t1", "lot-1", "x-3", False, None)]
        anomalies, summaries, _ = run(sorted(base + x, key=lambda e: e.t_us), pipe.stages)
        assert [a for a in anomalies if a.uid == "x"] == []
        (summary,) = [s for s in summaries if s.uid == "x"]
        assert [t.verdict for t in summary.stages if t.stage == "d"] == ["ok"]


def test_a_file_in_an_optional_stage_is_not_flagged_in_the_stage_after_it() -> None:
    """a, scan?, b: a file slow in scan (optional) is scan's to flag when it logs; past b's line it may well be in
    scan, so no in-progress verdict names b (it named b, with scan's time in its message)."""
    full = Pipeline(stages=("a", "scan", "b"), medians={"scan": 10.0, "b": 10.0})
    skipping = Pipeline(stages=("a", "b"), medians={"b": 10.0})
    rng = random.Random(14)
    events = []
    for k in range(1000):
        events += file_events(full if k % 2 else skipping, f"f{k}", T0 + k * 10 * S, rng)
    t = T0 + 1000 * 10 * S
    events += file_events(full, "late", t, rng, factor=lambda stage, _: 8.0 if stage == "scan" else 1.0)
    events += [e for k in range(60) for e in file_events(skipping, f"n{k}", t + (k + 1) * 10 * S, rng)]
    anomalies, _, _ = run(sorted(events, key=lambda e: e.t_us), full.stages, optional=frozenset({"scan"}))
    assert {(a.stage, a.measure) for a in anomalies if a.uid == "late" and a.kind == "slow_stage"} <= {
        ("scan", "wait"), ("scan", "latency")}
    assert all(a.measure != "in_progress" or a.stage != "b" for a in anomalies)


def test_a_stage_whose_stall_deadline_is_past_the_time_to_live_still_flags_a_file_past_its_line() -> None:
    """b's deadline (8 x its line) is past the trace's time to live: the file is let go then, but past b's line,
    well within it, it is flagged slow (the streaming job's timer does the same)."""
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 60.0, "c": 1.0})
    rng = random.Random(9)
    events = steady_stream(pipe, hours=3, every_s=20, seed=9)
    t = T0 + 3 * 3600 * S
    events += file_events(pipe, "late", t, rng, factor=lambda stage, _: 5.0 if stage == "b" else 1.0)
    events += [e for k in range(60) for e in file_events(pipe, f"n{k}", t + (k + 1) * 20 * S, rng)]
    anomalies, _, _ = run(sorted(events, key=lambda e: e.t_us), pipe.stages, cfg=DetectorConfig(ttl_s=900.0))
    assert [(a.stage, a.measure) for a in anomalies if a.uid == "late" and a.kind == "slow_stage"] == [
        ("b", "in_progress")]


def test_a_file_silent_for_most_of_the_session_gap_before_its_deadline_is_stalled_not_let_go() -> None:
    """b takes minutes (median 5 min, line ~15 min): 8x its line is two hours, past the session gap (1 h). A
    file stuck before b is declared stalled at 90 % of the gap after its last stage -- before, it was let go
    as open at the gap and nobody heard of it. A file that is only slow in b is flagged in progress at b's
    line and arrives; no stall for it."""
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 300.0, "c": 1.0})
    rng = random.Random(21)
    events = steady_stream(pipe, hours=4, every_s=20, seed=21)
    t = T0 + 2 * 3600 * S
    stuck = file_events(pipe, "stuck", t, rng, drop_from="b")
    slow = file_events(pipe, "slow", t, rng, factor=lambda stage, _: 4.0 if stage == "b" else 1.0)
    events = sorted([*events, *stuck, *slow], key=lambda e: e.t_us)
    anomalies, summaries, _ = run(events, pipe.stages, cfg=DetectorConfig(ttl_s=3600.0))
    (stall,) = [a for a in anomalies if a.uid == "stuck" and a.kind == "stalled"]
    assert (stall.stage, stall.last_stage) == ("b", "a")
    assert parse_rfc3339_us(stall.event_time) == stuck[-1].t_us + int(0.9 * 3600 * S)
    assert "within 54 min" in stall.message
    assert [s.status for s in summaries if s.uid == "stuck"] == ["stalled"]
    assert [(a.stage, a.measure) for a in anomalies if a.uid == "slow" and a.kind != "slow_trace"] == [
        ("b", "in_progress")]
    assert [s.status for s in summaries if s.uid == "slow"] == ["complete"]


@pytest.mark.parametrize(("median_s", "ttl_s"), [(2400.0, 3600.0), (1200.0, 3600.0), (2.0, 5.0)])
def test_a_deadline_is_never_brought_within_twice_the_stages_line_nor_min_stall(median_s: float, ttl_s: float) -> None:
    """The session gap's cap on a deadline applies only while it is twice the awaited stage's line and at least
    ``min_stall_s``: a 40-minute stage's normal files were stalled at 54 minutes (101 in a review's run), and
    a 5-second gap stalled files 4.5 s after their last stage. Here nothing is stuck: no stall."""
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": median_s, "c": 1.0})
    every_s = max(1.0, median_s / 40)
    events = steady_stream(pipe, hours=max(1.0, median_s * 150 / 3600), every_s=every_s, seed=31)
    anomalies, _, _ = run(events, pipe.stages, cfg=DetectorConfig(ttl_s=ttl_s))
    assert [a for a in anomalies if a.kind == "stalled"] == []


def test_a_deadline_past_a_long_optional_stage_is_not_brought_within_the_session_gap() -> None:
    """Half the files go through an optional 40-minute stage b before c (a second): the cap weighs b's line
    too -- it stalled 37 of these normal files at 54 minutes when it looked at c's line alone."""
    rng = random.Random(5)
    events = []
    for k in range(900):
        uid, t = f"u{k:05d}", T0 + k * 60 * S
        tenant = rng.choice(("t1", "t2", "t3"))
        events.append(StageEvent(uid, "a", t, tenant, "lot-1", f"{uid}-0", False, None))
        for stage, median_s in (("b", 2400.0), ("c", 1.0)) if k % 2 == 0 else (("c", 1.0),):
            wait = median_s * rng.lognormvariate(0, 0.25)
            t += int(wait * S)
            events.append(StageEvent(uid, stage, t, tenant, "lot-1", f"{uid}-{stage}", False, wait * 1000))
    events.sort(key=lambda e: e.t_us)
    anomalies, _, _ = run(events, ("a", "b", "c"), cfg=DetectorConfig(ttl_s=3600.0), optional=frozenset({"b"}))
    assert [a for a in anomalies if a.kind == "stalled"] == []
