"""``AssembleTraces``: one ``Trace`` per UID in keyed state, fed in event-time order by timers.

The backtest releases events behind a global watermark; here each UID buffers its events and releases them
when the watermark passes them (an event-time timer at the earliest buffered time), so the ``Trace`` sees the
same order. An event at or before what its UID already released arrived too late: a dead letter, reason
``late``. The trace's own timer (skew holds, TTL) is a second event-time timer. Its state is cleared when the
trace closes; a "closed" mark stays for a TTL from the close, as the backtest's: an event dated before its end
is a straggler (dead letter ``after_close``), a later one starts the file's next trace -- decided by the event's
time, not by when it arrives.

Baselines are not here: measurements (waits, reported latencies, end to end) and progress (for stall
deadlines) go out to be judged downstream against the snapshots of their interval.

Timeline for one UID (allowed lateness 60 s is the source's business; this step only orders)::

    12:00:05 event "enqueue" (t=12:00:04) arrives  -> buffered, release timer 12:00:04
    12:00:06 event "register" (t=12:00:01) arrives -> buffered, release timer 12:00:01
    watermark 12:00:02 -> release register; timer moves to 12:00:04
    watermark 12:00:05 -> release enqueue; measurements out; wake timer = trace.next_timer()
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, StrUtf8Coder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue

from stagewatch.core.events import StageEvent
from stagewatch.core.measurements import Measured, Measurement, Progress, StallInfo, Straggler
from stagewatch.core.outbox import Outbox
from stagewatch.core.records import DeadLetter, dead_letter, event_json
from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us
from stagewatch.core.traces import Trace, TraceRules
from stagewatch.stream.steps.contain import ContainedStep, contained
from stagewatch.stream.steps.timers import fire_at, fire_no_later_than, take_due

__all__ = ["FAILURES", "LATE", "PROGRESS", "STRAGGLERS", "SUMMARIES", "AssembleTraces"]

PROGRESS = "progress"
FAILURES = "failures"
SUMMARIES = "summaries"
LATE = "late"
STRAGGLERS = "stragglers"  # ``Straggler``: each ``after_close`` dead letter's line, for the stall watch


class _Recorder:
    """The ``Judging`` of the streaming job: records what to judge, decides nothing.

    Each record carries ``now_us``, the event-time clock of the step when the trace made it (the event's time,
    or a timer's): the backtest judges and learns a measurement at that moment, against the snapshot of that
    moment's interval, so downstream windows it by ``now_us`` -- and emitting at ``now_us`` is never behind
    this step's output watermark (a held stage measured at its event time would be).
    """

    def __init__(self, rules: TraceRules) -> None:
        self.rules = rules
        self.measurements: list[Measured] = []
        self.progress: list[Progress] = []

    def measure(self, trace: Trace, m: Measurement, now: int, out: Outbox) -> str:
        parts = trace.parts() if m.measure == "end_to_end" else ()
        self.measurements.append(Measured(trace.ref(), trace.last_stage(self.rules), m, now, parts))
        return "pending"

    def stall_deadline(self, trace: Trace, next_i: int, last_t: int, now: int) -> tuple[int, StallInfo] | None:
        self.progress.append(Progress(trace.ref(), self.rules.names[trace.furthest], next_i, last_t, now))
        return None


def _event_time(ev: StageEvent) -> int:
    return ev.t_us


class _AssembleFn(beam.DoFn):
    """One timer per UID, at the earlier of its next buffered event and its trace's own timer. When it fires
    at ``now`` it does for this file what the backtest's ``Ingest.advance(now)`` does for all: release the
    buffered events up to ``now`` in event-time order, waking the trace first whenever its timer falls
    strictly before the next event, then wake it if its timer is due by ``now``. (Two timers -- one for
    releases, one for wakes -- fired out of this order when the watermark jumped past both.)"""

    BUFFER = BagStateSpec("buffer", PickleCoder())
    TRACE = ReadModifyWriteStateSpec("trace", PickleCoder())
    RELEASED = ReadModifyWriteStateSpec("released_us", VarIntCoder())
    NEXT = ReadModifyWriteStateSpec("next_fire_us", VarIntCoder())
    CLOSED = ReadModifyWriteStateSpec("closed", StrUtf8Coder())
    # When the closed mark ends (the close + the TTL); absent in marks written before it was kept.
    CLOSED_UNTIL = ReadModifyWriteStateSpec("closed_until_us", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def __init__(self, rules: TraceRules) -> None:
        self.rules = rules
        self._late = Metrics.counter("stagewatch", "late")
        self._after_close = Metrics.counter("stagewatch", "events_after_close")

    @contained("Assemble")
    def process(
        self,
        element: tuple[str, StageEvent],
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        released: Any = beam.DoFn.StateParam(RELEASED),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        closed_until: Any = beam.DoFn.StateParam(CLOSED_UNTIL),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        ev = element[1]
        done = released.read()
        if done is not None and ev.t_us <= done:
            self._late.inc()
            yield beam.pvalue.TaggedOutput(LATE, _dead_letter(
                ev, "late", f"event time {format_rfc3339(ev.t_us)} is behind what this file already "
                f"processed ({format_rfc3339(done)}): it arrived after the watermark had passed it"))
            return
        status = closed.read()
        until = closed_until.read() if status else None
        if status and (until is None or ev.t_us < until):
            self._after_close.inc()
            yield beam.pvalue.TaggedOutput(LATE, _dead_letter(
                ev, "after_close", f"the file's trace already closed ({status}); this event came after it"))
            yield beam.pvalue.TaggedOutput(STRAGGLERS, Straggler(ev.uid, ev.stage, ev.t_us))
            return
        buffer.add(ev)
        fire_no_later_than(next_fire, fire, ev.t_us)

    @on_timer(FIRE)
    @contained("Assemble")
    def _fire(
        self,
        key: Any = beam.DoFn.KeyParam,
        fire_ts: Any = beam.DoFn.TimestampParam,
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        trace_state: Any = beam.DoFn.StateParam(TRACE),
        released: Any = beam.DoFn.StateParam(RELEASED),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        closed_until: Any = beam.DoFn.StateParam(CLOSED_UNTIL),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        now = int(fire_ts.micros)
        rules = self.rules
        trace: Trace | None = trace_state.read()
        if trace is None and closed.read():
            # The closed mark's end (its timer: nothing buffered is earlier). Buffered events, dated after
            # it, are the file's next trace; with none, the file is forgotten.
            until = closed_until.read()
            if until is not None and now < until:  # not its end yet (no other timer is set while it lasts)
                fire_at(next_fire, fire, [until])
                return
            closed.clear()
            closed_until.clear()
            released.clear()
        due, rest = take_due(buffer, now, _event_time, _event_time)
        if due:
            released.write(max(due[-1].t_us, released.read() or 0))
        if trace is None and not due and not rest:
            next_fire.clear()
            return
        if trace is None:
            trace = Trace(key, len(rules.names))
        rec, out = _Recorder(rules), Outbox()
        stragglers = trace.release(due, now, rules, rec, out)
        yield from self._emit(rec, out)
        if stragglers is not None:  # closed
            # The mark lasts a TTL from the close, as the backtest's (``Detector._closed_until``): a trace closed
            # open at its TTL would otherwise keep no mark at all, and its next straggler would start a second
            # trace where the backtest counts it. The close is the summary's moment (the closing event's time,
            # or the timer's): the backtest's too.
            closed_at = parse_rfc3339_us(out.summaries[-1].closed_at) if out.summaries else now
            until = closed_at + rules.ttl_us
            buffer.clear()
            for e in stragglers + rest:
                if e.t_us >= until:  # the file's next trace: waits for the mark's end
                    buffer.add(e)
                    continue
                self._after_close.inc()
                yield beam.pvalue.TaggedOutput(LATE, _dead_letter(
                    e, "after_close", f"the file's trace already closed ({trace.status}); this event came after it"))
                yield beam.pvalue.TaggedOutput(STRAGGLERS, Straggler(e.uid, e.stage, e.t_us))
            trace_state.clear()
            closed.write(trace.status)
            closed_until.write(until)
            fire_at(next_fire, fire, [until])
            return
        if trace.last_t:
            trace_state.write(trace)
        fire_at(next_fire, fire, ([trace.next_timer(rules)] if trace.last_t else []) + [e.t_us for e in rest[:1]])

    def _emit(self, rec: _Recorder, out: Outbox) -> Iterator[Any]:
        for m in rec.measurements:
            yield TimestampedValue(m, m.now_us / US_PER_S)
        for p in rec.progress:
            yield beam.pvalue.TaggedOutput(PROGRESS, TimestampedValue(p, p.now_us / US_PER_S))
        for a in out.anomalies:
            yield beam.pvalue.TaggedOutput(FAILURES, a)
        for s in out.summaries or ():
            yield beam.pvalue.TaggedOutput(SUMMARIES, s)


def _dead_letter(ev: StageEvent, reason: str, detail: str) -> DeadLetter:
    # The event as the backtest sets it aside (its line is long gone), at its own time: what the step knows.
    return dead_letter(reason, detail, event_json(ev), format_rfc3339(ev.t_us), "assemble")


class AssembleTraces(ContainedStep):
    """Events (after ``Dedup``) → measurements (main), and tagged ``PROGRESS``, ``FAILURES``, ``SUMMARIES``,
    ``LATE``, ``STRAGGLERS``."""

    def __init__(self, rules: TraceRules) -> None:
        super().__init__()
        self._rules = rules

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        keyed = events | "KeyByUid" >> beam.Map(lambda ev: (ev.uid, ev)).with_output_types(tuple[str, Any])
        return self.pardo(keyed, "AssemblePerUid", _AssembleFn(self._rules),
                          outputs=(PROGRESS, FAILURES, SUMMARIES, LATE, STRAGGLERS), main="measurements")
