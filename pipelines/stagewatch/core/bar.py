"""The bar an incident must clear: more anomalies of one cause than the traffic explains by chance, for everyone or
for one customer, and a customer's share more than its traffic explains (the rules: ``core.candidates``).

``Bar`` keeps what it is measured against -- the files per customer (``Traffic``) and each cause's anomalies per
hour (``Noise``) -- and answers the three questions the tracker asks. Files are counted by their last event, and
only complete and failed ones (they close at their last event in both drivers; a stalled file closes a trace
TTL later), and an interval counts ``activity_s`` after it ended: by then both drivers have heard of every such
file in it, so the streaming job and the backtest clear the same bars at the same moments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from stagewatch.core.candidates import Key, Noise, Traffic, binomial_tail, poisson_tail, weights
from stagewatch.core.incident import IncidentConfig
from stagewatch.core.kinds import SLOW_TRACE
from stagewatch.core.records import Anomaly, TraceSummary
from stagewatch.core.timeutil import US_PER_S, parse_rfc3339_us

__all__ = ["COUNTED", "Bar", "counted_at"]

COUNTED = ("complete", "failed")  # the statuses whose files count in the traffic


def _coarse(lam: float) -> float:
    """``lam`` rounded up to a power of two: the bar moves in steps, so that a hair's difference between the two
    drivers (their anomalies agree to 99 %, not 100 %, and so do the noise rates learned from them) rarely moves
    it by a file. Rounding up errs on the side of no page."""
    return 2.0 ** math.ceil(math.log2(lam)) if lam > 0 else 0.0


def counted_at(summary: TraceSummary, interval_us: int) -> int | None:
    """The end of the activity interval a closed file counts in (by its last event), or None when it does
    not count (stalled, open: they close a TTL after their last event)."""
    if summary.status not in COUNTED:
        return None
    return (parse_rfc3339_us(summary.last_time) // interval_us + 1) * interval_us


class Bar:
    def __init__(self, cfg: IncidentConfig) -> None:
        self.cfg = cfg
        self._interval = int(cfg.activity_s * US_PER_S)
        hours = max(1, round(cfg.noise_window_s / 3600))
        # The noise looks back over its complete hours and the one in progress, shifted by the settle.
        keep = int((max((hours + 1) * 3600, cfg.tenant_window_s, cfg.open_window_s) + 2 * cfg.activity_s) * US_PER_S)
        self.traffic = Traffic(keep, settle_us=self._interval)
        self.noise = Noise(hours)

    def file(self, summary: TraceSummary) -> None:
        """One closed file (the backtest's trace summaries, one by one)."""
        end = counted_at(summary, self._interval)
        if end is not None:
            self.traffic.add(summary.tenant or "", end, 1)

    def anomaly(self, a: Anomaly, key: Key) -> None:
        """Every anomaly, whatever it joins, is what its cause flags per hour (the noise, a median of hours)."""
        units = 1 if a.kind == SLOW_TRACE else self.cfg.slow_trace_factor
        self.noise.add(key, parse_rfc3339_us(a.detected_at), units)

    def surprising(self, key: Key, k: int, tenant: str | None, t: int, window_us: int) -> bool:
        """Whether ``k`` files flagged for ``key`` in ``window_us`` up to ``t`` (``tenant``'s, or everyone's) are
        more than the cause's noise gives by chance on the files of such a window."""
        cfg = self.cfg
        rate = max(cfg.noise_rate, self.noise.rate(key, t, cfg.slow_trace_factor, self.traffic) or 0.0)
        # The window's own files, or its share of the noise window's (what has settled lags a few minutes).
        noise_us = int(cfg.noise_window_s * US_PER_S)
        usual = self.traffic.files(tenant, t, noise_us) * window_us / noise_us
        files = max(self.traffic.files(tenant, t, window_us), usual, k)
        return poisson_tail(k, _coarse(files * rate)) <= cfg.tenant_alpha

    def tenant_met(self, key: Key, queue: Iterable[tuple[int, Anomaly]], tenant: str, t: int) -> bool:
        """Whether ``tenant``'s anomalies in ``queue`` (one cause, ``tenant_window_s``) are too many for its
        traffic -- and its own, not the first of a slowdown that reaches everyone. Only verdicts of the
        tenant's own baseline count: against everyone's, a customer's normal can look slow (a simulated day:
        one customer's first register waits after midnight, before its own baseline warmed up) -- or those its young
        key agrees with (``judged_by._as_its_own``)."""
        cfg = self.cfg
        units = cfg.slow_trace_factor
        if self.noise.rate(key, t, units, self.traffic) is None:
            return False  # no hour of traffic known yet: neither the cause's noise nor the customer's share
        members = list(queue)
        everyone = sum(weights((m for _, m in members), units).values())
        mine = sum(weights((m for _, m in members if m.tenant == tenant and m.baseline != "stage"), units).values())
        k = mine // units  # whole files' worth
        if k < cfg.tenant_min or mine < cfg.tenant_share * everyone or not self.its_own(tenant, mine, everyone, t):
            return False
        return self.surprising(key, k, tenant, t, int(cfg.tenant_window_s * US_PER_S))

    def its_own(self, tenant: str, mine: int, everyone: int, t: int) -> bool:
        """Whether ``mine`` of ``everyone`` (weights' units) being ``tenant``'s is more than its share of the
        traffic explains."""
        units = self.cfg.slow_trace_factor
        noise_us = int(self.cfg.noise_window_s * US_PER_S)
        total = self.traffic.files(None, t, noise_us)
        share = self.traffic.files(tenant, t, noise_us) / total if total else 0.0
        return binomial_tail(mine // units, max(1, everyone // units), share) <= self.cfg.tenant_alpha
