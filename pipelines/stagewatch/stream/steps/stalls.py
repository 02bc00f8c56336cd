"""``WatchStalls``: per UID, an event-time timer at the next stage's deadline; the stall when it fires.

Three inputs, keyed by UID:

* progress, straight from ``AssembleTraces`` (no judging delay): the file moved on; with it the stragglers,
  the file's lines after its trace closed (dead-lettered there): a stalled file's first one is its arrival;
* deadlines, from ``JudgeMeasurements``: when the next stage after a given progress is overdue;
* summaries, from ``AssembleTraces``: the file closed (complete, failed, or open after its TTL).

A file is stalled, as in the backtest, when its deadline passes before its next move: a move logged after the
deadline does not undo the stall, however early it reaches this step (progress comes straight from the traces,
ahead of the watermark). Every move up to a deadline has arrived when the watermark passes it (each holds the
watermark at its own time), so the timer at the deadline decides. A summary is held until the watermark passes
its own time, by which the deadline of the file's last progress has come. A fired stall closes the watch; the
file's summary, when it comes, is reported ``stalled``, and what was judged of the file after its deadline is
dropped (the backtest closed the trace there). Timeline::

    12:00:00  progress(enqueue, t=12:00:00)          -> remembered
    12:00:30  progress(download, t=12:01:30)         -> remembered: a move, but after the deadline below
    12:05:00  deadline(for 12:00:00) = 12:01:00       -> timer 12:01:00 (already due: fires now)
              no move by 12:01:00                     -> "stalled": download after enqueue; arrival 12:01:30
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core import anomalies
from stagewatch.core.kinds import SLOW_STAGE
from stagewatch.core.measurements import Deadline, Progress, Straggler
from stagewatch.core.records import Anomaly, TraceSummary
from stagewatch.core.timeutil import parse_rfc3339_us
from stagewatch.core.traces import TraceRules
from stagewatch.stream.steps.contain import ContainedStep, contained
from stagewatch.stream.steps.stall_marks import (
    ARRIVALS,
    MEASURE_RANK,
    StallMark,
    add_moves,
    arrival,
    deadlines_of,
    first_beyond,
    held_order,
    held_time,
)
from stagewatch.stream.steps.timers import fire_at, fire_no_later_than, take_due

__all__ = ["ARRIVALS", "STALLED_SUMMARIES", "WatchStalls"]

STALLED_SUMMARIES = "summaries"
# Stall marks saved in Beam state before they moved to ``stall_marks`` name this module's class: they load.
_StallMark = StallMark


class _WatchFn(beam.DoFn):
    LATEST = ReadModifyWriteStateSpec("latest_progress_us", VarIntCoder())
    MOVES = ReadModifyWriteStateSpec("moves", PickleCoder())  # (t_us, stage) the file was seen at
    # Held until the watermark passes each: ((time, summary), ...). A file can close more than once (a line
    # after its closed mark's TTL starts a new trace), and a second summary may come while the first waits.
    SUMMARY = ReadModifyWriteStateSpec("summary", PickleCoder())
    PENDING = ReadModifyWriteStateSpec("deadline", PickleCoder())  # the deadlines waiting, a tuple
    STALLED = ReadModifyWriteStateSpec("stalled", PickleCoder())
    REPORTED = ReadModifyWriteStateSpec("reported", PickleCoder())
    CLOSED = ReadModifyWriteStateSpec("closed", VarIntCoder())
    HELD = BagStateSpec("held_anomalies", PickleCoder())
    NEXT_RELEASE = ReadModifyWriteStateSpec("next_release_us", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, rules: TraceRules, end_us: int | None = None) -> None:
        self._rules = rules
        self._end_us = end_us

    @contained("Stalls")
    def process(
        self,
        kv: tuple[str, Progress | Deadline | TraceSummary | Anomaly | Straggler],
        ts: Any = beam.DoFn.TimestampParam,
        latest: Any = beam.DoFn.StateParam(LATEST),
        moves: Any = beam.DoFn.StateParam(MOVES),
        held_summary: Any = beam.DoFn.StateParam(SUMMARY),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        reported: Any = beam.DoFn.StateParam(REPORTED),
        held: Any = beam.DoFn.StateParam(HELD),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
        fire: Any = beam.DoFn.TimerParam(FIRE),
        release: Any = beam.DoFn.TimerParam(RELEASE),
        close: Any = beam.DoFn.TimerParam(CLOSE),
    ) -> Iterator[Any]:
        record = kv[1]
        if isinstance(record, Anomaly):
            # One anomaly per (kind, stage) of a file: a stage's wait and its reported latency can both be
            # over their lines, and the backtest reports the one it judged first -- the earlier, and at the
            # same moment the reported latency. They reach this step in either order, so each is held
            # until the watermark passes the moment it was judged at (its timestamp): by then every other
            # judged at that moment has come (it held the watermark on its way).
            t_us = int(ts.micros)
            held.add((t_us, MEASURE_RANK.get(record.measure or "", len(MEASURE_RANK)), record))
            fire_no_later_than(next_release, release, t_us)
            return
        if isinstance(record, Straggler):  # after the file's trace closed: a stalled file's arrival, nothing else
            yield from arrival(stalled, record.uid, record.stage, record.t_us)
        elif isinstance(record, Progress):
            if record.last_t_us > (latest.read() or -1):
                latest.write(record.last_t_us)
            add_moves(moves, [(record.last_t_us, record.last_stage)])
            yield from arrival(stalled, record.file.uid, record.last_stage, record.last_t_us)
        elif isinstance(record, Deadline):
            # Deadlines come through the judging step, up to an interval after the progress they answer: one
            # that arrives after the file closed (or after its stall) is moot.
            if stalled.read() is None and closed.read() is None:
                waiting = (*deadlines_of(pending), record)
                pending.write(waiting)
                self._set_fire(fire, waiting, reported.read() or set())
        else:  # a summary: the file closed; said once the deadline of its last progress has surely come
            summaries = sorted((*_held_summaries(held_summary), (int(ts.micros), record)), key=lambda h: h[0])
            held_summary.write(tuple(summaries))
            # Its stages are moves too, known now (a last stage has no progress of its own): whichever of this
            # step's timers fires first, a deadline the file met by completing is not a stall.
            add_moves(moves, [(parse_rfc3339_us(t.time), t.stage) for t in record.stages])
            # Never behind this element: a summary held from an older release has no time of its own (0), and one
            # whose close was deferred to a later deadline is re-examined now and deferred again.
            close.set(Timestamp(micros=max(summaries[0][0], int(ts.micros))))

    @on_timer(RELEASE)
    @contained("Stalls")
    def _release(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        moves: Any = beam.DoFn.StateParam(MOVES),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
        reported: Any = beam.DoFn.StateParam(REPORTED),
        held: Any = beam.DoFn.StateParam(HELD),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[Any]:
        now = int(ts.micros)
        # A stall due by now is declared first, whichever timer the runner fires first.
        yield from self._declare(now, moves, pending, stalled, reported)
        rest = yield from self._pass(now, stalled, reported, held)
        fire_at(next_release, release, [t for t, _, _ in rest[:1]])

    @staticmethod
    def _pass(now: int, stalled: Any, reported: Any, held: Any) -> Generator[Anomaly, None, list[Any]]:
        """The held anomalies judged by ``now``, one per (kind, stage), none judged after a stall's deadline;
        returns those still held."""
        stall: StallMark | None = stalled.read()
        after = stall.deadline_us if stall is not None and stall.deadline_us is not None else None
        due, rest = take_due(held, now, held_time, held_order)
        seen: set[tuple[str, str]] = reported.read() or set()
        for t_us, _, anomaly in due:
            mark = (anomaly.kind, anomaly.stage)
            if after is not None and t_us > after:
                continue  # judged after the file's deadline passed: the backtest closed its trace there
            if mark not in seen:
                seen.add(mark)
                yield anomaly
        reported.write(seen)
        return rest

    @on_timer(CLOSE)
    @contained("Stalls")
    def _close(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        latest: Any = beam.DoFn.StateParam(LATEST),
        moves: Any = beam.DoFn.StateParam(MOVES),
        held_summary: Any = beam.DoFn.StateParam(SUMMARY),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        reported: Any = beam.DoFn.StateParam(REPORTED),
        forget: Any = beam.DoFn.TimerParam(FORGET),
        close: Any = beam.DoFn.TimerParam(CLOSE),
    ) -> Iterator[Any]:
        now = int(ts.micros)
        waiting = _held_summaries(held_summary)
        due = [s for t, s in waiting if t <= now]
        rest = tuple(h for h in waiting if h[0] > now)
        if not due:
            return
        seen = reported.read() or set()
        later = [t for d in deadlines_of(pending) for t in self._verdict_times(d, seen, moves) if t > now]
        if later and stalled.read() is None:
            # Closed (open: end of input, or evicted) before a deadline passed that may still make it a stall
            # (the stream lets through only deadlines before the end of its input): the summary waits for it.
            close.set(Timestamp(micros=min(later)))
            return
        if rest:
            held_summary.write(rest)
            close.set(Timestamp(micros=rest[0][0]))
        else:
            held_summary.clear()
        yield from self._declare(now, moves, pending, stalled, reported)
        mark: StallMark | None = stalled.read()
        for summary in due:
            # Only the trace the stall was declared in is stalled (the progress it stalled at is within it): a
            # later trace of the file began after it, an earlier one ended before it.
            if mark is not None and (parse_rfc3339_us(summary.first_time) <= mark.last_t_us
                                     <= parse_rfc3339_us(summary.last_time)):
                beyond = first_beyond(mark, summary.stages, self._rules)
                if beyond is not None:
                    yield from arrival(stalled, summary.uid, *beyond)
                summary = replace(summary, status="stalled")
            yield beam.pvalue.TaggedOutput(STALLED_SUMMARIES, summary)
        pending.clear()
        closed.write(1)
        # Keep the closed mark for as long as a deadline can still be on its way (an interval, and the
        # trace TTL for good measure), then forget the file.
        forget.set(Timestamp(micros=max(int(ts.micros), latest.read() or 0) + self._rules.ttl_us))

    @on_timer(FORGET)
    @contained("Stalls")
    def _forget(
        self,
        latest: Any = beam.DoFn.StateParam(LATEST),
        moves: Any = beam.DoFn.StateParam(MOVES),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
        closed: Any = beam.DoFn.StateParam(CLOSED),
        reported: Any = beam.DoFn.StateParam(REPORTED),
        held: Any = beam.DoFn.StateParam(HELD),
        next_release: Any = beam.DoFn.StateParam(NEXT_RELEASE),
        ts: Any = beam.DoFn.TimestampParam,
    ) -> Iterator[Any]:
        # Held anomalies were mostly released long before: this fires a TTL after the file's last event. Not
        # when the watermark jumped past both (a finite input's end): timers due together may fire in any
        # order, and an early verdict judged after the file closed (``core.early``) is still held.
        yield from self._pass(int(ts.micros), stalled, reported, held)
        for state in (latest, moves, pending, stalled, closed, reported, held, next_release):
            state.clear()

    @on_timer(FIRE)
    @contained("Stalls")
    def _fire(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        moves: Any = beam.DoFn.StateParam(MOVES),
        pending: Any = beam.DoFn.StateParam(PENDING),
        stalled: Any = beam.DoFn.StateParam(STALLED),
        reported: Any = beam.DoFn.StateParam(REPORTED),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        yield from self._declare(int(ts.micros), moves, pending, stalled, reported, fire)

    def _moves_beyond(self, deadline: Deadline, moves: Any) -> list[tuple[int, str]]:
        """(time, stage) of the file's moves past the stage its deadline was set at, earliest first (a stage
        before it, logged late, is not a move)."""
        beyond, index = self._rules.index[deadline.progress.last_stage], self._rules.index
        return sorted(m for m in (moves.read() or ()) if index.get(m[1], -1) > beyond)

    def _stall_at(self, deadline: Deadline) -> int | None:
        """When the deadline makes its file stalled: not past a finite input's end (the backtest stops there)."""
        at = deadline.deadline_us
        return at if self._end_us is None or at <= self._end_us else None

    def _overdue_at(self, deadline: Deadline, seen: set[tuple[str, str]]) -> int | None:
        """When the file, still without a move, is flagged slow in the awaited stage; None once that stage was
        reported slow (by this or by its judged wait), or past a finite input's end."""
        at = anomalies.overdue_at(deadline.progress.last_t_us, deadline.stall, self._rules.ttl_us)
        if at is None or (SLOW_STAGE, self._rules.names[deadline.stall.next_i]) in seen:
            return None
        return at if self._end_us is None or at <= self._end_us else None

    def _verdict_times(self, deadline: Deadline, seen: set[tuple[str, str]], moves: Any = None) -> list[int]:
        """The times a deadline may still say something (in progress, stalled); none that the file's moves
        (when given) already answered."""
        times = [t for t in (self._overdue_at(deadline, seen), self._stall_at(deadline)) if t is not None]
        if moves is None:
            return times
        later = self._moves_beyond(deadline, moves)
        return [t for t in times if not (later and later[0][0] <= t)]

    def _set_fire(self, fire: Any, waiting: tuple[Deadline, ...], seen: set[tuple[str, str]],
                  after: int | None = None) -> None:
        """The timer at the next verdict time of the deadlines waiting (after ``after``: what is due by then
        was just said)."""
        times = [t for d in waiting for t in self._verdict_times(d, seen) if after is None or t > after]
        if times:
            fire.set(Timestamp(micros=min(times)))

    def _flag_in_progress(self, now: int, waiting: tuple[Deadline, ...], moves: Any, reported: Any) -> Iterator[Any]:
        """As the backtest's trace: a file with no move by the awaited stage's line is flagged slow there, once
        per stage; earliest first."""
        seen: set[tuple[str, str]] = reported.read() or set()
        timed = sorted(((at, d) for d in waiting if (at := self._overdue_at(d, seen)) is not None and at <= now),
                       key=lambda pair: pair[0])  # (the deadlines themselves do not compare: a tenant may be None)
        flagged = False
        for at, deadline in timed:
            stage = self._rules.names[deadline.stall.next_i]
            later = self._moves_beyond(deadline, moves)
            if (SLOW_STAGE, stage) in seen or (later and later[0][0] <= at):
                continue
            progress = deadline.progress
            seen.add((SLOW_STAGE, stage))
            flagged = True
            # As of the moment it crossed the line, whichever timer of the file's fired first past it.
            yield anomalies.overdue(progress.file, stage, progress.last_stage, deadline.stall, at)
        if flagged:
            reported.write(seen)

    def _declare(
        self, now: int, moves: Any, pending: Any, stalled: Any, reported: Any, fire: Any = None
    ) -> Iterator[Any]:
        """Files past the awaited stage's line are flagged slow, still in it (``_flag_in_progress``); then the
        stall of the earliest deadline due by ``now`` that the file did not move on by (as the backtest: a
        deadline passes, with no move since the progress it was set at), with its arrival when the file has
        already been seen beyond it. Deadlines with nothing left to say are dropped; ``fire`` is set for the
        next verdict still waiting."""
        waiting = deadlines_of(pending)
        if not waiting or stalled.read() is not None:
            return
        yield from self._flag_in_progress(now, waiting, moves, reported)
        due = sorted((d for d in waiting if (at := self._stall_at(d)) is not None and at <= now),
                     key=lambda d: d.deadline_us)
        seen = reported.read() or set()
        rest = tuple(d for d in waiting if any(t > now for t in self._verdict_times(d, seen)))
        for deadline in due:
            later = self._moves_beyond(deadline, moves)
            if later and later[0][0] <= deadline.deadline_us:
                continue  # the file moved on in time
            progress = deadline.progress
            anomaly = anomalies.stalled(progress.file, self._rules.names[deadline.stall.next_i],
                                        progress.last_stage, progress.last_t_us, deadline.deadline_us,
                                        deadline.stall, now)
            stalled.write(StallMark(anomaly.anomaly_id, progress.last_t_us, deadline.stall.next_i, now,
                                     deadline_us=deadline.deadline_us))
            pending.clear()
            yield anomaly
            if later:  # it moved on after its deadline, before this step heard of the deadline
                t_us, stage = later[0]
                yield from arrival(stalled, progress.file.uid, stage, t_us)
            return
        pending.write(rest)
        if fire is not None:
            self._set_fire(fire, rest, seen, now)


def _held_summaries(held_summary: Any) -> tuple[tuple[int, TraceSummary], ...]:
    """The summaries waiting, earliest first. (A job updated in place may hold one bare summary, from before
    several were kept: due at once.)"""
    held = held_summary.read()
    if held is None:
        return ()
    if isinstance(held, TraceSummary):
        return ((0, held),)
    return tuple(held)


def _uid_of(record: Progress | Deadline | TraceSummary | Anomaly | Straggler) -> str:
    if isinstance(record, Progress):
        return record.file.uid
    if isinstance(record, Deadline):
        return record.progress.file.uid
    return record.uid


class WatchStalls(ContainedStep):
    """(progress, deadlines, summaries, judged anomalies) → anomalies (main: stalls, and the judged ones, one
    per kind and stage of a file), final summaries (``STALLED_SUMMARIES``) and ``ARRIVALS``."""

    def __init__(self, rules: TraceRules, end_us: int | None = None) -> None:
        super().__init__()
        self._rules = rules
        self._end_us = end_us

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
        return self.pardo(merged, "WatchPerUid", _WatchFn(self._rules, self._end_us),
                          outputs=(STALLED_SUMMARIES, ARRIVALS), main="stalls")
