"""``JudgeMeasurements``: each measurement judged against the snapshots of its own interval.

Measurements and snapshots are both windowed by interval; the snapshots are a side input. Beam holds a
main-input element of window *k* until the side input for *k* is ready (checked on the DirectRunner in
streaming), so a verdict is made against exactly the snapshot the backtest would use, whatever the arrival
order — at the price of waiting for the end of the previous interval.

A stage's wait and its reported latency may both cross their lines: they make the same anomaly id; the
per-file step downstream (``WatchStalls``) passes the one the backtest judged first.

A measurement made in its stage's first interval (no snapshot of the stage yet) is judged by the first of the
stage's early snapshots after it that can (``core.early``; the roll sends them into this interval's side
input, keyed by their tick), as of that tick; else once more, against the next interval's snapshots, as of
that interval's start (``JudgeDeferred``; the backtest's ``Judge.judge_early`` and ``Judge.judge_deferred``;
``verdicts.defers``): a job's first minutes are not lost to the warm-up. The second pass holds its output
watermark, and so the incidents', until that snapshot comes -- a fold's grace past the interval's end --
which is why it is for a stage's first interval only. Up to ``end_us`` only: the backtest does not move past
a finite input's last event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.early import EarlyView, early_ticks_after
from stagewatch.core.judged_by import judge, seen_n
from stagewatch.core.measurements import Deadline, Measured, Progress
from stagewatch.core.records import Anomaly
from stagewatch.core.timeutil import US_PER_S
from stagewatch.core.traces import TraceRules
from stagewatch.core.verdicts import (
    baseline_stage,
    deferred_snapshot,
    defers,
    judge_measurement,
    lookup_at,
    stall_deadline,
)
from stagewatch.stream.steps.contain import ContainedStep, contained

__all__ = ["DEADLINES", "JudgeMeasurements"]

DEADLINES = "deadlines"
DEFERRED = "deferred"  # measured in its stage's first interval (no snapshot yet): judged again in the next


class _JudgeFn(beam.DoFn):
    """``deferred``: this is the second pass, over what the first deferred; it judges as of its window's start
    and defers nothing."""

    def __init__(self, rules: TraceRules, cfg: BaselineConfig, deferred: bool = False,
                 end_us: int | None = None) -> None:
        self._rules = rules
        self._cfg = cfg
        self._second = deferred
        self._end_us = end_us
        self._verdicts = {v: Metrics.counter("stagewatch", f"verdicts_{v}") for v in ("ok", "slow", "warmup")}
        self._deadlines = Metrics.counter("stagewatch", "stall_deadlines")

    @contained("Judge")
    def process(
        self, record: Measured | Progress, snaps: dict[Any, Any], w: Any = beam.DoFn.WindowParam
    ) -> Iterator[Anomaly | TimestampedValue[Anomaly] | beam.pvalue.TaggedOutput]:
        rules, cfg = self._rules, self._cfg
        step = int(w.start.micros) // cfg.interval_us
        if isinstance(record, Progress):  # when is the next stage overdue?
            tenant = record.file.tenant
            found = stall_deadline(rules.index[record.last_stage], record.next_i, record.last_t_us,
                                   lookup_at(snaps, step, tenant, cfg.chronic_n, rules), rules,
                                   lambda stage: seen_n(snaps, stage))
            if found is not None:
                self._deadlines.inc()
                yield beam.pvalue.TaggedOutput(DEADLINES, Deadline(record, *found))
            return
        # ``now_us``: when the trace made it, the backtest's clock at the verdict; a deferred one is judged as
        # of the start of the interval after it.
        tenant = record.file.tenant
        choose = deferred_snapshot if self._second else judge
        stage = baseline_stage(record.m, rules)
        base = rules.path_stage.get(stage)
        snap, by_tenant = choose(snaps, step, stage, tenant, cfg.chronic_n, base)
        if snap is None and not self._second and defers(snaps, stage):
            for b in early_ticks_after(record.now_us, cfg):  # the first early snapshot that can judge it
                if self._end_us is not None and b > self._end_us:
                    break  # the backtest does not move past a finite input's last event
                view = EarlyView(snaps, snaps, b)
                snap, by_tenant = deferred_snapshot(view, step + 1, stage, tenant, cfg.chronic_n, base)
                if snap is not None:
                    verdict, anomaly = judge_measurement(record.file, record.last_stage, record.m, snap, by_tenant,
                                                         rules, b, record.parts,
                                                         lookup_at(view, step + 1, tenant, cfg.chronic_n, rules))
                    self._verdicts[verdict].inc()
                    if anomaly is not None:  # at the tick it was judged at: WatchStalls orders by it
                        yield TimestampedValue(anomaly, b / US_PER_S)
                    return
            next_us = (record.now_us // cfg.interval_us + 1) * cfg.interval_us
            yield beam.pvalue.TaggedOutput(DEFERRED, TimestampedValue(record, next_us / US_PER_S))
            return
        now = step * cfg.interval_us if self._second else record.now_us
        verdict, anomaly = judge_measurement(record.file, record.last_stage, record.m, snap, by_tenant, rules,
                                             now, record.parts, lookup_at(snaps, step, tenant, cfg.chronic_n, rules))
        self._verdicts[verdict].inc()
        if anomaly is not None:
            yield anomaly


class JudgeMeasurements(ContainedStep):
    """(measurements and progress, snapshots) → anomalies (main; a stage's wait and latency may both be there)
    and stall deadlines (tagged ``DEADLINES``)."""

    def __init__(self, rules: TraceRules, cfg: BaselineConfig | None = None, end_us: int | None = None) -> None:
        super().__init__()
        self._rules = rules
        self._cfg = cfg or BaselineConfig()
        self._end_us = end_us

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> tuple[Any, Any]:
        records, snapshots = inputs
        interval = self._cfg.interval_s
        side = snapshots | "SnapshotWindows" >> beam.WindowInto(FixedWindows(interval))
        windowed = records | "MeasurementWindows" >> beam.WindowInto(FixedWindows(interval))
        judged = self.pardo(windowed, "JudgeAgainstSnapshots", _JudgeFn(self._rules, self._cfg, end_us=self._end_us),
                            beam.pvalue.AsDict(side), outputs=(DEADLINES, DEFERRED), main="anomalies")
        later = judged[DEFERRED]
        if self._end_us is not None:
            end_us, interval_us = self._end_us, self._cfg.interval_us
            later = later | "DeferredUntilEndOfInput" >> beam.Filter(
                lambda r: (r.now_us // interval_us + 1) * interval_us <= end_us)
        rewindowed = later | "DeferredWindows" >> beam.WindowInto(FixedWindows(interval))
        second = self.pardo(rewindowed, "JudgeDeferred", _JudgeFn(self._rules, self._cfg, deferred=True),
                            beam.pvalue.AsDict(side), main="anomalies")
        anomalies = (judged.anomalies, second.anomalies) | "AllVerdicts" >> beam.Flatten()
        return anomalies, judged[DEADLINES]
