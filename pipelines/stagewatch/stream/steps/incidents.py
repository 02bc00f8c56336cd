"""``TrackIncidents``: the core's ``IncidentTracker`` over the job's anomalies, in event-time order.

Anomalies are few (a fraction of a percent of the files), so one key holds the tracker: scope is decided
from where anomalies concentrate across all tenants, which needs them together. Tenants' activity (the
denominator of a global incident's reach, and a customer's traffic that sets its own bar) is not routed there
file by file: trace summaries are reduced to files per tenant per activity window first, one small record per
window.

The tracker sees anomalies, arrivals of stalled files and lot records sorted by their time once the watermark
is ``hold`` past it (a buffer and one event-time timer, as ``AssembleTraces`` does for events; ``hold``
because verdicts reach this step behind the watermark), and the timer keeps ticking every minute while an
incident is open so that a quiet incident resolves without waiting for the next anomaly. A local run's
ticks stop at the end of its input (``end_us``): the end of a file is not the passage of time.

The timer fires on a grid (``GRID_US``, 10 s of event time), not at each record's own due time: a firing reads,
sorts and rewrites the whole buffer (minutes of anomalies: the judging lag and ``hold``), so firing at every due
time was quadratic in the anomaly rate -- more than a core at ~9 files/s during a pipeline-wide incident
(docs/capacity.md). The incident events do not change (the tracker's every decision carries its own time,
whenever it is told); they are said up to 10 s later. ``benchmarks/incident_grid.py`` measures both and compares
what they say: the same events for about 1/60 of the CPU in the capacity benchmark's dense hour. A finite input
(``end_us``, a local run of a file) keeps a timer at each due time: there the end of the input decides what is
still open, and a grid would move the last minute's ticks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, GlobalWindows

from stagewatch.core.bar import counted_at
from stagewatch.core.feed import TenantActivity, TrackerInput, feed, time_of
from stagewatch.core.incidents import IncidentConfig, IncidentTracker
from stagewatch.core.records import IncidentEvent, TraceSummary
from stagewatch.core.timeutil import US_PER_S
from stagewatch.stream.steps.contain import ContainedStep, contained
from stagewatch.stream.steps.timers import fire_at, fire_no_later_than, take_due

__all__ = ["TrackIncidents"]

TICK_US = 60 * US_PER_S
GRID_US = 10 * US_PER_S
_KEY = "incidents"


class _TrackFn(beam.DoFn):
    TRACKER = ReadModifyWriteStateSpec("tracker", PickleCoder())
    BUFFER = BagStateSpec("buffer", PickleCoder())
    NEXT = ReadModifyWriteStateSpec("next_fire_us", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def __init__(self, cfg: IncidentConfig, end_us: int | None, hold_us: int, grid_us: int = GRID_US) -> None:
        self._cfg = cfg
        self._end_us = end_us
        self._hold_us = hold_us
        self._grid_us = max(1, grid_us) if end_us is None else 1

    def _on_grid(self, t_us: int) -> int:
        return -(-t_us // self._grid_us) * self._grid_us

    @contained("Incidents")
    def process(
        self,
        kv: tuple[str, TrackerInput],
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> None:
        record = kv[1]
        t = time_of(record)
        buffer.add((t, not isinstance(record, TenantActivity), record))
        fire_no_later_than(next_fire, fire, self._on_grid(t + self._hold_us))

    @on_timer(FIRE)
    @contained("Incidents")
    def _fire(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        tracker_state: Any = beam.DoFn.StateParam(TRACKER),
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[IncidentEvent]:
        now = int(ts.micros)
        # Decide only what can no longer be overtaken: a verdict waits for its interval's baseline (up to the
        # fold's grace after the interval starts), so anomalies reach this step up to ``hold`` behind the
        # watermark. Taken in time order behind that horizon, they meet the tracker in the backtest's order.
        horizon = now - self._hold_us
        tracker: IncidentTracker = tracker_state.read() or IncidentTracker(self._cfg)
        # Tenants' activity of a moment before the anomalies of that moment (the second field: False for it).
        due: list[tuple[int, bool, TrackerInput]]
        due, rest = take_due(buffer, horizon, lambda item: item[0], lambda item: (item[0], item[1]))
        for t, _, record in due:
            yield from feed(tracker, t, record)
        yield from tracker.advance(horizon)
        tracker.events.clear()  # emitted; the state keeps only what decides the future
        tracker_state.write(tracker)
        wake = [self._on_grid(rest[0][0] + self._hold_us)] if rest else []
        if tracker.open and (self._end_us is None or horizon + TICK_US <= self._end_us):
            wake.append(now + TICK_US)
        fire_at(next_fire, fire, wake)


class TrackIncidents(ContainedStep):
    """(anomalies, trace summaries, arrivals of stalled files, lot records) → incident events (opened /
    updated / resolved)."""

    def __init__(self, cfg: IncidentConfig | None = None, interval_s: float = 300.0, end_us: int | None = None,
                 hold_s: float | None = None):
        super().__init__()
        self._cfg = cfg or IncidentConfig()
        self._interval_s = interval_s
        self._end_us = end_us
        # Default: the baseline fold's grace (half an interval), the most a verdict lags a smooth watermark.
        self._hold_us = int((interval_s / 2 if hold_s is None else hold_s) * US_PER_S)

    def expand(self, inputs: tuple[beam.PCollection, ...]) -> beam.PCollection:
        anomalies, summaries, arrivals, lots = inputs
        interval_us = int(self._cfg.activity_s * US_PER_S)
        per_interval = (
            summaries
            | "TenantOf" >> beam.FlatMap(_tenant_of(interval_us))
            | "ActivityWindows" >> beam.WindowInto(FixedWindows(self._cfg.activity_s))
            | "TenantsPerInterval" >> beam.CombineGlobally(_TenantCounts()).without_defaults()
        )
        stamped = self.pardo(per_interval, "StampInterval", _StampWindowEnd(interval_us)).main
        active = stamped | "ActivityGlobal" >> beam.WindowInto(GlobalWindows())
        tagged = (
            anomalies | "TagAnomaly" >> beam.Map(lambda a: (_KEY, a)),
            active | "TagTenants" >> beam.Map(lambda r: (_KEY, r)),
            arrivals | "TagArrival" >> beam.Map(lambda r: (_KEY, r)),
            lots | "TagLot" >> beam.Map(lambda r: (_KEY, r)),
        )
        together = (
            tagged
            | "AllForTracker" >> beam.Flatten()
            | "Typed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, Any])
        )
        return self.pardo(together, "Track", _TrackFn(self._cfg, self._end_us, self._hold_us)).main


_Counted = tuple[str, int | None]  # (tenant, the activity interval its file counts in, or None)


class _TenantCounts(beam.CombineFn):
    def create_accumulator(self) -> dict[_Counted, int]:
        return {}

    def add_input(self, acc: dict[_Counted, int], item: _Counted) -> dict[_Counted, int]:
        acc[item] = acc.get(item, 0) + 1
        return acc

    def merge_accumulators(self, accs: Any) -> dict[_Counted, int]:
        out: dict[_Counted, int] = {}
        for acc in accs:
            for item, n in acc.items():
                out[item] = out.get(item, 0) + n
        return out

    def extract_output(self, acc: dict[_Counted, int]) -> list[tuple[str, int | None, int]]:
        return sorted(((tenant, end, n) for (tenant, end), n in acc.items()), key=lambda x: (x[0], x[1] or 0))


class _StampWindowEnd(beam.DoFn):
    def __init__(self, interval_us: int) -> None:
        self._interval_us = interval_us

    @contained("Incidents")
    def process(self, tenants: list[tuple[str, int | None, int]], w: Any = beam.DoFn.WindowParam
                ) -> Iterator[TenantActivity]:
        yield TenantActivity(int(w.start.micros) + self._interval_us, tuple(tenants))


def _tenant_of(interval_us: int) -> Any:
    def counted(summary: TraceSummary) -> list[_Counted]:
        # "": files with no tenant count in the traffic too; by their last event (core.bar).
        return [(summary.tenant or "", counted_at(summary, interval_us))]
    return counted
