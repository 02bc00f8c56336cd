"""``WatchStalls``: per UID, an event-time timer at the next stage's deadline; the stall when it fires.

Three inputs, keyed by UID:

* progress, straight from ``AssembleTraces`` (no judging delay): the file moved on;
* deadlines, from ``JudgeMeasurements``: when the next stage after a given progress is overdue;
* summaries, from ``AssembleTraces``: the file closed (complete, failed, or open after its TTL).

A deadline counts only if no newer progress arrived since the one it was computed for (the judging step
delivers deadlines up to an interval late; progress is never late, so the check is exact). A fired stall
closes the watch; the file's summary, when it comes, is reported ``stalled``. Timeline::

    12:00:00  progress(enqueue, t=12:00:00)          -> remembered
    12:05:00  deadline(for 12:00:00) = 12:01:00       -> timer 12:01:00 (already due: fires now)
              no newer progress                       -> "stalled": download after enqueue
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core import anomalies
from stagewatch.core.measurements import Arrival, Deadline, Progress
from stagewatch.core.records import Anomaly, StageTiming, TraceSummary
from stagewatch.core.timeutil import parse_rfc3339_us
from stagewatch.core.traces import TraceRules
from stagewatch.stream.steps.contain import ContainedStep, contained
from stagewatch.stream.steps.timers import fire_at, fire_no_later_than, take_due

__all__ = ["ARRIVALS", "STALLED_SUMMARIES", "WatchStalls"]

STALLED_SUMMARIES = "summaries"
# ``Arrival``: a file declared stalled moved on after all (incidents resolve when they all do).
# The backtest closes a stalled trace and hears of its next event; here the trace goes on upstream, so the
# arrival is its next progress -- or, when the stage it reached was the last, its summary.
ARRIVALS = "arrivals"


class _StallMark(NamedTuple):
    """A file declared stalled: which stall, after which progress, waiting for which stage, declared when; and
    whether it has shown itself beyond the stall since."""

    anomaly_id: str
    last_t_us: int
    next_i: int
    at_us: int
    arrived: bool = False


class _WatchFn(beam.DoFn):
    LATEST = ReadModifyWriteStateSpec("latest_progress_us", VarIntCoder())
    PENDING = ReadModifyWriteStateSpec("deadline", PickleCoder())
    STALLED = ReadModifyWriteStateSpec("stalled", PickleCoder())
    REPORTED = ReadModifyWriteStateSpec("reported", PickleCoder())
    CLOSED = ReadModifyWriteStateSpec("closed", VarIntCoder())
    HELD = BagStateSpec("held_anomalies", PickleCoder())
    NEXT_RELEASE = ReadModifyWriteStateSpec("next_release_us", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, rules: TraceRules) -> None:
        self._rules = rules

    @contained("Stalls")
    def process(
        self,
        kv: tuple[str, Progress | Deadline | TraceSummary | Anomaly],
        ts: Any = beam.DoFn.TimestampParam,
        latest: Any = beam.DoFn.StateParam(LATEST),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        reported: Any = beam.DoFn.StateParam(REPORTED),
        held: Any = beam.DoFn.StateParam(HELD),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
        fire: Any = beam.DoFn.TimerParam(FIRE),
        forget: Any = beam.DoFn.TimerParam(FORGET),
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[Any]:
        record = kv[1]
        if isinstance(record, Anomaly):
            # One anomaly per (kind, stage) of a file: a stage's wait and its reported latency can both be
            # over their lines, and the backtest reports the one it judged first -- the earlier, and at the
            # same moment the reported latency. They reach this step in either order, so each is held
            # until the watermark passes the moment it was judged at (its timestamp): by then every other
            # judged at that moment has come (it held the watermark on its way).
            t_us = int(ts.micros)
            held.add((t_us, _MEASURE_RANK.get(record.measure or "", len(_MEASURE_RANK)), record))
            fire_no_later_than(next_release, release, t_us)
            return
        if isinstance(record, Progress):
            if record.last_t_us > (latest.read() or -1):
                latest.write(record.last_t_us)
            yield from _arrival(stalled, record.file.uid, record.last_stage, record.last_t_us)
        elif isinstance(record, Deadline):
            # Deadlines come through the judging step, up to an interval after the progress they answer: one
            # that arrives after the file closed (or after its stall) is moot.
            if stalled.read() is None and closed.read() is None:
                current: Deadline | None = pending.read()
                if current is None or record.progress.last_t_us >= current.progress.last_t_us:
                    pending.write(record)
                    fire.set(Timestamp(micros=record.deadline_us))
        else:  # a summary: the file closed
            summary: TraceSummary = record
            mark: _StallMark | None = stalled.read()
            if mark is not None:
                beyond = _first_beyond(mark, summary.stages, self._rules)
                if beyond is not None:
                    yield from _arrival(stalled, summary.uid, *beyond)
                summary = replace(summary, status="stalled")
            yield beam.pvalue.TaggedOutput(STALLED_SUMMARIES, summary)
            pending.clear()
            closed.write(1)
            # Keep the closed mark for as long as a deadline can still be on its way (an interval, and the
            # trace TTL for good measure), then forget the file.
            forget.set(Timestamp(micros=max(int(ts.micros), latest.read() or 0) + self._rules.ttl_us))

    @on_timer(RELEASE)
    @contained("Stalls")
    def _release(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        reported: Any = beam.DoFn.StateParam(REPORTED),
        held: Any = beam.DoFn.StateParam(HELD),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[Any]:
        due, rest = take_due(held, int(ts.micros), _held_time, _held_order)
        seen: set[tuple[str, str]] = reported.read() or set()
        for _, _, anomaly in due:
            mark = (anomaly.kind, anomaly.stage)
            if mark not in seen:
                seen.add(mark)
                yield anomaly
        reported.write(seen)
        fire_at(next_release, release, [t for t, _, _ in rest[:1]])

    @on_timer(FORGET)
    @contained("Stalls")
    def _forget(
        self,
        latest: Any = beam.DoFn.StateParam(LATEST),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        reported: Any = beam.DoFn.StateParam(REPORTED),
        held: Any = beam.DoFn.StateParam(HELD),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
    ) -> None:
        # Held anomalies were released long before: they are no later than the file's last event, and this
        # fires a TTL after it.
        for state in (latest, pending, stalled, closed, reported, held, next_release):
            state.clear()

    @on_timer(FIRE)
    @contained("Stalls")
    def _fire(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        latest: Any = beam.DoFn.StateParam(LATEST),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
    ) -> Iterator[Anomaly]:
        deadline: Deadline | None = pending.read()
        if deadline is None or stalled.read() is not None:
            return
        progress = deadline.progress
        if (latest.read() or -1) > progress.last_t_us:
            return  # the file moved on; the deadline for its new progress will come
        now = int(ts.micros)
        if deadline.deadline_us > now:
            return  # superseded by a later deadline; its own timer will fire
        anomaly = anomalies.stalled(progress.file, self._rules.names[deadline.stall.next_i], progress.last_stage,
                                    progress.last_t_us, deadline.deadline_us, deadline.stall, now)
        stalled.write(_StallMark(anomaly.anomaly_id, progress.last_t_us, deadline.stall.next_i, now))
        pending.clear()
        yield anomaly


# Of a stage's anomalies judged at one moment, the backtest's order: the reported latency, then the wait.
_MEASURE_RANK = {"latency": 0, "wait": 1}


def _held_time(item: tuple[int, int, Anomaly]) -> int:
    return item[0]


def _held_order(item: tuple[int, int, Anomaly]) -> tuple[int, int]:
    return item[0], item[1]


def _first_beyond(mark: _StallMark, stages: tuple[StageTiming, ...], rules: TraceRules) -> tuple[str, int] | None:
    """(stage, time) of the first stage in a closed file's summary that shows it got past its stall: the stage
    it stalled waiting for or a later one, or any line logged after the stall was declared (what the
    backtest, which closes a stalled trace, hears as its next event). A stage before the stall that was
    logged out of order is not a move on."""
    for timing in stages:
        t_us = parse_rfc3339_us(timing.time)
        if rules.index.get(timing.stage, -1) >= mark.next_i or t_us > mark.at_us:
            return timing.stage, t_us
    return None


def _arrival(stalled: Any, uid: str, stage: str | None, t_us: int) -> Iterator[Any]:
    """The first sign of a stalled file beyond the progress it stalled at, once."""
    mark: _StallMark | None = stalled.read()
    if mark is None or mark.arrived or t_us <= mark.last_t_us:
        return
    stalled.write(mark._replace(arrived=True))
    yield beam.pvalue.TaggedOutput(ARRIVALS, Arrival(uid, stage, t_us))


def _uid_of(record: Progress | Deadline | TraceSummary | Anomaly) -> str:
    if isinstance(record, Progress):
        return record.file.uid
    if isinstance(record, Deadline):
        return record.progress.file.uid
    return record.uid


class WatchStalls(ContainedStep):
    """(progress, deadlines, summaries, judged anomalies) → anomalies (main: stalls, and the judged ones, one
    per kind and stage of a file), final summaries (``STALLED_SUMMARIES``) and ``ARRIVALS``."""

    def __init__(self, rules: TraceRules) -> None:
        super().__init__()
        self._rules = rules

    def expand(
        self, inputs: tuple[beam.PCollection, beam.PCollection, beam.PCollection, beam.PCollection]
    ) -> Any:
        progress, deadlines, summaries, anomalies = inputs
        tagged = [
            pc | f"Tag{name.title()}" >> beam.Map(lambda r: (_uid_of(r), r))
            | f"Global{name.title()}" >> beam.WindowInto(GlobalWindows())
            for name, pc in (
                ("progress", progress), ("deadline", deadlines), ("summary", summaries), ("anomaly", anomalies)
            )
        ]
        merged = (
            tagged
            | "MergeByUid" >> beam.Flatten()
            | "Typed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, Any])
        )
        return self.pardo(merged, "WatchPerUid", _WatchFn(self._rules), outputs=(STALLED_SUMMARIES, ARRIVALS),
                          main="stalls")
