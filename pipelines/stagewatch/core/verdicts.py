"""Verdicts: a trace's measurements judged against the baselines, and what is learned from them.

``Judge`` is the in-process ``Judging`` of the backtest: it judges each measurement the moment the trace makes
it, against the snapshot of the current interval, then learns it. The streaming job makes the same calls from
a step that sees the measurements of one interval together with that interval's snapshots
(``docs/streaming.md``); ``judge_measurement`` and ``stall_deadline`` are the pieces both share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from stagewatch.core import anomalies
from stagewatch.core.baselines import END_TO_END, BaselineKey, BaselineStore, Snapshot
from stagewatch.core.early import EarlyKey, EarlyView, early_snapshots, early_ticks_after
from stagewatch.core.evidence import contributors
from stagewatch.core.interval_counts import bin_counts
from stagewatch.core.judged_by import judge, lookup, seen_n
from stagewatch.core.measurements import FileRef, Measurement, Part, StallInfo
from stagewatch.core.outbox import Outbox
from stagewatch.core.records import Anomaly
from stagewatch.core.timeutil import US_PER_MS
from stagewatch.core.traces import Trace, TraceRules

__all__ = ["RARE_OPTIONAL", "STALL_MIN_LINES", "STALL_WITHIN_TTL", "Judge", "baseline_stage", "deferred_snapshot",
           "defers", "judge_measurement", "lookup_at", "stall_deadline"]


def baseline_stage(m: Measurement, rules: TraceRules) -> str:
    """The baseline a measurement is judged and learned under. A wait across skipped optional stages has its
    path's: while that is cold, the wait is not judged (its files are still flagged in the stage and stalled by
    the stage's other paths' lines: ``stall_deadline``). Judged by another path's line meanwhile, zoo 10018's
    skewed customers were paged 60 times in two hours."""
    if m.measure == "end_to_end":
        return END_TO_END
    if m.measure == "latency":
        return rules.latency_names[m.stage_i]
    return rules.wait_name(m.after_i, m.stage_i)


Lookup = Callable[[str], tuple[Snapshot | None, bool]]  # the snapshot judging a baseline, for one file
Deferred = tuple[Trace, str | None, Measurement, int]  # waiting for a snapshot: (.., last stage, .., ``Judge.clock``)
NEVER = 1 << 62  # µs: no early tick due
RARE_OPTIONAL = 0.01  # an optional stage seen less often than this, next to the stage after it, is rare
STALL_WITHIN_TTL = 0.9  # a stall deadline is at most this share of the session gap after the file's last stage
STALL_MIN_LINES = 2.0  # ... unless that is less than this many times the awaited stage's line


def judge_measurement(
    file: FileRef, last_stage: str | None, m: Measurement, snap: Snapshot | None, by_tenant: bool, rules: TraceRules,
    now: int, parts: tuple[Part, ...] = (), lookup: Lookup | None = None,
) -> tuple[str, Anomaly | None]:
    """(verdict, anomaly or None) for one measurement of ``file`` against the snapshot that judges it. A slow
    end to end names the stages that added most (``parts``: the file's stage measurements, set against the
    snapshots ``lookup`` gives at the same moment)."""
    if snap is None:
        return "warmup", None
    if m.value_ms <= snap.threshold_ms:
        return "ok", None
    if m.measure != "end_to_end":
        return "slow", anomalies.slow(file, rules.names[m.stage_i], last_stage, m, snap, by_tenant, now,
                                      since=_since(m, rules))
    named = contributors(parts, lookup, rules) if lookup is not None else ()
    return "slow", anomalies.slow(file, END_TO_END, last_stage, m, snap, by_tenant, now, named)


def _since(m: Measurement, rules: TraceRules) -> str:
    """"since a, b skipped" for a wait judged by the baseline of its path across skipped optional stages."""
    if m.measure != "wait" or (m.after_i, m.stage_i) not in rules.skip_names:
        return ""
    skipped = ", ".join(rules.names[m.after_i + 1:m.stage_i])  # at most MAX_SKIPPED of them
    return f"since {rules.names[m.after_i]}, {skipped} skipped"


def stall_deadline(
    from_i: int, next_i: int, last_t: int, lookup: Lookup, rules: TraceRules, seen: Callable[[str], float]
) -> tuple[int, StallInfo] | None:
    """When stage ``next_i`` is overdue for a file whose furthest stage ``from_i`` was logged at ``last_t``:
    ``stall_factor`` x the stage's own alert line (at least ``min_stall_s``) -- a fast stage stalls in seconds, a
    slow one in minutes -- plus the same allowance for each optional stage in between, which the file may still
    go through first; the awaited stage's line alone is when it is flagged slow while still waiting
    (``StallInfo.line_ms``; none with an optional stage in between, which it may be in). ``lookup``: the
    snapshot judging a stage for this file; ``seen``: a stage's decayed sample count, stage-wide. None while
    one of these baselines is cold -- with one exception.

    A cold optional stage seen less than ``RARE_OPTIONAL`` as often as the awaited one adds nothing: it is too
    rare to have a baseline, or one a single log line named (the order inferred from the data takes such a
    stage in as optional; the fuzz test drew one, and it left every file after it without a deadline: 22 stalls
    unreported). A common one still warming up holds the deadline back: calling its files stalled would close
    them before it learned anything from them, and it would never warm up (725 false stalls in the test)."""
    # The awaited stage's waits have a baseline per path: from the stage before it, and across skipped optional
    # stages (``TraceRules.skip_names``) -- which may be longer (zoo 10018: a skewed clock on the stage before
    # the skipped one's service). The longest line of the file's warm ones; else of the stage's other warm ones
    # (an optional stage almost every file skips leaves the stage's own cold).
    keys = rules.wait_keys[next_i]
    mine = keys if len(keys) == 1 else [rules.keys[next_i], *(
        rules.skip_names[(j, next_i)] for j in range(from_i, next_i - 1) if (j, next_i) in rules.skip_names)]
    snap, by_tenant = None, False
    for group in (mine, keys):
        for key in group:
            found, own = lookup(key)
            if found is not None and (snap is None or found.threshold_ms > snap.threshold_ms):
                snap, by_tenant = found, own
        if snap is not None:
            break
    if snap is None:
        return None
    allowed_ms = max(rules.stall_factor * snap.threshold_ms, rules.min_stall_ms)
    median_ms, line_ms = snap.median_ms, snap.threshold_ms
    path_ms = line_ms  # the lines of every stage the file may still be in, the awaited one's and between
    between = False
    for i in range(from_i + 1, next_i):
        optional, _ = lookup(rules.keys[i])
        if optional is None:
            if seen(rules.keys[i]) < RARE_OPTIONAL * sum(map(seen, keys)):  # the awaited stage's, all paths
                continue
            return None
        allowed_ms += rules.stall_factor * optional.threshold_ms
        path_ms += optional.threshold_ms
        median_ms += optional.median_ms
        between = True
    # Never later than most of the session gap after the stage the file reached: a file silent that long is
    # stalled, not let go as open in silence when its trace times out (a stage taking minutes has a deadline
    # of hours). The last tenth keeps the stall before the session's end in the streaming job's timers too.
    # Only while that is still twice the lines of the stages it may be in (and min_stall_s): a stage whose
    # line is half the gap would have its normal files stalled (a 40-minute stage: 101 of them in a review's
    # test; a 40-minute optional stage before a 1 s one: 37).
    cap_ms = STALL_WITHIN_TTL * rules.ttl_us / US_PER_MS
    if cap_ms >= max(STALL_MIN_LINES * path_ms, rules.min_stall_ms):
        allowed_ms = min(allowed_ms, cap_ms)
    # Past the line of the awaited stage, a file is flagged slow *there*: with an optional stage in between it
    # may be in that one instead, and the verdict would name the wrong stage -- none then (its stall still comes).
    return last_t + int(allowed_ms * US_PER_MS), StallInfo(next_i, median_ms, allowed_ms, int(snap.n), by_tenant,
                                                           None if between else line_ms)


def defers(snaps: Mapping[BaselineKey, Snapshot], stage: str) -> bool:
    """Whether a measurement its snapshot cannot judge is judged again at the next one: only in a stage's first
    interval (no snapshot of it at all yet -- a job's start, a new stage). The streaming job's second pass
    holds its output watermark until the next snapshot comes, a fold's grace past the interval's end; in every
    interval, for a stage too rare to warm up, that would delay every incident by as much."""
    return (stage, None) not in snaps


def deferred_snapshot(
    snaps: Mapping[BaselineKey, Snapshot], step: int, stage: str, tenant: str | None, chronic_n: float,
    base: str | None = None,
) -> tuple[Snapshot | None, bool]:
    """What judges a measurement made while its baseline was cold, at the next snapshot: as ``judge``, except
    that a customer's file is judged only by the customer's own baseline. The stage-wide one is young then
    too, and learned from little else than what it judges; a customer whose normal is its own (a slow
    network, a skewed clock) is only told apart by its own key (a simulated day: its first minutes' waits,
    judged by a 36-sample stage-wide line, opened an incident on that customer's normal)."""
    if tenant is not None:
        own = snaps.get((stage, tenant))
        if own is None or own.warm_until < step:
            return None, False
    return judge(snaps, step, stage, tenant, chronic_n, base)


def lookup_at(
    snaps: Mapping[BaselineKey, Snapshot], step: int, tenant: str | None, chronic_n: float, rules: TraceRules
) -> Lookup:
    """The snapshot judging each baseline for a file of ``tenant`` in interval ``step``."""
    path_stage = rules.path_stage
    return lambda stage: judge(snaps, step, stage, tenant, chronic_n, path_stage.get(stage))


class Judge:
    """Immediate verdicts for the in-process driver: judge against the current snapshot, then learn.

    Within an interval the snapshots do not change, so what a (measure, stage, tenant) is judged by and the
    list it is learned into are looked up once per interval (the store's ``epoch``) and kept: a measurement
    then costs a dictionary lookup, a comparison and an append. The backtest makes two per event.
    """

    def __init__(self, rules: TraceRules, base: BaselineStore) -> None:
        self.rules = rules
        self.base = base
        self._epoch = -1
        self._judged_by: dict[tuple[str, int, int, str | None],
                              tuple[Snapshot | None, bool, list[float], str]] = {}
        self._deadlines: dict[tuple[int, int, str | None], tuple[int, StallInfo] | None] = {}
        # What was measured while its baseline was cold, in the interval ``_deferred_step``: judged once more
        # at the first early tick that can (``judge_early``), else against the next interval's snapshots
        # (``judge_deferred``).
        self._deferred: list[Deferred] = []
        self._deferred_step = -1
        self.early: dict[EarlyKey, Snapshot] = {}
        self.next_early_us = NEVER  # the next early tick boundary with something waiting (drivers test it inline)
        # The event time of the event or timer being processed, set by the driver: the moment a measurement is
        # made in the streaming job's terms (``Measured.now_us``), which places it among the early ticks.
        self.clock = -1
        # id of a stalled trace -> (the trace, its stall deadline) (``stalled``). The trace is kept while its id is:
        # once let go, a new trace could be given the same id, and its waiting measurements not be judged.
        self.stalls: dict[int, tuple[Trace, int]] = {}

    def _renew(self) -> None:
        self._epoch = self.base.epoch
        self._judged_by.clear()
        self._deadlines.clear()

    def measure(self, trace: Trace, m: Measurement, now: int, out: Outbox) -> str:
        if self.base.epoch != self._epoch:
            self._renew()
        key = (m.measure, m.stage_i, m.after_i, trace.tenant)
        entry = self._judged_by.get(key)
        if entry is None:
            stage = baseline_stage(m, self.rules)
            snap, by_tenant = lookup(self.base, stage, trace.tenant, self.rules.path_stage.get(stage))
            entry = self._judged_by[key] = (snap, by_tenant, self.base.learning(stage, trace.tenant), stage)
        snap, by_tenant, learning, stage = entry
        learning.append(m.value_ms)  # learned as of the interval's end: after every verdict made in it
        if snap is None:
            if defers(self.base.snaps, stage):
                self._deferred_step = self.base.step
                self._deferred.append((trace, trace.last_stage(self.rules), m, self.clock))
                self.next_early_us = min(self.next_early_us, next(early_ticks_after(self.clock, self.base.cfg), NEVER))
            elif m.measure == "wait":
                out.count("verdicts_warmup")
            return "warmup"
        if m.value_ms <= snap.threshold_ms:
            return "ok"
        if m.measure == "end_to_end":
            tenant = trace.tenant
            verdict, anomaly = judge_measurement(trace.ref(), trace.last_stage(self.rules), m, snap, by_tenant,
                                                 self.rules, now, trace.parts(),
                                                 self._lookup(tenant))
        else:
            verdict, anomaly = judge_measurement(trace.ref(), trace.last_stage(self.rules), m, snap, by_tenant,
                                                 self.rules, now)
        # One slow_stage per stage, whichever measure (wait or reported latency) saw it first.
        if anomaly is not None and (m.stage_i < 0 or not (trace.slow >> m.stage_i) & 1):
            if m.stage_i >= 0:
                trace.slow |= 1 << m.stage_i
            out.anomalies.append(anomaly)
        return verdict

    def judge_deferred(self, out: Outbox) -> None:
        """After a fold: what was measured while its baseline was cold, in the interval before, and no early
        snapshot judged (``judge_early``), judged against the snapshots of the interval after the one it was
        made in, as of that interval's start -- once: a key cold in that one too leaves them unjudged, as the
        streaming job's second judging pass does. Call it whenever the store moved on (``Detector``)."""
        if not self._deferred or self.base.step <= self._deferred_step:
            return
        deferred, self._deferred = self._deferred, []
        self.early.clear()
        self.next_early_us = NEVER
        step = self._deferred_step + 1
        now = step * self.base.cfg.interval_us
        for item in deferred:
            if not self._judge_later(item, self.base.snaps, step, now, out) and item[2].measure == "wait":
                out.count("verdicts_warmup")
        self.stalls.clear()

    def judge_early(self, t_us: int, out: Outbox) -> None:
        """At each early tick boundary up to ``t_us`` (``core.early``) while measurements wait: the early snapshots
        of every stage in its first interval, and the waiting measurements the tick's snapshots can judge, judged
        as of it. Call it before an event or a timer at ``t_us`` is processed, once ``t_us`` reaches
        ``next_early_us``."""
        cfg, base = self.base.cfg, self.base
        while self.next_early_us <= t_us:
            b = self.next_early_us
            # Every stage still in its first interval, as the streaming job's rolls emit them: a slow file's
            # end to end names the stages it spent its time in by their early snapshots.
            heard: dict[str, list[tuple[str | None, float]]] = {}
            for (stage, tenant), values in base.values.items():
                if defers(base.snaps, stage):
                    heard.setdefault(stage, []).extend((tenant, v) for v in values)
            step = self._deferred_step
            self.early = {(key, b): snap for stage, pairs in heard.items()
                          for key, snap in early_snapshots(cfg, stage, step, bin_counts(pairs), b).items()}
            view = EarlyView(base.snaps, self.early, b)
            rest = [item for item in self._deferred
                    if item[3] >= b or not self._judge_later(item, view, self._deferred_step + 1, b, out)]
            self._deferred = rest
            self.next_early_us = next(early_ticks_after(b, cfg), NEVER) if rest else NEVER
            if not rest:
                self.stalls.clear()

    def stalled(self, trace: Trace, deadline: int) -> None:
        """``trace`` was declared stalled at ``deadline``: what it measured and still waits is not judged after
        it (the driver calls this as it closes the trace)."""
        if self._deferred:
            self.stalls[id(trace)] = (trace, deadline)

    def _judge_later(self, item: Deferred, snaps: Mapping[BaselineKey, Snapshot], step: int, now: int,
                     out: Outbox) -> bool:
        """Judge one deferred measurement by ``snaps`` as of ``now`` (in interval ``step``); False when they
        cannot judge it yet. A file declared stalled before ``now`` is not judged, whatever it logged since:
        the streaming job drops what is judged after a file's stall deadline."""
        trace, last_stage, m, _ = item
        stalled = self.stalls.get(id(trace))
        if stalled is not None and stalled[1] < now:
            return True
        rules, chronic_n, tenant = self.rules, self.base.cfg.chronic_n, trace.tenant
        stage = baseline_stage(m, rules)
        snap, by_tenant = deferred_snapshot(snaps, step, stage, tenant, chronic_n, rules.path_stage.get(stage))
        if snap is None:
            return False
        parts = trace.parts() if m.measure == "end_to_end" else ()
        _, anomaly = judge_measurement(trace.ref(), last_stage, m, snap, by_tenant, rules, now, parts,
                                       lookup_at(snaps, step, tenant, chronic_n, rules))
        if anomaly is not None and (m.stage_i < 0 or not (trace.slow >> m.stage_i) & 1):
            if m.stage_i >= 0:
                trace.slow |= 1 << m.stage_i
            out.anomalies.append(anomaly)
        return True

    def drop_deferred(self, out: Outbox) -> None:
        """End of a finite input: what waits for a snapshot that will not come stays unjudged (warm-up)."""
        out.count("verdicts_warmup", sum(1 for item in self._deferred if item[2].measure == "wait"))
        self._deferred = []
        self.early.clear()
        self.stalls.clear()
        self.next_early_us = NEVER

    def _lookup(self, tenant: str | None) -> Lookup:
        """The snapshot judging each baseline for a file of ``tenant`` now."""
        base, path_stage = self.base, self.rules.path_stage
        return lambda stage: lookup(base, stage, tenant, path_stage.get(stage))

    def stall_deadline(self, trace: Trace, next_i: int, last_t: int, now: int) -> tuple[int, StallInfo] | None:
        if self.base.epoch != self._epoch:
            self._renew()
        key = (trace.furthest, next_i, trace.tenant)
        if key in self._deadlines:
            found = self._deadlines[key]
        else:
            tenant = trace.tenant
            # Cached as the allowed wait (a deadline after a stage seen at time 0): the same for every file.
            found = self._deadlines[key] = stall_deadline(
                trace.furthest, next_i, 0, self._lookup(tenant), self.rules,
                lambda stage: seen_n(self.base.snaps, stage))
        return None if found is None else (last_t + found[0], found[1])
