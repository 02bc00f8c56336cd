"""``WatchStalls`` on the DirectRunner (streaming): when a stalled file counts as having moved on."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core.measurements import Deadline, FileRef, Progress, StallInfo, Straggler
from stagewatch.core.records import Anomaly, StageTiming, TraceSummary
from stagewatch.core.stages import StageOrder
from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us
from stagewatch.core.traces import TraceRules
from stagewatch.stream.local import LocalRunner
from stagewatch.stream.steps.stalls import ARRIVALS, STALLED_SUMMARIES, WatchStalls, _WatchFn

pytestmark = pytest.mark.pipeline

RULES = TraceRules(StageOrder(("detect", "upload", "register", "enqueue", "download")))
S = US_PER_S
T0 = 1_780_000_000 * S
ENQUEUE, DOWNLOAD = 3, 4


def _progress(uid: str, stage: str, next_i: int, t_us: int, now_us: int | None = None) -> Progress:
    return Progress(FileRef(uid, "acme", None), stage, next_i, t_us, t_us if now_us is None else now_us)


def _summary(uid: str, stages: list[tuple[str, int]], status: str = "open") -> TraceSummary:
    return TraceSummary(
        uid=uid, tenant="acme", lot=None, status=status, first_time=format_rfc3339(stages[0][1]),
        last_time=format_rfc3339(max(t for _, t in stages)), end_to_end_ms=None,
        stages=tuple(StageTiming(s, format_rfc3339(t), None, None, "ok") for s, t in stages), missing_stages=(),
        negative_gaps=0, closed_at=format_rfc3339(max(t for _, t in stages)))


def _streaming() -> PipelineOptions:
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    return opts


def _watch(tagged: beam.PCollection) -> Any:
    """``WatchStalls`` over one stream of (input name, record): split into its four inputs."""
    inputs = [tagged | f"Only{name.title()}" >> beam.FlatMap(lambda r, n=name: [r[1]] if r[0] == n else [])
              for name in ("progress", "deadline", "summary", "anomaly")]
    return tuple(inputs) | WatchStalls(RULES)


def _timed_stream(records: list[tuple[str, Any, int]], stalled_at: int) -> TestStream:
    """(input name, record, time) as a stream in time order, the watermark following them -- moved past
    ``stalled_at`` before anything later comes: the stalls are declared first."""
    stream, watermark = TestStream(), 0
    for what, record, t_us in sorted(records, key=lambda r: r[2]):
        if watermark < stalled_at < t_us:
            stream, watermark = stream.advance_watermark_to(stalled_at / S + 1), stalled_at + S
        stream = stream.add_elements([TimestampedValue((what, record), t_us / S)])
        if t_us > watermark:
            stream, watermark = stream.advance_watermark_to(t_us / S), t_us
    return stream.advance_watermark_to_infinity()


def test_a_stalled_file_arrives_only_when_it_gets_past_its_stall() -> None:
    """Each file waits at enqueue (t0 + 10 s) for download, overdue at t0 + 60 s, and is declared stalled then.

    * ``a`` logged an earlier stage (upload) out of order at t0 + 11 s, before its stall, and closed open at
      its TTL: it never moved on -- no arrival (the backtest, which hears of no event after the stall, agrees);
    * ``b`` reached download at t0 + 300 s, the last stage, so only its summary tells: an arrival then;
    * ``c`` reached download too, its progress says so: an arrival then."""
    stalled_at = T0 + 60 * S
    stall = StallInfo(DOWNLOAD, 5000.0, 50_000.0, 40, False)
    records: list[tuple[str, Any, int]] = []
    for uid in ("a", "b", "c"):
        p = _progress(uid, "enqueue", DOWNLOAD, T0 + 10 * S)
        records += [("progress", p, T0 + 10 * S), ("deadline", Deadline(p, stalled_at, stall), T0 + 10 * S)]
    records += [
        ("progress", _progress("a", "enqueue", DOWNLOAD, T0 + 10 * S, now_us=T0 + 11 * S), T0 + 11 * S),
        ("summary", _summary("a", [("detect", T0), ("register", T0 + 5 * S), ("enqueue", T0 + 10 * S),
                                   ("upload", T0 + 11 * S)]), T0 + 3600 * S),
        ("summary", _summary("b", [("detect", T0), ("enqueue", T0 + 10 * S), ("download", T0 + 300 * S)],
                             status="complete"), T0 + 300 * S),
        ("progress", _progress("c", "download", DOWNLOAD + 1, T0 + 200 * S), T0 + 200 * S),
    ]
    stream = _timed_stream(records, stalled_at)
    with beam.Pipeline(runner=LocalRunner(), options=_streaming()) as p:
        out = _watch(p | stream)
        assert_that(out.stalls | beam.Map(lambda a: (a.kind, a.uid, a.stage, a.detected_at)),
                    equal_to([("stalled", uid, "download", format_rfc3339(stalled_at)) for uid in "abc"]),
                    label="Stalls")
        assert_that(out[ARRIVALS] | "Arrivals" >> beam.Map(lambda a: (a.uid, a.stage, a.t_us)),
                    equal_to([("b", "download", T0 + 300 * S), ("c", "download", T0 + 200 * S)]),
                    label="Arrivals")
        assert_that(out[STALLED_SUMMARIES] | "Statuses" >> beam.Map(lambda s: (s.uid, s.status)),
                    equal_to([("a", "stalled"), ("b", "stalled")]), label="Summaries")


def _slow(uid: str, measure: str, t_us: int) -> Anomaly:
    at = format_rfc3339(t_us)
    return Anomaly(anomaly_id=f"{uid}-register", kind="slow_stage", uid=uid, stage="register", last_stage="register",
                   tenant=None, lot=None, event_time=at, detected_at=at, observed_ms=9.0, expected_ms=1.0,
                   threshold_ms=2.0, score=4.5, baseline_n=50, baseline="stage", severity="critical",
                   measure=measure, message="slow")


def test_of_a_stages_two_slow_measures_the_one_the_backtest_judged_first_is_reported() -> None:
    """A stage's wait and reported latency can both be slow; one anomaly is reported, the one the backtest
    judges first: at the same moment the latency (``d``, whose wait came through first), else the earlier
    (``e``, whose later latency came through first)."""
    arrivals = [  # (what reached the step first) -- (the moment each was judged at)
        _slow("d", "wait", T0 + 20 * S), _slow("d", "latency", T0 + 20 * S),
        _slow("e", "latency", T0 + 30 * S), _slow("e", "wait", T0 + 25 * S),
    ]
    stream = (TestStream()
              .add_elements([TimestampedValue(("anomaly", a), parse_rfc3339_us(a.detected_at) / S)
                             for a in arrivals])
              .advance_watermark_to(T0 / S + 60).advance_watermark_to_infinity())
    with beam.Pipeline(runner=LocalRunner(), options=_streaming()) as p:
        out = _watch(p | stream)
        assert_that(out.stalls | beam.Map(lambda a: (a.uid, a.measure)),
                    equal_to([("d", "latency"), ("e", "wait")]))


def _slow_at(uid: str, stage: str, t_us: int) -> Anomaly:
    at = format_rfc3339(t_us)
    return Anomaly(anomaly_id=f"{uid}-{stage}", kind="slow_stage", uid=uid, stage=stage, last_stage=stage,
                   tenant=None, lot=None, event_time=at, detected_at=at, observed_ms=70_000.0, expected_ms=1.0,
                   threshold_ms=2.0, score=4.5, baseline_n=50, baseline="stage", severity="critical",
                   measure="wait", message="slow")


def test_a_move_after_the_deadline_does_not_undo_the_stall_however_early_it_arrives() -> None:
    """Both files wait at enqueue (t0 + 10 s), overdue at t0 + 60 s; everything reaches the step before the
    watermark moves (progress comes straight from the traces, the deadline through judging). ``f`` reached
    download at t0 + 80 s, after its deadline: stalled, as the backtest says, then arrived -- and download's slow
    verdict, judged after the deadline, is dropped (the backtest closed the trace at the stall). ``g`` reached
    download at t0 + 50 s, in time: no stall, its slow verdict stands."""
    stall = StallInfo(DOWNLOAD, 5000.0, 50_000.0, 40, False)
    records: list[tuple[str, Any, int]] = []
    for uid, moved_s in (("f", 80), ("g", 50)):
        p = _progress(uid, "enqueue", DOWNLOAD, T0 + 10 * S)
        moved = T0 + moved_s * S
        records += [
            ("progress", p, T0 + 10 * S),
            ("progress", _progress(uid, "download", DOWNLOAD + 1, moved), moved),
            ("anomaly", _slow_at(uid, "download", moved), moved),
            ("summary", _summary(uid, [("detect", T0), ("enqueue", T0 + 10 * S), ("download", moved)],
                                 status="complete"), moved),
            ("deadline", Deadline(p, T0 + 60 * S, stall), T0 + 10 * S),
        ]
    stream = (TestStream().add_elements([TimestampedValue((w, r), t / S) for w, r, t in records])
              .advance_watermark_to_infinity())
    with beam.Pipeline(runner=LocalRunner(), options=_streaming()) as p:
        out = _watch(p | stream)
        assert_that(out.stalls | beam.Map(lambda a: (a.kind, a.uid, a.stage)),
                    equal_to([("stalled", "f", "download"), ("slow_stage", "g", "download")]), label="Verdicts")
        assert_that(out[ARRIVALS] | "Arrivals" >> beam.Map(lambda a: (a.uid, a.stage, a.t_us)),
                    equal_to([("f", "download", T0 + 80 * S)]), label="Arrivals")
        assert_that(out[STALLED_SUMMARIES] | "Statuses" >> beam.Map(lambda s: (s.uid, s.status)),
                    equal_to([("f", "stalled"), ("g", "complete")]), label="Summaries")


@pytest.mark.parametrize("end_s", [None, 40])
def test_a_file_past_its_stage_line_is_flagged_slow_once_then_stalled_at_its_deadline(end_s: int | None) -> None:
    """Each file waits at enqueue (t0 + 10 s) for download: line 20 s (t0 + 30 s), deadline t0 + 60 s. ``h``
    reached download at t0 + 25 s: nothing. ``i`` at t0 + 45 s: flagged slow, still in download, at t0 + 30 s
    -- its judged slow wait, later, is not a second verdict. ``j`` never did: flagged slow, then stalled. A
    finite input ending at t0 + 40 s says nothing past it: no stall (the backtest stops there)."""
    stall = StallInfo(DOWNLOAD, 5000.0, 50_000.0, 40, False, 20_000.0)
    records: list[tuple[str, Any, int]] = []
    for uid, moved_s in (("h", 25), ("i", 45), ("j", None)):
        p = _progress(uid, "enqueue", DOWNLOAD, T0 + 10 * S)
        records += [("progress", p, T0 + 10 * S), ("deadline", Deadline(p, T0 + 60 * S, stall), T0 + 10 * S)]
        if moved_s is not None:
            moved = T0 + moved_s * S
            records.append(("progress", _progress(uid, "download", DOWNLOAD + 1, moved), moved))
            if moved_s > 30:  # its wait, judged when it came, over the line
                records.append(("anomaly", _slow_at(uid, "download", moved), moved))
    stream, watermark = TestStream(), 0
    for what, record, t_us in sorted(records, key=lambda r: r[2]):
        stream = stream.add_elements([TimestampedValue((what, record), t_us / S)])
        if t_us > watermark:
            stream, watermark = stream.advance_watermark_to(t_us / S), t_us
    stream = stream.advance_watermark_to_infinity()
    end_us = None if end_s is None else T0 + end_s * S
    with beam.Pipeline(runner=LocalRunner(), options=_streaming()) as p:
        tagged = p | stream
        inputs = [tagged | f"Only{name.title()}" >> beam.FlatMap(lambda r, n=name: [r[1]] if r[0] == n else [])
                  for name in ("progress", "deadline", "summary", "anomaly")]
        out = tuple(inputs) | WatchStalls(RULES, end_us)
        line = format_rfc3339(T0 + 30 * S)
        want = [("slow_stage", uid, "download", "in_progress", line) for uid in "ij"]
        if end_s is None:
            want.append(("stalled", "j", "download", "deadline", format_rfc3339(T0 + 60 * S)))
        assert_that(out.stalls | beam.Map(lambda a: (a.kind, a.uid, a.stage, a.measure, a.event_time)),
                    equal_to(want))


class _State:
    """A state cell for calling the step's pieces directly."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


