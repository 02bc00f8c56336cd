"""The in-process engine: dedup, event-time ordering behind a watermark, timers, traces and baselines.

This is what the backtest drives (``replay``) and what the streaming job reproduces with Beam primitives:
Beam's watermark replaces ``Ingest``; Beam's keyed state and event-time timers replace the dicts and the
timer heap here; the baselines become bin counts in keyed shards, folded per stage and interval and shared
as a side input. The per-UID logic is ``Trace`` in both.

Watermark: ``the 4th newest event time seen - allowed_lateness`` (``core.clock.Pull``: one line ahead of the
rest does not pull it) -- of the event times within the allowed lateness of the front's robust clock
(``cap_lead``). Events are buffered and released in event-time order as the watermark
passes them; an event older than the watermark when it arrives is *late* (dead-lettered with that reason).
Timers (stall deadlines, skew holds, TTL) fire when the watermark passes them; before an event at time ``t``
is processed, every timer earlier than ``t`` has fired.

The end of a finite input is not the passage of time: ``finish`` releases what is buffered, fires timers only
up to the last event time actually seen, and reports files still in flight as ``open``.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.clock import Pull, TimeBounds
from stagewatch.core.dedup import DEDUP_HORIZON_S, REPEAT, TAKEN, FirstSeen
from stagewatch.core.events import StageEvent
from stagewatch.core.measurements import Arrival, Measurement, StallInfo
from stagewatch.core.outbox import Outbox
from stagewatch.core.timeutil import US_PER_S
from stagewatch.core.traces import SESSION_GAP_S, Trace, TraceRules
from stagewatch.core.verdicts import Judge

__all__ = ["Detector", "DetectorConfig", "Ingest"]

_event_time = itemgetter(2)  # StageEvent.t_us, as a C-level key function
# Release buffered events in batches: a sort of a nearly sorted list is cheaper than a heap push and pop per
# event, and the order of processing is the same (event time, then arrival).
_RELEASE_EVERY = 512
# ... or when the watermark moved this far: a verdict waits at most this long (event time) for its batch.
_RELEASE_AFTER_US = 5_000_000


@dataclass(frozen=True)
class DetectorConfig:
    allowed_lateness_s: float = 60.0
    dedup_horizon_s: float = DEDUP_HORIZON_S
    hold_s: float = 30.0
    stall_factor: float = 8.0
    min_stall_s: float = 10.0
    ttl_s: float = SESSION_GAP_S
    max_ahead_s: float = TimeBounds.max_ahead_s  # an event further ahead of the file's clock is ``future``
    max_age_s: float = TimeBounds.max_age_s  # ... further behind it, ``too_old`` (core/clock.py)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        if self.allowed_lateness_s < 0:
            raise ValueError("allowed lateness must be >= 0 seconds")
        if not self.dedup_horizon_s > 0:  # a zero horizon would rotate without end
            raise ValueError("the dedup horizon must be more than 0 seconds")
        if self.dedup_horizon_s < self.allowed_lateness_s:
            raise ValueError("the dedup horizon must cover at least the allowed lateness")
        TimeBounds(self.max_ahead_s, self.max_age_s)  # raises for bounds out of range, now, not at an event

    @property
    def time_bounds(self) -> TimeBounds:
        return TimeBounds(self.max_ahead_s, self.max_age_s)


class Ingest:
    """The order the core sees events in: duplicates counted once, late events set aside, the rest released
    in event-time order behind the watermark, to ``release(events, watermark)``.

    Apart from ``Detector`` so that a backtest can run it beside the parsing, in another process than the
    traces and baselines (``backtest.replay.replay_files``); ``Detector`` wires one to itself.
    """

    def __init__(
        self, cfg: DetectorConfig, release: Callable[[list[StageEvent], int], None], out: Outbox
    ) -> None:
        self.release = release
        self.out = out
        self.late: list[tuple[StageEvent, int]] = []  # (event, the watermark it arrived behind)
        self.max_seen = -1
        self.watermark = -1
        self._lateness_us = int(cfg.allowed_lateness_s * US_PER_S)
        self._buffer: list[StageEvent] = []
        self._release_at = _RELEASE_EVERY
        self._released_wm = -1
        self._lead_cap = 1 << 62  # the newest an event may be and still pull the watermark: see ``cap_lead``
        self._pull = Pull()  # what it follows: not one line's time, a few lines'
        self._pulled = -1  # the time it follows (``Pull.time``, kept here: ``push`` is per event)
        self._dedup = FirstSeen(int(cfg.dedup_horizon_s * US_PER_S))

    def push(self, ev: StageEvent) -> None:
        taken = self._dedup.take(ev, self.watermark)
        if taken != TAKEN:
            if taken == REPEAT:
                self.out.count("duplicates")
            else:
                self.out.count("late")
                self.late.append((ev, self.watermark))
            return
        t = ev.t_us
        buffer = self._buffer
        buffer.append(ev)
        if t > self.max_seen:
            self.max_seen = t
        if self._pulled < t <= self._lead_cap:
            self._pulled = pulled = self._pull.push(t)
            wm = pulled - self._lateness_us
            if wm > self.watermark:
                self.watermark = wm
        if len(buffer) >= self._release_at or self.watermark - self._released_wm >= _RELEASE_AFTER_US:
            self.advance(self.watermark)

    def cap_lead(self, t_us: int) -> None:
        """An event pushed from now on that is newer than ``t_us`` (``backtest.front``: the file's robust clock
        plus the allowed lateness) is processed in its turn but does not pull the watermark: an event a few
        minutes ahead of its neighbours, from a writer whose clock runs fast, must not make the minutes before
        it late for everyone else. Every event of a well-ordered log is within that, and pulls it as ever."""
        self._lead_cap = t_us

    def flush(self) -> None:
        """End of input: release everything buffered, as if the watermark reached the newest event."""
        if self.max_seen >= 0:
            self.advance(self.max_seen)

    def advance(self, wm: int) -> None:
        """Release the buffered events up to ``wm`` (sorted by event time, arrival order among equals)."""
        self.watermark = self._released_wm = wm
        buffer = self._buffer
        buffer.sort(key=_event_time)
        cut = bisect_right(buffer, wm, key=_event_time)
        if cut < len(buffer):
            self._buffer = buffer[cut:]
            buffer = buffer[:cut]
        else:
            self._buffer = []
        self.release(buffer, wm)
        # What stays buffered is within the allowed lateness; wait for a batch's worth of new events.
        self._release_at = len(self._buffer) + _RELEASE_EVERY


class _Unjudged:
    """The ``Judging`` of a stalled file's trace as the streaming job still holds it: nothing is judged after the
    stall, and it has no deadline (the stream's trace has none: stalls are declared downstream)."""

    def measure(self, trace: Trace, m: Measurement, now: int, out: Outbox) -> str:
        return "pending"

    def stall_deadline(self, trace: Trace, next_i: int, last_t: int, now: int) -> tuple[int, StallInfo] | None:
        return None


_UNJUDGED = _Unjudged()


class Detector:
    """Traces, timers and baselines over the events an ``Ingest`` releases; ``push`` and ``finish`` drive
    both for callers that hold the whole stream in one process."""

    def __init__(self, rules: TraceRules, cfg: DetectorConfig | None = None, keep_summaries: bool = True):
        self.rules = rules
        self.cfg = cfg or DetectorConfig()
        self.base = BaselineStore(self.cfg.baseline)
        self.judge = Judge(rules, self.base)
        self.out = Outbox(keep_summaries)
        self.ingest = Ingest(self.cfg, self.release, self.out)
        self.traces: dict[str, Trace] = {}
        self.watermark = -1
        self._timers: list[tuple[int, str]] = []
        self._timer_of: dict[str, int] = {}
        # UIDs whose trace closed, remembered for a TTL so their stragglers do not open a new trace: an event
        # dated before the close + TTL is counted (after_<status>), a later one starts the file's next trace.
        # Decided by the event's time, not by when the mark is forgotten (the stream decides the same way).
        self._closed: dict[str, str] = {}
        self._closed_until: dict[str, int] = {}
        self._closed_order: list[tuple[int, str]] = []  # a heap of (mark's end, uid)
        # A stalled file's trace as the streaming job still holds it (its stall is declared downstream of the
        # trace, which stays open), fed the file's later lines unjudged: the mark lasts a TTL from when that
        # trace closes (complete, failed, or let go a TTL after its last line).
        self._open_after_stall: dict[str, Trace] = {}

    # -- input -------------------------------------------------------------------------------------------

    def push(self, ev: StageEvent) -> None:
        self.ingest.push(ev)

    @property
    def late(self) -> list[tuple[StageEvent, int]]:
        return self.ingest.late

    @property
    def max_seen(self) -> int:
        return self.ingest.max_seen

    def finish(self) -> None:
        """End of input: process what is buffered, then report the files still in flight as open."""
        self.ingest.flush()
        self.close_open()

    def close_open(self) -> None:
        """Report the files still in flight as open (the end of a finite input is not the passage of time)."""
        rules, out, wm = self.rules, self.out, self.watermark
        self.judge.drop_deferred(out)
        for uid in sorted(self.traces):
            self.traces[uid].close_open(rules, wm, out)
        self.traces.clear()
        self._timers.clear()
        self._timer_of.clear()

    def release(self, events: list[StageEvent], wm: int) -> None:
        """Process released events (sorted, all at or before ``wm``) with the timers due between them, then
        the timers due by ``wm``: before an event at ``t`` is processed, every timer earlier than ``t`` fired."""
        self.watermark = wm
        timers, traces, base = self._timers, self.traces, self.base
        rules, judge, out = self.rules, self.judge, self.out
        for ev in events:  # the per-event path, inlined: this loop is most of a backtest's time
            t = ev.t_us
            if timers and timers[0][0] < t:
                self._fire_timers(t, strict=True)
            if t >= judge.next_early_us:
                judge.judge_early(t, out)
            if t >= base.next_boundary_us:
                base.advance(t)
                judge.judge_deferred(out)
            judge.clock = t
            uid = ev.uid
            trace = traces.get(uid)
            if trace is None:
                if uid in self._closed:
                    if self._within_mark(uid, t):
                        self._after_close(uid, ev)
                        continue
                    del self._closed[uid], self._closed_until[uid]  # the mark is over: the file's next trace
                    self._open_after_stall.pop(uid, None)
                trace = traces[uid] = Trace(uid, len(rules.names))
            if trace.add(ev, rules, judge, wm, out):
                self._closed_trace(uid, t, trace)
            else:
                self._schedule(uid, trace)
        if timers and timers[0][0] <= wm:
            self._fire_timers(wm, strict=False)
        self._forget_closed(wm)

    # -- internals ---------------------------------------------------------------------------------------

    def _after_close(self, uid: str, ev: StageEvent) -> None:
        """An event of a file whose trace closed: counted, not judged. A stalled file's first line after its
        stall is its arrival (once, as in the stream) -- within the stream's trace of it, a stage not logged
        before (one logged again moves nothing on there)."""
        closed = self._closed[uid]
        self.out.count("after_" + closed)
        shadow = self._open_after_stall.get(uid)
        i = self.rules.index.get(ev.stage)
        if closed == "stalled" and (shadow is None or i is None or shadow.times[i] is None):
            self.out.arrivals.append(Arrival(uid, ev.stage, ev.t_us))
            self._closed[uid] = "stalled_arrived"
        if shadow is not None:
            said = Outbox(keep_summaries=False)
            closed_now = shadow.add(ev, self.rules, _UNJUDGED, ev.t_us, said)
            # Its failure is reported (nothing else is judged there): the stream's trace of it fails too.
            self.out.anomalies.extend(said.anomalies)
            if closed_now:
                self._end_shadow(uid, ev.t_us)
            else:
                self._mark_until(uid, shadow.last_t + 2 * self.rules.ttl_us)

    def _within_mark(self, uid: str, t: int) -> bool:
        """Whether an event at ``t`` of a closed file is within its mark. A stalled file's trace as the stream
        holds it is first woken for what falls strictly before ``t`` (as ``Trace.release`` does there): a held
        terminal stage completes it, a TTL of silence lets it go -- and the mark ends a TTL after that."""
        shadow = self._open_after_stall.get(uid)
        rules = self.rules
        while shadow is not None and (wake := shadow.next_timer(rules)) < t:
            if shadow.on_timer(rules, _UNJUDGED, wake, Outbox(keep_summaries=False), due=wake):
                self._end_shadow(uid, wake)
            elif shadow.next_timer(rules) == wake:
                break  # (nothing was due after all)
            shadow = self._open_after_stall.get(uid)
        return t < self._closed_until[uid]

    def _end_shadow(self, uid: str, closed_at: int) -> None:
        del self._open_after_stall[uid]
        self._mark_until(uid, closed_at + self.rules.ttl_us)

    def _mark_until(self, uid: str, until: int) -> None:
        self._closed_until[uid] = until
        heapq.heappush(self._closed_order, (until, uid))

    def _schedule(self, uid: str, trace: Trace) -> None:
        # Lazy: a trace's timer mostly moves later with each event. Only an *earlier* timer is pushed now;
        # when an entry comes due early, it is re-pushed at the trace's current timer (see _fire_timers).
        nt = trace.next_timer(self.rules)
        current = self._timer_of.get(uid)
        if current is None or nt < current:
            self._timer_of[uid] = nt
            heapq.heappush(self._timers, (nt, uid))

    def _fire_timers(self, limit: int, strict: bool) -> None:
        timers, timer_of, traces = self._timers, self._timer_of, self.traces
        while timers and (timers[0][0] < limit if strict else timers[0][0] <= limit):
            t, uid = heapq.heappop(timers)
            if timer_of.get(uid) != t:
                continue  # superseded by an earlier schedule
            trace = traces.get(uid)
            if trace is None:
                del timer_of[uid]
                continue
            due = trace.next_timer(self.rules)
            if due > t:  # the trace moved on since this entry was pushed
                timer_of[uid] = due
                heapq.heappush(timers, (due, uid))
                continue
            del timer_of[uid]
            if t >= self.judge.next_early_us:
                self.judge.judge_early(t, self.out)
            if t >= self.base.next_boundary_us:
                self.base.advance(t)
                self.judge.judge_deferred(self.out)
            self.judge.clock = t
            if trace.on_timer(self.rules, self.judge, self.watermark, self.out, due=t):
                self._closed_trace(uid, t, trace)
            else:
                self._schedule(uid, trace)

    def _closed_trace(self, uid: str, closed_at: int, trace: Trace) -> None:
        self.traces.pop(uid, None)
        self._timer_of.pop(uid, None)
        self._closed[uid] = trace.status
        self._open_after_stall.pop(uid, None)
        if trace.status == "stalled":  # the stream's trace of it is still open: let go a TTL after its last line
            if trace.deadline is not None:
                self.judge.stalled(trace, trace.deadline)
            trace.deadline = trace.stall_info = None  # (it has none there: stalls are declared downstream)
            self._open_after_stall[uid] = trace
            self._mark_until(uid, trace.last_t + 2 * self.rules.ttl_us)
        else:
            self._mark_until(uid, closed_at + self.rules.ttl_us)

    def _forget_closed(self, wm: int) -> None:
        order = self._closed_order
        while order and order[0][0] < wm:
            until, uid = heapq.heappop(order)
            # Unless the mark moved since (a stalled file's later line, or a later trace of the file closed):
            # that is another entry.
            if self._closed_until.get(uid) == until:
                del self._closed[uid], self._closed_until[uid]
                self._open_after_stall.pop(uid, None)

