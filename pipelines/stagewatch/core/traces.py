"""One file's journey: the per-UID state machine that turns ordered stage events into measurements.

A ``Trace`` is small and picklable so that the Beam driver can keep one per UID in keyed state; the backtest
keeps them in a dict. Both feed it events in event-time order (``add``) and wake it when the watermark passes
its timer (``on_timer``). It knows nothing of baselines: each wait, reported latency and end-to-end duration
goes to a ``Judging`` (``judge.Judge`` in the backtest), and failures, stalls and summaries to an ``Outbox``.

Durations follow the *stage order*, not arrival: a stage's duration is the time since the event of the stage
before it. When that earlier stage has not been seen yet (clock skew between a customer's host and ours puts
``register`` before ``upload``), the stage is *held* for up to ``hold_s`` of event time: if the earlier stage
turns up, both durations are computed against each other (the inverted gap is clamped to 0 and counted, never
reported as slowness); if not (a lost log line, or a stage some files skip that the order calls required), the
stage is measured from the nearest stage that was seen.

Timeline of a stall (next stage ``download`` after ``enqueue`` at 12:00:00, download's threshold 20 s,
``stall_factor`` 3)::

    12:00:00  enqueue arrives   -> deadline = 12:00:00 + 3 x 20 s = 12:01:00; timer at its line, 12:00:20
    12:00:20  watermark passes  -> on_timer: slow_stage "in_progress", stage=download (once); timer 12:01:00
    12:01:00  watermark passes  -> on_timer: "stalled", stage=download, last_stage=enqueue; trace released
"""

from __future__ import annotations

from typing import Protocol

from stagewatch.core import anomalies
from stagewatch.core.events import StageEvent
from stagewatch.core.measurements import FileRef, Measurement, Part, StallInfo
from stagewatch.core.outbox import Outbox
from stagewatch.core.records import StageTiming, TraceSummary
from stagewatch.core.timeutil import US_PER_MS, format_rfc3339
from stagewatch.core.trace_rules import SESSION_GAP_S, TraceRules

__all__ = ["SESSION_GAP_S", "Judging", "Trace", "TraceRules"]

_MISSING = -2  # predecessor is a required stage not seen yet: hold
_NONE = -1  # no earlier stage at all: this is where the trace starts


# Measurement without NamedTuple's Python-level __new__: two per event, and that __new__ was a tenth of judging.
_measurement = tuple.__new__


class Judging(Protocol):
    """What a trace hands its measurements to. The backtest judges them on the spot (``judge.Judge``); the
    streaming job emits them, to be judged downstream against the baselines of their interval."""

    def measure(self, trace: Trace, m: Measurement, now: int, out: Outbox) -> str:
        """Judge (or pass on) one measurement; returns the stage's verdict: ok, slow, warmup or pending."""
        ...

    def stall_deadline(self, trace: Trace, next_i: int, last_t: int, now: int) -> tuple[int, StallInfo] | None:
        """When the next stage is overdue, and what to say then; None when no baseline can tell yet."""
        ...


