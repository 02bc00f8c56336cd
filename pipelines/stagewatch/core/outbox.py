"""``Outbox``: what a file's trace concludes -- failures, stalls, summaries, arrivals of stalled files, counts --
collected for the driver to drain (the backtest's engine, the streaming job's assemble step)."""

from __future__ import annotations

from stagewatch.core.measurements import Arrival
from stagewatch.core.records import Anomaly, TraceSummary

__all__ = ["Outbox"]


class Outbox:
    """Collects what traces conclude; the driver drains it. ``summaries`` is None when nobody wants them."""

    __slots__ = ("anomalies", "arrivals", "counts", "summaries")

    def __init__(self, keep_summaries: bool = True) -> None:
        self.anomalies: list[Anomaly] = []
        self.summaries: list[TraceSummary] | None = [] if keep_summaries else None
        self.counts: dict[str, int] = {}
        # A file declared stalled logged again: it arrived after all (incidents resolve).
        self.arrivals: list[Arrival] = []

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n
