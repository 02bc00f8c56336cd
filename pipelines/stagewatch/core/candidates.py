"""What an incident is opened from: anomalies filed under the cause they point at, weighed by how much they say,
and the traffic that sets a customer's bar.

* **Cause.** A slow end-to-end file points at the stage that added most over its usual (``Anomaly.cause_stage``,
  ``core.evidence``): it is filed under that stage's slowness, so that it joins -- or helps open -- the incident
  of the stage that made it slow, never an incident of another stage (the quickstart demo: a customer's slow
  uploads, slow end to end, had joined a stall incident before download and stretched it over an hour).
* **Weight.** A file counts once per cause, by its strongest evidence: a verdict on the stage itself counts 1, a
  slow end to end that only points at the stage ``1 / slow_trace_factor`` (most slow end-to-end files are a
  slow stage's consequence; alone, many of them are needed).
* **A customer's bar.** A customer sends a share of the traffic; the same count of anomalies means more from a
  small one. A tenant's anomalies on one cause within ``tenant_window_s`` open its incident when so many would
  come by chance less than once in ``1 / tenant_alpha`` windows, if each of its files there were flagged with
  probability ``noise_rate`` (a Poisson tail on the tenant's files closed in the window) -- and at least
  ``tenant_min`` of them. 7 of a customer's 10 files in half an hour open; 5 of a customer's 400 do not.

Traffic is counted per activity interval (the interval of each file's close), the same in both drivers: the
streaming job sums its trace summaries per interval window, the backtest files each summary under the interval
it closed in; an interval counts from its end on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from stagewatch.core.kinds import SLOW_STAGE, SLOW_TRACE
from stagewatch.core.records import Anomaly

__all__ = ["Traffic", "cause_key", "poisson_tail", "weights"]

Key = tuple[str, str]  # (kind, stage) of the incident an anomaly belongs to


def cause_key(a: Anomaly) -> Key:
    """The (kind, stage) an anomaly is filed under: a slow end to end under its main stage's slowness."""
    if a.kind == SLOW_TRACE and a.cause_stage:
        return SLOW_STAGE, a.cause_stage
    return a.kind, a.stage


def weights(members: Iterable[Anomaly], slow_trace_factor: int) -> dict[str, int]:
    """uid -> how much its anomalies among ``members`` say, in ``1 / slow_trace_factor`` units (whole numbers,
    so that 15 echoes make exactly 5 files): ``slow_trace_factor`` for a verdict of its own, 1 for an echo."""
    out: dict[str, int] = {}
    for m in members:
        w = 1 if m.kind == SLOW_TRACE else slow_trace_factor
        if w > out.get(m.uid, 0):
            out[m.uid] = w
    return out


def poisson_tail(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam): how likely k or more flags are by chance."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    term = math.exp(-lam)
    below = term
    for i in range(1, k):
        term *= lam / i
        below += term
    return max(0.0, 1.0 - below)


class Traffic:
    """Files closed per tenant, per activity interval; ``files`` sums the intervals that ended in a window."""

    def __init__(self, window_us: int) -> None:
        self.window_us = window_us
        self._per_tenant: dict[str, deque[tuple[int, int]]] = {}

    def add(self, tenant: str, end_us: int, n: int) -> None:
        """``n`` files of ``tenant`` closed in the interval that ends at ``end_us``."""
        counts = self._per_tenant.setdefault(tenant, deque())
        if counts and counts[-1][0] == end_us:
            counts[-1] = (end_us, counts[-1][1] + n)
        else:
            counts.append((end_us, n))
        while counts and counts[0][0] < end_us - 2 * self.window_us:
            counts.popleft()

    def files(self, tenant: str, t_us: int) -> int:
        """Files of ``tenant`` closed in the intervals that ended within the window up to ``t_us``."""
        return sum(n for end, n in self._per_tenant.get(tenant, ()) if t_us - self.window_us < end <= t_us)