class Trace:
    __slots__ = (
        "deadline",
        "durs",
        "first_t",
        "furthest",
        "held",
        "last_t",
        "lot",
        "neg_gaps",
        "reported",
        "slow",
        "stall_info",
        "status",
        "tenant",
        "times",
        "uid",
        "unordered",
        "verdicts",
    )

    def __init__(self, uid: str, n_stages: int) -> None:
        self.uid = uid
        self.tenant: str | None = None
        self.lot: str | None = None
        self.times: list[int | None] = [None] * n_stages
        self.durs: list[float | None] = [None] * n_stages
        self.verdicts: list[str] = [""] * n_stages
        self.held: dict[int, int] | None = None  # stage index -> hold expiry
        self.first_t = 0
        self.last_t = 0
        self.furthest = -1
        self.neg_gaps = 0
        self.deadline: int | None = None  # stall deadline for the next stage
        self.stall_info: StallInfo | None = None  # what that stall would say
        self.unordered: list[tuple[str, int]] | None = None  # events of stages outside the order
        self.reported: list[float | None] | None = None  # latencies the log lines reported, by stage
        self.status = "open"  # set when the trace closes: complete, stalled, failed or open (evicted / end)
        self.slow = 0  # bit i set: stage i already reported slow (by its wait or its reported latency)

    # -- driving ---------------------------------------------------------------------------------------

    def add(self, ev: StageEvent, rules: TraceRules, judging: Judging, now: int, out: Outbox) -> bool:
        """Take one event (in event-time order). Returns True when the trace closed."""
        _, stage, t, tenant, lot, _, failed, reported = ev  # one unpack: cheaper than eight attribute loads
        if self.last_t == 0:
            self.first_t = self.last_t = t
        else:
            if t < self.first_t:
                self.first_t = t
            if t > self.last_t:
                self.last_t = t
        if self.tenant is None:
            self.tenant = tenant
        if self.lot is None:
            self.lot = lot
        i = rules.index.get(stage)
        if i is None:
            if self.unordered is None:
                self.unordered = []
            self.unordered.append((stage, t))
            out.count("unknown_stage")
            return False
        times = self.times
        if times[i] is not None:
            out.count("repeated_stage")
            return False
        times[i] = t
        if i > self.furthest:
            self.furthest = i
        if failed:
            return self._fail(i, ev, rules, now, out)
        if reported is not None:
            if self.reported is None:
                self.reported = [None] * len(times)
            self.reported[i] = reported
            # The latency the log line itself reports (an RPC's own time) is judged on its own baseline.
            judging.measure(self, _measurement(Measurement, ("latency", i, reported, t, -1)), now, out)
        # The usual case, inlined: the stage before this one is already there.
        j = i - 1 if i and times[i - 1] is not None else self._pred(i, rules, strict=True)
        if j == _MISSING:
            if self.held is None:
                self.held = {}
            self.held[i] = t + rules.hold_us
        else:
            self._measure(i, j, rules, judging, now, out)
        if self.held:
            self._release_held(rules, judging, now, out, expire_before=None)
        return self._after_change(rules, judging, now, out)

    def next_timer(self, rules: TraceRules) -> int:
        """The earliest event time at which this trace needs waking."""
        t = self.last_t + rules.ttl_us
        if self.deadline is not None and self.deadline < t:
            t = self.deadline
        at = self._overdue_at(rules)
        if at is not None and at < t:
            t = at
        if self.held:
            t = min(t, min(self.held.values()))
        return t

    def on_timer(self, rules: TraceRules, judging: Judging, now: int, out: Outbox, due: int | None = None) -> bool:
        """The watermark reached ``now``: expire holds, flag the file slow in its stage, declare a stall, or evict.
        True when closed. ``due``: the time of the timer that woke it, when the driver knows it -- only what is
        due by then is done: the watermark may be past events of this file still to be handed over (the
        backtest's engine fires a timer before each later event, with the watermark of the whole release)."""
        by = now if due is None else due
        if self.held:
            self._release_held(rules, judging, now, out, expire_before=by)
            if self._after_change(rules, judging, now, out):
                return True
        at = self._overdue_at(rules)
        if at is not None and at <= by:
            # Only this: the stall's deadline has a timer of its own, after the events before it.
            self._flag_in_progress(rules, at, out)
            return False
        if self.deadline is not None and self.deadline <= by and self.stall_info is not None:
            self._stall(rules, now, out)
            return True
        if self.last_t + rules.ttl_us <= by:
            out.count("traces_evicted")
            self._close("open", rules, now, out)
            return True
        return False

    def release(
        self, events: list[StageEvent], now: int, rules: TraceRules, judging: Judging, out: Outbox
    ) -> list[StageEvent] | None:
        """One file's share of the watermark reaching ``now``: its events up to ``now`` (sorted), each after
        any of its timers that falls strictly before it, then its timer if due by ``now`` — the order the
        backtest's ``Detector`` keeps for all files at once. None while the trace stays open; when it closes,
        the events it did not take."""
        for i, ev in enumerate(events):
            wake = self.next_timer(rules)
            if self.last_t and wake < ev.t_us and self.on_timer(rules, judging, wake, out):
                return events[i:]
            if self.add(ev, rules, judging, ev.t_us, out):
                return events[i + 1:]
        if self.last_t and self.next_timer(rules) <= now and self.on_timer(rules, judging, now, out):
            return []
        return None

    def close_open(self, rules: TraceRules, now: int, out: Outbox) -> None:
        """End of a finite input: still in flight, reported open (not stalled)."""
        self._close("open", rules, now, out)

    # -- internals -------------------------------------------------------------------------------------

    def _pred(self, i: int, rules: TraceRules, strict: bool) -> int:
        times, optional = self.times, rules.optional
        for j in range(i - 1, -1, -1):
            if times[j] is not None:
                return j
            if strict and not optional[j]:
                return _MISSING
        return _NONE

    def _measure(self, i: int, j: int, rules: TraceRules, judging: Judging, now: int, out: Outbox) -> None:
        if j == _NONE:
            self.verdicts[i] = "start"
            return
        ti, tj = self.times[i], self.times[j]
        assert ti is not None and tj is not None
        gap = (ti - tj) / US_PER_MS
        if gap < 0:
            # Clock skew between hosts: an inverted pair is not slowness, and not a duration to learn from
            # either (a baseline of zeros would alert on the first honest gap). Clamp, count, move on.
            self.durs[i] = 0.0
            self.verdicts[i] = "skew"
            self.neg_gaps += 1
            out.count("negative_gaps")
            return
        self.durs[i] = gap
        after = j if j < i - 1 and (j, i) in rules.skip_names else -1
        self.verdicts[i] = judging.measure(self, _measurement(Measurement, ("wait", i, gap, ti, after)), now, out)

    def _release_held(
        self, rules: TraceRules, judging: Judging, now: int, out: Outbox, expire_before: int | None
    ) -> None:
        held = self.held
        assert held is not None
        progress = True
        while progress and held:
            progress = False
            for i in sorted(held):
                expired = expire_before is not None and held[i] <= expire_before
                j = self._pred(i, rules, strict=not expired)
                if j != _MISSING:
                    del held[i]
                    self._measure(i, j, rules, judging, now, out)
                    progress = True

    def _after_change(self, rules: TraceRules, judging: Judging, now: int, out: Outbox) -> bool:
        term = rules.terminal_i
        if self.times[term] is not None and not self.held:
            self._complete(rules, judging, now, out)
            return True
        # The stall deadline: the next required stage after the furthest one seen, judged by its own baseline.
        nxt = self.furthest + 1
        while nxt <= term and rules.optional[nxt]:
            nxt += 1
        self.deadline = None
        self.stall_info = None
        if nxt <= term:
            last = self.times[self.furthest]
            assert last is not None
            found = judging.stall_deadline(self, nxt, last, now)
            if found is not None:
                self.deadline, self.stall_info = found
        return False

    def _complete(self, rules: TraceRules, judging: Judging, now: int, out: Outbox) -> None:
        t_term = self.times[rules.terminal_i]
        assert t_term is not None
        e2e = (t_term - self.first_t) / US_PER_MS
        judging.measure(self, Measurement("end_to_end", -1, e2e, t_term), now, out)
        self._close("complete", rules, now, out, e2e)

    def _fail(self, i: int, ev: StageEvent, rules: TraceRules, now: int, out: Outbox) -> bool:
        j = self._pred(i, rules, strict=False)
        observed = None
        if j >= 0:
            tj = self.times[j]
            assert tj is not None
            observed = max(0.0, (ev.t_us - tj) / US_PER_MS)
            self.durs[i] = observed
        self.verdicts[i] = "failed"
        last = rules.names[j] if j >= 0 else None
        out.anomalies.append(anomalies.failed(self.ref(), rules.names[i], last, ev.t_us, observed, now))
        self._close("failed", rules, now, out)
        return True

    def ref(self) -> FileRef:
        return FileRef(self.uid, self.tenant, self.lot)

    def parts(self) -> tuple[Part, ...]:
        """What each stage took, as measured: its wait (not a clamped negative gap) and the latency its log
        line reported -- what an end-to-end verdict sets against the stages' baselines (``core.evidence``)."""
        verdicts = self.verdicts
        if None not in self.times:  # the usual case: every wait from the stage before it
            waits: list[Part] = [("wait", i, d, -1) for i, d in enumerate(self.durs)
                                 if d is not None and verdicts[i] != "skew"]
        else:
            waits, last = [], -1  # last: the nearest stage before i the file logged, its wait's start
            for i, (d, t) in enumerate(zip(self.durs, self.times, strict=True)):
                if d is not None and verdicts[i] != "skew":
                    waits.append(("wait", i, d, last if 0 <= last < i - 1 else -1))
                if t is not None:
                    last = i
        if self.reported is None:
            return tuple(waits)
        return (*waits, *(("latency", i, r, -1) for i, r in enumerate(self.reported) if r is not None))

    def last_stage(self, rules: TraceRules) -> str | None:
        """The furthest stage this file reached."""
        return rules.names[self.furthest] if self.furthest >= 0 else None

    def _overdue_at(self, rules: TraceRules) -> int | None:
        """When the awaited stage is past its line with nothing logged since the furthest stage: the file is
        flagged slow then, still in it -- once (the stage's ``slow`` bit), and its finished wait, judged later,
        pages nothing more. None without a deadline, once flagged, or past the trace's time to live after
        that stage (``anomalies.overdue_at``: the same bound in the streaming job)."""
        info = self.stall_info
        if info is None or self.deadline is None or (self.slow >> info.next_i) & 1:
            return None
        last = self.times[self.furthest]
        assert last is not None
        return anomalies.overdue_at(last, info, rules.ttl_us)

    def _flag_in_progress(self, rules: TraceRules, at: int, out: Outbox) -> None:
        """Made as of ``at``, the moment it crossed the line (both drivers: the streaming job's timers for one
        file may fire in any order once the watermark has passed them)."""
        info = self.stall_info
        assert info is not None
        self.slow |= 1 << info.next_i
        out.anomalies.append(anomalies.overdue(self.ref(), rules.names[info.next_i], rules.names[self.furthest], info,
                                               at))

    def _stall(self, rules: TraceRules, now: int, out: Outbox) -> None:
        assert self.stall_info is not None and self.deadline is not None
        last_t = self.times[self.furthest]
        assert last_t is not None
        out.anomalies.append(anomalies.stalled(
            self.ref(), rules.names[self.stall_info.next_i], rules.names[self.furthest], last_t, self.deadline,
            self.stall_info, now))
        self._close("stalled", rules, now, out)

    def _close(self, status: str, rules: TraceRules, now: int, out: Outbox, e2e: float | None = None) -> None:
        self.status = status
        out.count("traces_" + status)
        if out.summaries is None:
            return
        reported = self.reported
        verdicts, slow = self.verdicts, self.slow
        # A wait that came out negative stays "skew" when the stage's reported latency paged (that page is in the
        # anomalies): the wait was a clock's error, and the streaming job's summary says "skew" there too.
        stages = [StageTiming(rules.names[i], format_rfc3339(t), self.durs[i],
                              reported[i] if reported is not None else None,
                              "slow" if (slow >> i) & 1 and verdicts[i] != "skew" else verdicts[i] or "held")
                  for i, t in enumerate(self.times) if t is not None]
        stages += [StageTiming(name, format_rfc3339(t), None, None, "unordered") for name, t in self.unordered or ()]
        stages.sort(key=lambda s: s.time)
        missing = tuple(rules.names[i] for i in range(self.furthest) if self.times[i] is None and not rules.optional[i])
        out.summaries.append(TraceSummary(
            uid=self.uid, tenant=self.tenant, lot=self.lot, status=status, first_time=format_rfc3339(self.first_t),
            last_time=format_rfc3339(self.last_t), end_to_end_ms=e2e, stages=tuple(stages), missing_stages=missing,
            negative_gaps=self.neg_gaps, closed_at=format_rfc3339(now)))