def test_two_deadlines_due_at_once_for_a_file_whose_tenant_came_late_flag_it_once() -> None:
    """Two progresses of one file at the same stage and time, before and after its tenant became known (a later
    line of an earlier stage named it): the deadlines tie, and do not compare (a hostile pair of lines made the
    step fail for the file -- its verdicts and its summary lost)."""
    rules = TraceRules(StageOrder(("a", "b", "c")))
    info = StallInfo(2, 5000.0, 40_000.0, 50, False, 8000.0)
    first = Progress(FileRef("f", None, None), "b", 2, 10 * S, 10 * S)
    second = Progress(FileRef("f", "t1", None), "b", 2, 10 * S, 12 * S)
    waiting = (Deadline(first, 50 * S, info), Deadline(second, 50 * S, info))
    flagged = list(_WatchFn(rules)._flag_in_progress(30 * S, waiting, _State(()), _State(set())))
    assert [(a.kind, a.stage, a.measure) for a in flagged] == [("slow_stage", "c", "in_progress")]


def test_two_summaries_of_one_file_held_at_once_both_come_out() -> None:
    """A file can close twice (a line after its closed mark's TTL starts a new trace). Its second summary
    reaching the step while the first is still held lost the first, and its lines with it (the soak: 2,524
    lines at 200 lines/s). Both come out; only the trace that stalled is reported stalled."""
    stall = StallInfo(DOWNLOAD, 5000.0, 50_000.0, 40, False)
    p = _progress("s", "enqueue", DOWNLOAD, T0 + 10 * S)
    first = _summary("s", [("detect", T0), ("enqueue", T0 + 10 * S)])
    second = _summary("s", [("detect", T0 + 3700 * S), ("enqueue", T0 + 3710 * S), ("download", T0 + 3720 * S)],
                      status="complete")
    stream = (TestStream()
              .add_elements([TimestampedValue(("progress", p), T0 / S + 10),
                             TimestampedValue(("deadline", Deadline(p, T0 + 60 * S, stall)), T0 / S + 10)])
              .advance_watermark_to(T0 / S + 61)
              .add_elements([TimestampedValue(("summary", second), T0 / S + 3800),
                             TimestampedValue(("summary", first), T0 / S + 3600)])
              .advance_watermark_to(T0 / S + 3900).advance_watermark_to_infinity())
    with beam.Pipeline(runner=LocalRunner(), options=_streaming()) as pipe:
        out = _watch(pipe | stream)
        assert_that(out[STALLED_SUMMARIES] | beam.Map(lambda s: (s.uid, s.first_time, s.status)),
                    equal_to([("s", first.first_time, "stalled"), ("s", second.first_time, "complete")]))


