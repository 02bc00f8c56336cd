"""The in-process engine: dedup, event-time ordering behind a watermark, timers, traces and baselines.

This is what the backtest drives (``replay``) and what the streaming job reproduces with Beam primitives:
Beam's watermark replaces ``_release``; Beam's keyed state and event-time timers replace the dicts and the
timer heap here; the baselines become a combine per interval shared as a side input. The per-UID logic is
``Trace`` in both.

Watermark: ``max event time seen - allowed_lateness``. Events are buffered and released in event-time order
as the watermark passes them; an event older than the watermark when it arrives is *late* (dead-lettered
with that reason). Timers (stall deadlines, skew holds, TTL) fire when the watermark passes them; before an
event at time ``t`` is processed, every timer earlier than ``t`` has fired.

The end of a finite input is not the passage of time: ``finish`` releases what is buffered, fires timers only
up to the last event time actually seen, and reports files still in flight as ``open``.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from operator import itemgetter

from stagewatch.baselines import BaselineConfig, BaselineStore
from stagewatch.events import StageEvent
from stagewatch.judge import Judge
from stagewatch.timeutil import US_PER_S
from stagewatch.traces import Outbox, Trace, TraceRules

__all__ = ["Detector", "DetectorConfig"]

_event_time = itemgetter(2)  # StageEvent.t_us, as a C-level key function
# Release buffered events in batches: a sort of a nearly sorted list is cheaper than a heap push and pop per
# event, and the order of processing is the same (event time, then arrival).
_RELEASE_EVERY = 512
# ... or when the watermark moved this far: a verdict waits at most this long (event time) for its batch.
_RELEASE_AFTER_US = 5_000_000


@dataclass(frozen=True)
class DetectorConfig:
    allowed_lateness_s: float = 60.0
    dedup_horizon_s: float = 3600.0
    hold_s: float = 30.0
    stall_factor: float = 8.0
    min_stall_s: float = 10.0
    ttl_s: float = 6 * 3600.0
    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def __post_init__(self) -> None:
        if self.allowed_lateness_s < 0:
            raise ValueError("allowed lateness must be >= 0 seconds")
        if self.dedup_horizon_s < self.allowed_lateness_s:
            raise ValueError("the dedup horizon must cover at least the allowed lateness")


class Detector:
    def __init__(self, rules: TraceRules, cfg: DetectorConfig | None = None, keep_summaries: bool = True):
        self.rules = rules
        self.cfg = cfg or DetectorConfig()
        self.base = BaselineStore(self.cfg.baseline)
        self.judge = Judge(rules, self.base)
        self.out = Outbox(keep_summaries)
        self.late: list[StageEvent] = []
        self.traces: dict[str, Trace] = {}
        self.max_seen = -1
        self.watermark = -1
        self._lateness_us = int(self.cfg.allowed_lateness_s * US_PER_S)
        self._buffer: list[StageEvent] = []
        self._release_at = _RELEASE_EVERY
        self._released_wm = -1
        self._timers: list[tuple[int, str]] = []
        self._timer_of: dict[str, int] = {}
        # Dedup: two generations of keys, rotated every horizon of event time: O(1) per event, bounded.
        self._dedup_us = int(self.cfg.dedup_horizon_s * US_PER_S)
        self._seen_now: set[object] = set()
        self._seen_prev: set[object] = set()
        self._gen_end = -1
        # UIDs whose trace closed, remembered for a TTL so their stragglers do not open a new trace.
        self._closed: dict[str, str] = {}
        self._closed_order: deque[tuple[int, str]] = deque()

    # -- input -------------------------------------------------------------------------------------------

    def push(self, ev: StageEvent) -> None:
        t = ev.t_us
        key = ev.insert_id if ev.insert_id is not None else (ev.uid, ev.stage, t)
        if key in self._seen_now or key in self._seen_prev:
            self.out.count("duplicates")
            return
        if t < self.watermark:
            self.out.count("late")
            self.late.append(ev)
            return
        if t > self._gen_end:
            self._rotate_dedup(t)
        self._seen_now.add(key)
        buffer = self._buffer
        buffer.append(ev)
        if t > self.max_seen:
            self.max_seen = t
            wm = t - self._lateness_us
            if wm > self.watermark:
                self.watermark = wm
        if len(buffer) >= self._release_at or self.watermark - self._released_wm >= _RELEASE_AFTER_US:
            self._advance(self.watermark)

    def finish(self) -> None:
        """End of input: process what is buffered, then report the files still in flight as open."""
        if self.max_seen >= 0:
            self._advance(self.max_seen)
        rules, out, wm = self.rules, self.out, self.watermark
        for uid in sorted(self.traces):
            self.traces[uid].close_open(rules, wm, out)
        self.traces.clear()
        self._timers.clear()
        self._timer_of.clear()

    # -- internals ---------------------------------------------------------------------------------------

    def _rotate_dedup(self, t: int) -> None:
        if self._gen_end < 0:
            self._gen_end = t + self._dedup_us
            return
        while t > self._gen_end:
            self._seen_prev = self._seen_now
            self._seen_now = set()
            self._gen_end += self._dedup_us

    def _advance(self, wm: int) -> None:
        """Process buffered events up to ``wm`` in event-time order, timers interleaved, then due timers."""
        self.watermark = self._released_wm = wm
        buffer = self._buffer
        buffer.sort(key=_event_time)
        cut = bisect_right(buffer, wm, key=_event_time)
        if cut:
            self._buffer = buffer[cut:]
            timers = self._timers
            process = self._process
            for ev in buffer[:cut] if cut < len(buffer) else buffer:
                if timers and timers[0][0] < ev.t_us:
                    self._fire_timers(ev.t_us, strict=True)
                process(ev)
        if self._timers and self._timers[0][0] <= wm:
            self._fire_timers(wm, strict=False)
        self._forget_closed(wm)
        # What stays buffered is within the allowed lateness; wait for a batch's worth of new events.
        self._release_at = len(self._buffer) + _RELEASE_EVERY

    def _process(self, ev: StageEvent) -> None:
        base = self.base
        if ev.t_us >= base.next_boundary_us:
            base.advance(ev.t_us)
        uid = ev.uid
        trace = self.traces.get(uid)
        if trace is None:
            closed = self._closed.get(uid)
            if closed is not None:
                self.out.count("after_" + closed)
                if closed == "stalled":  # its first line after the stall: it arrived (once, as in the stream)
                    self.out.arrivals.append((uid, ev.stage, ev.t_us))
                    self._closed[uid] = "stalled_arrived"
                return
            trace = self.traces[uid] = Trace(uid, len(self.rules.names))
        if trace.add(ev, self.rules, self.judge, self.watermark, self.out):
            self._closed_trace(uid, closed_at=ev.t_us, status=trace.status)
        else:
            self._schedule(uid, trace)

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
            self.base.advance(t)
            if trace.on_timer(self.rules, self.judge, self.watermark, self.out):
                self._closed_trace(uid, closed_at=t, status=trace.status)
            else:
                self._schedule(uid, trace)

    def _closed_trace(self, uid: str, closed_at: int, status: str) -> None:
        self.traces.pop(uid, None)
        self._timer_of.pop(uid, None)
        self._closed[uid] = status
        self._closed_order.append((closed_at, uid))

    def _forget_closed(self, wm: int) -> None:
        horizon = wm - self.rules.ttl_us
        order = self._closed_order
        while order and order[0][0] < horizon:
            _, uid = order.popleft()
            self._closed.pop(uid, None)

