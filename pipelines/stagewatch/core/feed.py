"""What the incident tracker hears, and in which order, in both drivers.

The tracker takes four kinds of input, each at its own event time: anomalies (at ``detected_at``), tenants seen
active (``TenantActivity``), stalled files that arrived after all (``Arrival``), and lot records (at
``judged_at``). ``feed`` applies one of them; the streaming job (``stream.steps.incidents.TrackIncidents``) sorts
its buffered inputs by ``time_of`` and feeds them. ``BacktestFeed`` is the backtest's side: it takes replay's
callbacks as they come, judges the lots that are due before each input (so they reach the tracker in time order,
as in the stream), and returns what to write, tagged by table.
"""

from __future__ import annotations

from typing import NamedTuple

from stagewatch.core.incidents import IncidentTracker
from stagewatch.core.lots import LotTracker
from stagewatch.core.measurements import Arrival
from stagewatch.core.records import Anomaly, IncidentEvent, LotRecord, TraceSummary
from stagewatch.core.timeutil import parse_rfc3339_us

__all__ = ["BacktestFeed", "TenantActivity", "TrackerInput", "feed", "time_of"]


class TenantActivity(NamedTuple):
    """The tenants that had files close in the interval ending at ``t_us`` (the streaming job's summary of its
    trace summaries, one record per interval), each as (tenant, the activity interval its files count in
    -- ``core.bar.counted_at`` -- or None, how many). A record saved by an older release names the tenants
    alone: seen, not counted."""

    t_us: int
    tenants: tuple[tuple[str, int | None, int] | str, ...]


TrackerInput = Anomaly | TenantActivity | Arrival | LotRecord
Rows = list[tuple[str, IncidentEvent | LotRecord]]  # (table, record): "incidents" events and "lots" records


def time_of(record: TrackerInput) -> int:
    """The event time at which the tracker takes ``record``."""
    if isinstance(record, Anomaly):
        return parse_rfc3339_us(record.detected_at)
    if isinstance(record, LotRecord):
        return parse_rfc3339_us(record.judged_at)
    return record.t_us


def feed(tracker: IncidentTracker, t_us: int, record: TrackerInput) -> list[IncidentEvent]:
    """One input, in time order; returns the incident events it caused."""
    if isinstance(record, TenantActivity):
        for item in record.tenants:
            tenant, end, n = (item, None, 0) if isinstance(item, str) else item
            tracker.seen_tenant(tenant, t_us)  # "" (no tenant) is traffic, not a tenant
            if end is not None:
                tracker.closed_files(tenant, end, n)
        return []
    if isinstance(record, Arrival):
        return tracker.arrived(record.uid, t_us)
    if isinstance(record, LotRecord):
        return tracker.add_lot(record)
    return tracker.add(record)


class BacktestFeed:
    """Replay's anomalies, arrivals and trace summaries → incident events and lot records (either may be off)."""

    def __init__(self, incidents: bool, lots: bool) -> None:
        self.tracker = IncidentTracker() if incidents else None
        self._write_lots = lots
        # Lots feed the incidents too (a batch left incomplete with no incident to explain it opens one).
        self.lot_tracker = LotTracker() if lots or incidents else None

    def anomaly(self, a: Anomaly) -> Rows:
        if self.tracker is None:
            return []
        return self._lots_due(parse_rfc3339_us(a.detected_at)) + self._events(self.tracker.add(a))

    def arrival(self, arrival: Arrival) -> Rows:
        if self.tracker is None:
            return []
        return self._lots_due(arrival.t_us) + self._events(self.tracker.arrived(arrival.uid, arrival.t_us))

    def summary(self, summary: TraceSummary) -> Rows:
        out = self._lots_due(parse_rfc3339_us(summary.closed_at))
        if self.tracker is not None:
            out += self._events(self.tracker.observe_summary(summary))
        if self.lot_tracker is not None:
            out += self._judged(self.lot_tracker.observe(summary))
        return out

    def _lots_due(self, t_us: int) -> Rows:
        # The lots judged by now reach the tracker before whatever comes at t_us, as in the streaming job.
        if self.tracker is None or self.lot_tracker is None:
            return []
        return self._judged(self.lot_tracker.advance(t_us))

    def _judged(self, records: list[LotRecord]) -> Rows:
        out: Rows = []
        for record in records:
            if self._write_lots:
                out.append(("lots", record))
            if self.tracker is not None:
                out += self._events(self.tracker.add_lot(record))
        return out

    @staticmethod
    def _events(events: list[IncidentEvent]) -> Rows:
        return [("incidents", e) for e in events]
