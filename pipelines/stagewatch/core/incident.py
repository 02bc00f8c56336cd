"""One incident: what it groups (files, tenants, lots), how it is scoped, and the sentence it says; and the
settings of the tracker that makes them (``incidents.IncidentTracker``).

Both are pickled in the streaming job's state: a release that adds a field gives it a default, and ``_restore``
fills it in for an object saved by the release before.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from stagewatch.core.kinds import LOT_INCOMPLETE, STALLED, incident_phrase
from stagewatch.core.records import Anomaly
from stagewatch.core.timeutil import US_PER_S, format_duration_ms

__all__ = ["LOT_STAGE", "SAMPLE_LOTS", "SAMPLE_UIDS", "Incident", "IncidentConfig", "message"]

SAMPLE_UIDS = 10  # files named in an incident event, so a Logging link can show them
SAMPLE_LOTS = 20  # lots named in an incident event
LOT_STAGE = "lot"  # the stage of an incident about whole batches (lot_incomplete, lot_slow)


def _restore(obj: Any, state: dict[str, Any]) -> None:
    """Unpickle a dataclass saved by an older release: fields it did not have take their defaults. The
    streaming job keeps the tracker in Beam state, and ``--update`` hands that state to the new code."""
    for f in fields(obj):
        if f.name not in state:
            state[f.name] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
    obj.__dict__.update(state)


@dataclass(frozen=True)
class IncidentConfig:
    open_count: int = 5  # anomalies of one kind and stage within open_window_s that open an incident
    open_window_s: float = 900.0
    # Resolved when no anomaly joined for quiet_gaps of its usual gaps between files (event time), within
    # [min_quiet_s, quiet_s]: a slowdown of hundreds of files is over minutes after the last one, a customer's
    # trickle of one every five minutes is not over after one gap (Incident.quiet_us).
    quiet_s: float = 900.0
    min_quiet_s: float = 300.0
    quiet_gaps: float = 4.0
    tenant_share: float = 0.8  # one tenant's share of the opening anomalies that makes it a tenant incident
    lot_share: float = 0.8
    update_every_s: float = 300.0  # at most one "updated" event per incident per this long
    # A stall incident whose files have all arrived resolves once no new stall joined for this long: a queue
    # draining its backlog delivers while it still stalls others, and must not flap open and resolved.
    settle_s: float = 120.0
    # Resolved incidents are remembered this long, so that a lot judged hours later (LotConfig.quiet_s after
    # its last file) is recognised as their consequence.
    remember_s: float = 6 * 3600.0
    # slow_trace needs this many times open_count to open an incident of its own: a slow end to end is
    # usually a slow stage's consequence, and that stage's incident (which it then joins) should open first.
    slow_trace_factor: int = 3
    # A customer's own bar (core.candidates): its anomalies of one cause within tenant_window_s open its
    # incident when at least tenant_min of them would come by chance less than once in 1 / tenant_alpha
    # windows, were each of its files there flagged with probability noise_rate.
    tenant_window_s: float = 3600.0
    tenant_min: int = 3
    noise_rate: float = 0.01  # the least noise assumed; each cause's own is learned over noise_window_s
    noise_window_s: float = 6 * 3600.0
    tenant_alpha: float = 1e-3
    activity_s: float = 300.0  # the interval tenants' traffic is counted in (the streaming job's windows)

    def __post_init__(self) -> None:
        if self.open_count < 1 or self.open_window_s <= 0 or self.quiet_s <= 0 or self.settle_s < 0:
            raise ValueError("open_count >= 1, open_window_s > 0, quiet_s > 0 and settle_s >= 0 are required")
        if not 0 < self.min_quiet_s <= self.quiet_s or self.quiet_gaps <= 0:
            raise ValueError("0 < min_quiet_s <= quiet_s and quiet_gaps > 0 are required")
        if self.tenant_min < 1 or self.tenant_window_s <= 0 or self.activity_s <= 0 or self.noise_window_s < 3600 \
                or not (0 < self.noise_rate < 1 and 0 < self.tenant_alpha < 1):
            raise ValueError("tenant_min >= 1, tenant_window_s > 0, activity_s > 0, noise_window_s >= 3600, "
                             "noise_rate and tenant_alpha in (0, 1) are required")

    def __setstate__(self, state: dict[str, Any]) -> None:
        _restore(self, state)


@dataclass
class Incident:
    incident_id: str
    kind: str
    stage: str
    scope: str  # trace, lot, tenant, global
    scope_key: str | None  # the tenant or lot, for those scopes
    started_us: int
    last_us: int
    uids: set[str] = field(default_factory=set)
    first_uids: list[str] = field(default_factory=list)  # the first files, in order (for a Logging link)
    tenants: Counter[str] = field(default_factory=Counter)
    worst_observed_ms: float | None = None
    expected_ms: float | None = None
    last_update_us: int = 0
    resolved_us: int | None = None
    outstanding: set[str] = field(default_factory=set)  # stalled / unfinished files that have not arrived
    arrived: set[str] = field(default_factory=set)  # ... and those that did, after all
    last_arrival_us: int = 0
    lots: set[str] = field(default_factory=set)  # batches it left incomplete or slow
    lot_files: int = 0  # files of its slow lots (a lot_slow record names no files)
    resolution: str = ""  # how it resolved: "quiet" or "arrived"
    stalled_here: set[str] = field(default_factory=set)  # a slowdown's files that then stalled at its stage

    def __setstate__(self, state: dict[str, Any]) -> None:
        _restore(self, state)

    def quiet_us(self, cfg: IncidentConfig) -> int:
        """How long with no new file before it is over: ``quiet_gaps`` of its mean gap between files so far,
        within [``min_quiet_s``, ``quiet_s``]."""
        gap = max(0, self.last_us - self.started_us) / max(1, len(self.uids) - 1)
        return int(min(cfg.quiet_s * US_PER_S, max(cfg.min_quiet_s * US_PER_S, cfg.quiet_gaps * gap)))

    @property
    def all_arrived(self) -> bool:
        """Everything it held up got through: over for a stall or an incomplete batch (a slowdown that made
        files late enough to be called stalled is over only when it goes quiet)."""
        return self.kind in (STALLED, LOT_INCOMPLETE) and bool(self.arrived) and not self.outstanding

    def covers(self, a: Anomaly) -> bool:
        if self.scope == "tenant":
            return a.tenant == self.scope_key
        if self.scope == "lot":
            return a.lot == self.scope_key
        if self.scope == "trace":
            return a.uid in self.uids
        return True

    def join(self, a: Anomaly, t_us: int, arrived_early: dict[str, int]) -> None:
        if a.uid not in self.uids and len(self.first_uids) < SAMPLE_UIDS:
            self.first_uids.append(a.uid)
        self.uids.add(a.uid)
        if a.tenant:
            self.tenants[a.tenant] += 1
        if a.kind == STALLED and a.uid not in self.arrived:
            early = arrived_early.get(a.uid)
            if early is None:
                self.outstanding.add(a.uid)
            else:  # it came through while its stall was still a candidate, before this incident opened
                self.arrived.add(a.uid)
                self.last_arrival_us = max(self.last_arrival_us, early)
        self.last_us = max(self.last_us, t_us)
        if a.kind == self.kind and a.observed_ms is not None and (
            self.worst_observed_ms is None or a.observed_ms > self.worst_observed_ms
        ):
            self.worst_observed_ms = a.observed_ms
            self.expected_ms = a.expected_ms


def message(inc: Incident, event: str) -> str:
    """The sentence of an incident event: what, for whom, how many, how bad."""
    where = {"global": "everyone", "tenant": f"tenant {inc.scope_key}", "lot": f"lot {inc.scope_key}",
             "trace": f"file {inc.scope_key}"}[inc.scope]
    what = incident_phrase(inc.kind, inc.stage)
    how = ""
    if inc.worst_observed_ms is not None and inc.expected_ms:
        how = (f"; worst {format_duration_ms(inc.worst_observed_ms)}, usually "
               f"{format_duration_ms(inc.expected_ms)}")
    n = len(inc.uids) + inc.lot_files
    files = f"{n} file{'s' if n != 1 else ''}"
    if inc.lots:
        files = f"{len(inc.lots)} lot{'s' if len(inc.lots) != 1 else ''}, {files}"
    head = {"opened": "", "updated": "still: ", "resolved": "resolved: "}[event]
    if event == "resolved" and inc.resolution == "arrived":
        how += f"; all {len(inc.arrived)} held-up file{'s' if len(inc.arrived) != 1 else ''} arrived"
    tenants = f"{len(inc.tenants)} tenant{'s' if len(inc.tenants) != 1 else ''}"
    return f"{head}{what} for {where} ({files}, {tenants}){how}"
