"""``AssembleTraces``: one ``Trace`` per UID in keyed state, fed in event-time order by timers.

The backtest releases events behind a global watermark; here each UID buffers its events and releases them
when the watermark passes them (an event-time timer at the earliest buffered time), so the ``Trace`` sees the
same order. An event at or before what its UID already released arrived too late: a dead letter, reason
``late``. The trace's own timer (skew holds, TTL) is a second event-time timer. Its state is cleared when the
trace closes; a short "closed" marker stays for the TTL so stragglers are counted, not made into new traces.

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
from apache_beam.utils.timestamp import Timestamp

from stagewatch.events import StageEvent
from stagewatch.timeutil import US_PER_S, format_rfc3339
from stagewatch.traces import Measurement, Outbox, StallInfo, Trace, TraceRules

__all__ = ["FAILURES", "LATE", "PROGRESS", "SUMMARIES", "AssembleTraces"]

PROGRESS = "progress"
FAILURES = "failures"
SUMMARIES = "summaries"
LATE = "late"


class _Recorder:
    """The ``Judging`` of the streaming job: records what to judge, decides nothing."""

    def __init__(self, rules: TraceRules) -> None:
        self.rules = rules
        self.measurements: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []

    def measure(self, trace: Trace, m: Measurement, now: int, out: Outbox) -> str:
        self.measurements.append(_context(trace, self.rules) | {
            "measure": m.measure, "stage_i": m.stage_i, "value_ms": m.value_ms, "t_us": m.t_us,
        })
        return "pending"

    def stall_deadline(self, trace: Trace, next_i: int, last_t: int) -> tuple[int, StallInfo] | None:
        self.progress.append(_context(trace, self.rules) | {"next_i": next_i, "last_t_us": last_t})
        return None


def _context(trace: Trace, rules: TraceRules) -> dict[str, Any]:
    return {
        "uid": trace.uid, "tenant": trace.tenant, "lot": trace.lot,
        "last_stage": rules.names[trace.furthest] if trace.furthest >= 0 else None,
    }


def _ts(t_us: int) -> Timestamp:
    return Timestamp(micros=t_us)


class _AssembleFn(beam.DoFn):
    BUFFER = BagStateSpec("buffer", PickleCoder())
    TRACE = ReadModifyWriteStateSpec("trace", PickleCoder())
    RELEASED = ReadModifyWriteStateSpec("released_us", VarIntCoder())
    NEXT_RELEASE = ReadModifyWriteStateSpec("next_release_us", VarIntCoder())
    CLOSED = ReadModifyWriteStateSpec("closed", StrUtf8Coder())
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    WAKE = TimerSpec("wake", TimeDomain.WATERMARK)

    def __init__(self, rules: TraceRules) -> None:
        self.rules = rules
        self._late = Metrics.counter("stagewatch", "late")
        self._after_close = Metrics.counter("stagewatch", "events_after_close")

    def process(
        self,
        element: tuple[str, StageEvent],
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        released: Any = beam.DoFn.StateParam(RELEASED),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[Any]:
        ev = element[1]
        done = released.read()
        if done is not None and ev.t_us <= done:
            self._late.inc()
            yield beam.pvalue.TaggedOutput(LATE, {
                "reason": "late", "detail": f"event time {format_rfc3339(ev.t_us)} is behind what this file "
                f"already released ({format_rfc3339(done)})", "line": repr(ev), "received_at":
                format_rfc3339(ev.t_us), "source": "assemble"})
            return
        if closed.read():
            self._after_close.inc()
            return
        buffer.add(ev)
        pending = next_release.read()
        if pending is None or ev.t_us < pending:
            next_release.write(ev.t_us)
            release.set(_ts(ev.t_us))

    @on_timer(RELEASE)
    def _release(
        self,
        key: Any = beam.DoFn.KeyParam,
        fire: Any = beam.DoFn.TimestampParam,
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        trace_state: Any = beam.DoFn.StateParam(TRACE),
        released: Any = beam.DoFn.StateParam(RELEASED),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        release: Any = beam.DoFn.TimerParam(RELEASE),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterator[Any]:
        now = int(fire.micros)
        events = sorted(buffer.read(), key=lambda e: e.t_us)
        due, rest = [e for e in events if e.t_us <= now], [e for e in events if e.t_us > now]
        buffer.clear()
        for e in rest:
            buffer.add(e)
        if rest:
            next_release.write(rest[0].t_us)
            release.set(_ts(rest[0].t_us))
        else:
            next_release.clear()
        released.write(max(now, released.read() or now))
        if closed.read():
            self._after_close.inc(len(due))
            return
        trace = trace_state.read() or Trace(key, len(self.rules.names))
        rec, out = _Recorder(self.rules), Outbox()
        is_closed = False
        for ev in due:
            if is_closed:
                self._after_close.inc()
                continue
            # The backtest wakes a trace before an event later than its timer; so does this step.
            if trace.last_t and trace.next_timer(self.rules) < ev.t_us:
                is_closed = trace.on_timer(self.rules, rec, ev.t_us, out)
                if is_closed:
                    self._after_close.inc()
                    continue
            is_closed = trace.add(ev, self.rules, rec, ev.t_us, out)
        yield from self._emit(trace, rec, out, is_closed, trace_state, closed, wake)

    @on_timer(WAKE)
    def _wake(
        self,
        fire: Any = beam.DoFn.TimestampParam,
        trace_state: Any = beam.DoFn.StateParam(TRACE),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterator[Any]:
        trace = trace_state.read()
        if trace is None:
            if closed.read():  # the TTL of the closed marker
                closed.clear()
            return
        now = int(fire.micros)
        if trace.next_timer(self.rules) > now:
            wake.set(_ts(trace.next_timer(self.rules)))
            return
        rec, out = _Recorder(self.rules), Outbox()
        is_closed = trace.on_timer(self.rules, rec, now, out)
        yield from self._emit(trace, rec, out, is_closed, trace_state, closed, wake)

    def _emit(
        self, trace: Trace, rec: _Recorder, out: Outbox, is_closed: bool, trace_state: Any, closed: Any, wake: Any
    ) -> Iterator[Any]:
        for m in rec.measurements:
            yield TimestampedValue(m, m["t_us"] / US_PER_S)
        for p in rec.progress:
            yield beam.pvalue.TaggedOutput(PROGRESS, TimestampedValue(p, p["last_t_us"] / US_PER_S))
        for a in out.anomalies:
            yield beam.pvalue.TaggedOutput(FAILURES, a.to_dict())
        for s in out.summaries or ():
            yield beam.pvalue.TaggedOutput(SUMMARIES, s.to_dict())
        if is_closed:
            trace_state.clear()
            closed.write(trace.status)
            wake.set(_ts(trace.last_t + self.rules.ttl_us))  # then forget the closed marker
        else:
            trace_state.write(trace)
            wake.set(_ts(trace.next_timer(self.rules)))


class AssembleTraces(beam.PTransform):
    """Events (after ``Dedup``) → measurements (main), and tagged ``PROGRESS``, ``FAILURES``, ``SUMMARIES``,
    ``LATE``."""

    def __init__(self, rules: TraceRules) -> None:
        super().__init__()
        self._rules = rules

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        keyed = events | "KeyByUid" >> beam.Map(lambda ev: (ev.uid, ev)).with_output_types(tuple[str, Any])
        return keyed | "AssemblePerUid" >> beam.ParDo(_AssembleFn(self._rules)).with_outputs(
            PROGRESS, FAILURES, SUMMARIES, LATE, main="measurements"
        )
