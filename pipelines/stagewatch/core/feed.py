"""What the incident tracker hears, and in which order, in both drivers.

The tracker takes four kinds of input, each at its own event time: anomalies (at ``detected_at``), tenants
seen active, stalled files that arrived after all, and lot records (at ``judged_at``). ``feed`` applies one of
them; the streaming job (``beam.incidents.TrackIncidents``) sorts its buffered inputs by ``time_of`` and feeds
them. ``BacktestFeed`` is the backtest's side: it takes replay's callbacks as they come, judges the lots that
are due before each input (so they reach the tracker in time order, as in the stream), and returns what to
write, tagged by table.
"""

from __future__ import annotations

from typing import Any

from stagewatch.core.incidents import IncidentTracker
from stagewatch.core.lots import LotTracker
from stagewatch.core.records import Anomaly
from stagewatch.core.timeutil import parse_rfc3339_us

__all__ = ["BacktestFeed", "feed", "time_of"]

Rows = list[tuple[str, dict[str, Any]]]  # (table, row): "incidents" events and "lots" records


def time_of(what: str, record: dict[str, Any]) -> int:
    """The event time at which the tracker takes ``record`` (a tagged input of the streaming job)."""
    if what == "anomaly":
        return parse_rfc3339_us(record["detected_at"])
    if what == "lot":
        return parse_rfc3339_us(record["judged_at"])
    return int(record["t_us"])  # "tenants" and "arrival" carry their time


def feed(tracker: IncidentTracker, what: str, t_us: int, record: dict[str, Any]) -> list[dict[str, Any]]:
    """One tagged input, in time order; returns the incident events it caused."""
    if what == "tenants":
        for tenant in record["tenants"]:
            tracker.seen_tenant(tenant, t_us)
        return []
    if what == "arrival":
        return tracker.arrived(record["uid"], t_us)
    if what == "lot":
        return tracker.add_lot(record)
    return tracker.add(Anomaly(**record))


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

    def arrival(self, uid: str, t_us: int) -> Rows:
        if self.tracker is None:
            return []
        return self._lots_due(t_us) + self._events(self.tracker.arrived(uid, t_us))

    def summary(self, row: dict[str, Any]) -> Rows:
        out = self._lots_due(parse_rfc3339_us(row["closed_at"]))
        if self.tracker is not None:
            out += self._events(self.tracker.observe_summary(row))
        if self.lot_tracker is not None:
            out += self._judged(self.lot_tracker.observe(row))
        return out

    def _lots_due(self, t_us: int) -> Rows:
        # The lots judged by now reach the tracker before whatever comes at t_us, as in the streaming job.
        if self.tracker is None or self.lot_tracker is None:
            return []
        return self._judged(self.lot_tracker.advance(t_us))

    def _judged(self, records: list[dict[str, Any]]) -> Rows:
        out: Rows = []
        for record in records:
            if self._write_lots:
                out.append(("lots", record))
            if self.tracker is not None:
                out += self._events(self.tracker.add_lot(record))
        return out

    @staticmethod
    def _events(events: list[dict[str, Any]]) -> Rows:
        return [("incidents", e) for e in events]
