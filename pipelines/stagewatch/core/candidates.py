"""What an incident is opened from: anomalies filed under the cause they point at, weighed by how much they say,
and the traffic that sets a customer's bar.

* **Cause.** A slow end-to-end file points at the stage that added most over its usual (``Anomaly.cause_stage``,
  ``core.evidence``): it is filed under that stage's slowness, so that it joins -- or helps open -- the incident
  of the stage that made it slow, never an incident of another stage (the quickstart demo: a customer's slow
  uploads, slow end to end, had joined a stall incident before download and stretched it over an hour).
* **Weight.** A file counts once per cause, by its strongest evidence: a verdict on the stage itself counts 1, a
  slow end to end that only points at the stage ``1 / slow_trace_factor`` (most slow end-to-end files are a
  slow stage's consequence; alone, many of them are needed).
* **A bar that scales with traffic.** The same count of anomalies means more from a small customer, or a
  quiet pipeline, than from a busy one. Anomalies of one cause open an incident only when so many would come by
  chance less than once in ``1 / tenant_alpha`` windows, if each file closed in the window were flagged at the
  cause's noise rate (a Poisson tail): for everyone, ``open_count`` of them within ``open_window_s`` *and*
  that; for one customer on its own, ``tenant_min`` of its files within ``tenant_window_s`` and that, on its
  own traffic. 7 of a customer's 10 files in half an hour open; 5 of a customer's 400 do not.
* **A customer's own, not everyone's.** An incident is a customer's only when its share of the cause's
  anomalies is more than its share of the traffic makes likely (a binomial tail under 1 in 1,000): a
  customer sending 86 % of the files is most of any slowdown's files (the zoo: such a customer got an
  incident of its own for every noisy hour, and a global slowdown was called theirs).
* **The noise rate** is learned per cause (``Noise``): the median, over the last ``noise_window_s`` in hours, of
  its anomalies per file closed each hour -- at least ``noise_rate``.

Traffic is counted per activity interval, the same in both drivers: ``core.bar`` says which files count, in
which interval, and from when.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable

from stagewatch.core.kinds import SLOW_STAGE, SLOW_TRACE
from stagewatch.core.records import Anomaly

__all__ = ["Key", "Noise", "Traffic", "binomial_tail", "cause_key", "poisson_tail", "weights"]

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


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely k or more of n flagged files are one customer's by chance,
    when it sends a share p of the files (n above 200 is scaled down to 200: a tail, not an exact figure)."""
    if n > 200:
        k, n = math.ceil(k * 200 / n), 200
    if k <= 0:
        return 1.0
    if p <= 0 or k > n:
        return 0.0
    if p >= 1:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def poisson_tail(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam): how likely k or more flags are by chance."""
    if k <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    # In logs: exp(-lam) underflows to 0 past lam ~ 745 (a busy pipeline's window), which made every count look
    # ordinary and no incident could open.
    log_lam = math.log(lam)
    below = sum(math.exp(i * log_lam - lam - math.lgamma(i + 1)) for i in range(k))
    return min(1.0, max(0.0, 1.0 - below))


class Traffic:
    """Files per tenant ("" for files with none), per activity interval, kept for ``keep_us``; an interval counts
    ``settle_us`` after its end (``core.bar``: when both drivers have heard of all its files)."""

    def __init__(self, keep_us: int, settle_us: int = 0) -> None:
        self.keep_us = keep_us
        self.settle_us = settle_us
        self._per_tenant: dict[str, deque[tuple[int, int]]] = {}

    def add(self, tenant: str, end_us: int, n: int) -> None:
        """``n`` files of ``tenant`` closed in the interval that ends at ``end_us``."""
        counts = self._per_tenant.setdefault(tenant, deque())
        if counts and counts[-1][0] == end_us:
            counts[-1] = (end_us, counts[-1][1] + n)
        else:
            counts.append((end_us, n))
        while counts and counts[0][0] < end_us - self.keep_us:
            counts.popleft()
        if end_us > self.__dict__.get("_swept_us", 0):
            # Once per interval, every tenant: one heard of once (a made-up name in a log line) is forgotten
            # ``keep_us`` later, not kept for ever.
            self._swept_us = end_us
            for name in [name for name, old in self._per_tenant.items() if old[-1][0] < end_us - self.keep_us]:
                del self._per_tenant[name]

    def files(self, tenant: str | None, t_us: int, window_us: int) -> int:
        """Files of ``tenant`` (None: everyone's) in the intervals that ended in (t - window, t], as they stand
        ``settle_us`` later."""
        t_us -= self.settle_us
        tenants = self._per_tenant.values() if tenant is None else [self._per_tenant.get(tenant, deque())]
        return sum(n for counts in tenants for end, n in counts if t_us - window_us < end <= t_us)


class Noise:
    """How often each cause flags a file on this pipeline: per hour, its anomalies over the files closed, and
    the median of the last ``hours`` complete hours -- a fault's hour or two does not move a median, a stage
    whose alert line flags a fifth of its normal files does (the zoo: a two-mode stage flagged 22 % and, on a
    bar that assumed 1 %, opened an incident every half hour)."""

    def __init__(self, hours: int) -> None:
        self.hours = hours
        self._units: dict[Key, dict[int, int]] = {}
        self._known: dict[Key, tuple[int, float | None]] = {}  # the rate of the hour in progress, once asked

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update({"_known": {}, **state})

    def add(self, key: Key, t_us: int, units: int) -> None:
        per_hour = self._units.setdefault(key, {})
        hour = t_us // _HOUR_US
        per_hour[hour] = per_hour.get(hour, 0) + units
        for old in [h for h in per_hour if h < hour - self.hours]:
            del per_hour[old]

    def rate(self, key: Key, t_us: int, units: int, traffic: Traffic) -> float | None:
        """The median over the last complete hours of files flagged / files closed; under 3 such hours (a job's
        first hours) all of them together. The hour in progress is left out: it holds what is being judged.
        None before an hour with files closed."""
        now = t_us // _HOUR_US
        known = self._known.get(key)
        if known is not None and known[0] == now:  # complete hours do not change within the hour
            return known[1]
        per_hour = self._units.get(key, {})
        rates, flagged, closed = [], 0, 0
        for hour in range(now - self.hours, now):
            files = traffic.files(None, (hour + 1) * _HOUR_US, _HOUR_US)
            if files:
                rates.append(per_hour.get(hour, 0) / units / files)
                flagged, closed = flagged + per_hour.get(hour, 0), closed + files
        rate = statistics.median(rates) if len(rates) >= 3 else flagged / units / closed if closed else None
        self._known[key] = (now, rate)
        return rate


_HOUR_US = 3600 * 1_000_000