class _Timer:
    def __init__(self) -> None:
        self.at: list[int] = []

    def set(self, ts: Any) -> None:
        self.at.append(int(ts.micros))


def test_a_summary_held_by_an_older_release_is_kept_and_the_close_timer_is_not_set_in_the_past() -> None:
    """A job updated in place may hold one bare summary (before several were kept). A second summary of the file
    keeps it, and the close timer goes to the new element's time, not to the old one's unknown time (0: a timer
    in 1970 emits its output there, behind every window downstream)."""
    old = _summary("u", [("detect", T0), ("enqueue", T0 + 10 * S)])
    new = _summary("u", [("detect", T0 + 7200 * S), ("download", T0 + 7300 * S)], status="complete")
    held, close = _State(old), _Timer()
    out = list(_WatchFn(RULES).process(
        ("u", new), ts=Timestamp(micros=T0 + 7300 * S), latest=_State(), moves=_State(), held_summary=held,
        pending=_State(), stalled=_State(), closed=_State(), reported=_State(), held=_State(), next_release=_State(),
        fire=_Timer(), release=_Timer(), close=close))
    assert out == []
    assert [s for _, s in held.value] == [old, new]
    assert close.at == [T0 + 7300 * S]


def test_a_stalled_files_line_after_its_trace_closed_is_its_arrival() -> None:
    """``k`` stalled before download (deadline t0 + 60 s); its trace upstream was let go and its next line, a
    straggler there (dead-lettered ``after_close``), reaches this step as a ``Straggler``: its arrival, once --
    as the backtest counts any line of a stalled file within its mark. A straggler of a file that did not
    stall (``m``) says nothing."""
    stall = StallInfo(DOWNLOAD, 5000.0, 50_000.0, 40, False)
    p = _progress("k", "enqueue", DOWNLOAD, T0 + 10 * S)
    records: list[tuple[str, Any, int]] = [
        ("progress", p, T0 + 10 * S), ("deadline", Deadline(p, T0 + 60 * S, stall), T0 + 10 * S),
        # (a straggler comes once its trace upstream was let go, a session gap on: long after the stall)
        ("progress", Straggler("k", "download", T0 + 4000 * S), T0 + 4000 * S),
        ("progress", Straggler("k", "upload", T0 + 4100 * S), T0 + 4100 * S),
        ("progress", Straggler("m", "download", T0 + 4000 * S), T0 + 4000 * S),
    ]
    with beam.Pipeline(runner=LocalRunner(), options=_streaming()) as pipeline:
        out = _watch(pipeline | _timed_stream(records, T0 + 60 * S))
        assert_that(out.stalls | beam.Map(lambda a: (a.kind, a.uid)), equal_to([("stalled", "k")]), label="Stalls")
        assert_that(out[ARRIVALS] | "Arrivals" >> beam.Map(lambda a: (a.uid, a.stage, a.t_us)),
                    equal_to([("k", "download", T0 + 4000 * S)]), label="Arrivals")
