"""Incidents: per-file anomalies grouped into what people act on — one slowdown, one incident, with a scope.

An ``IncidentTracker`` is fed anomalies in the order they are detected (the backtest's order; event time)
and emits incident events: ``opened`` when enough anomalies of one kind and stage concentrate, ``updated``
(rate-limited) as files join, ``resolved`` when none has joined for ``quiet_s`` of event time -- or, for
stalls, once every file it holds has arrived after all (``arrived``) and none stalled for ``settle_s``.

Lots (``add_lot``: the records of ``lots.LotTracker``) are judged hours after their files, when the batch
went quiet. A lot whose unfinished files belong to an incident already known is that incident's consequence
and opens nothing (its record stays in the ``lots`` table); an unexplained one opens an incident of stage
``lot``: scope ``lot`` for one batch, widening to the tenant or to everyone as more batches of the same kind
join it. An incomplete lot's incident resolves early when its unfinished files arrive.

Scope comes from where the opening anomalies concentrate, not from one file: when one tenant accounts for
``tenant_share`` of them the incident is that tenant's (a slow home network, a wrong client setting) and
only that tenant's files join it; else one lot's; else ``global`` (many tenants), with affected and active
tenant counts. A slow end-to-end time is a consequence, not a cause: a ``slow_trace`` joins an open incident
that already holds its file, or else an open incident whose scope covers it, and opens its own only when
``slow_trace_factor`` times as many gather with no stage to explain them.

Timeline (open_count 5, window 15 min, quiet 15 min)::

    10:00-10:03  5 slow analyse from 4 tenants       -> opened  (global, analyse, 5 files)
    10:03-10:30  more slow analyse, slow end to end   -> updated (at most every update_every_s)
    10:45        nothing new for 15 min               -> resolved (resolved_at 10:45, files 211)
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from stagewatch.core.records import Anomaly
from stagewatch.core.timeutil import US_PER_S, format_duration_ms, format_rfc3339, parse_rfc3339_us

__all__ = ["LOT_STAGE", "SAMPLE_LOTS", "SAMPLE_UIDS", "Incident", "IncidentConfig", "IncidentTracker"]

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
    quiet_s: float = 900.0  # resolved when no anomaly joined for this long (event time)
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

    def __post_init__(self) -> None:
        if self.open_count < 1 or self.open_window_s <= 0 or self.quiet_s <= 0 or self.settle_s < 0:
            raise ValueError("open_count >= 1, open_window_s > 0, quiet_s > 0 and settle_s >= 0 are required")

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

    def __setstate__(self, state: dict[str, Any]) -> None:
        _restore(self, state)

    @property
    def all_arrived(self) -> bool:
        """Everything it held up got through: over for a stall or an incomplete batch (a slowdown that made
        files late enough to be called stalled is over only when it goes quiet)."""
        return self.kind in ("stalled", "lot_incomplete") and bool(self.arrived) and not self.outstanding

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
        if a.kind == "stalled" and a.uid not in self.arrived:
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


def _event_us(a: Anomaly) -> int:
    return parse_rfc3339_us(a.detected_at)


class IncidentTracker:
    """Anomalies in (detection order) → incident events (dicts, the README's "Incident events")."""

    def __init__(self, cfg: IncidentConfig | None = None) -> None:
        self.cfg = cfg or IncidentConfig()
        self.open: list[Incident] = []
        self.resolved: list[Incident] = []
        self._candidates: dict[tuple[str, str], deque[tuple[int, Anomaly]]] = {}
        self._by_uid: dict[str, Incident] = {}
        self._active: dict[str, int] = {}  # tenant -> last time it had any anomaly or file (active tenants)
        self.events: list[dict[str, Any]] = []
        self.explained_lots = 0  # lot records that an incident already known explained
        # Stalled files that arrived before any incident held them (their stall still a candidate): uid -> time.
        self._arrived_early: dict[str, int] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A tracker pickled by an older release (Beam state across --update) lacks what came later.
        self.__dict__.update({"explained_lots": 0, "_arrived_early": {}, **state})

    # -- input -------------------------------------------------------------------------------------------

    def seen_tenant(self, tenant: str | None, t_us: int) -> None:
        """A file of ``tenant`` was seen (any trace summary): the denominator of a global incident's reach."""
        if tenant:
            self._active[tenant] = max(self._active.get(tenant, 0), t_us)

    def observe_summary(self, summary: dict[str, Any]) -> list[dict[str, Any]]:
        """A trace closed: its tenant is active, and event time has reached its close (quiet incidents
        resolve even when no anomaly follows them)."""
        t = parse_rfc3339_us(summary["closed_at"])
        self.seen_tenant(summary.get("tenant"), t)
        return self.advance(t)

    def add(self, a: Anomaly) -> list[dict[str, Any]]:
        """One anomaly; returns the incident events it caused (also kept in ``events``)."""
        t = _event_us(a)
        out = self.advance(t)
        self.seen_tenant(a.tenant, t)
        home = self._home(a)
        if home is not None:
            home.join(a, t, self._arrived_early)
            self._by_uid[a.uid] = home
            if t - home.last_update_us >= self.cfg.update_every_s * US_PER_S:
                out.append(self._event(home, "updated", t))
            return out
        key = (a.kind, a.stage)
        queue = self._candidates.setdefault(key, deque())
        queue.append((t, a))
        horizon = t - int(self.cfg.open_window_s * US_PER_S)
        while queue and queue[0][0] < horizon:
            queue.popleft()
        needed = self.cfg.open_count * (self.cfg.slow_trace_factor if a.kind == "slow_trace" else 1)
        if len(queue) >= needed:
            opened = self._open(key, list(queue), t)
            if opened is not None:
                members = {id(m) for _, m in queue if opened.covers(m)}
                self._candidates[key] = deque((tq, m) for tq, m in queue if id(m) not in members)
                out.append(self._event(opened, "opened", t))
        return out

    def arrived(self, uid: str, t_us: int) -> list[dict[str, Any]]:
        """A file that had stalled logged again at ``t_us``: it arrived after all."""
        out = self.advance(t_us)
        inc = self._by_uid.get(uid)
        if inc is None or inc.resolved_us is not None:
            self._arrived_early[uid] = t_us
            return out
        if uid in inc.outstanding:
            inc.outstanding.discard(uid)
            inc.arrived.add(uid)
            inc.last_arrival_us = max(inc.last_arrival_us, t_us)
            out += self.advance(t_us)  # the last one through may end it now
        return out

    def advance(self, t_us: int) -> list[dict[str, Any]]:
        """Event time moved to ``t_us``: resolve incidents that went quiet, or whose stalled files arrived."""
        out = []
        quiet = int(self.cfg.quiet_s * US_PER_S)
        settle = int(self.cfg.settle_s * US_PER_S)
        for inc in list(self.open):
            # Each way out has its own instant, independent of when advance is called: the backtest calls it
            # at every anomaly, the streaming job every minute, and both must resolve at the same time.
            ways = [(inc.last_us + quiet, "quiet")]
            if inc.all_arrived:
                ways.append((max(inc.last_arrival_us, inc.last_us + settle), "arrived"))
            when, how = min(ways)
            if when <= t_us:
                inc.resolved_us, inc.resolution = when, how
                self.open.remove(inc)
                self.resolved.append(inc)
                out.append(self._event(inc, "resolved", when))
        self._forget(t_us)
        return out

    def add_lot(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """One lot record (``lots.LotJudge``), at the time it was judged (``judged_at``)."""
        t = parse_rfc3339_us(record["judged_at"])
        out = self.advance(t)
        lot, kind = record["lot"], record["kind"]
        unfinished = [f["uid"] for f in record["unfinished"]]
        cause = self._cause_of_lot(record, unfinished)
        if cause is not None:
            cause.lots.add(lot)
            self.explained_lots += 1
            if cause.resolved_us is None and t - cause.last_update_us >= self.cfg.update_every_s * US_PER_S:
                out.append(self._event(cause, "updated", t))
            return out
        home = next((i for i in self.open if i.kind == kind and i.stage == LOT_STAGE), None)
        opened = home is None
        if home is None:
            first = parse_rfc3339_us(record["finished_at"])
            home = Incident(incident_id=f"{kind}-{LOT_STAGE}-{lot}-{format_rfc3339(first)}", kind=kind,
                            stage=LOT_STAGE, scope="lot", scope_key=lot, started_us=first, last_us=t)
            self.open.append(home)
        home.lots.add(lot)
        home.last_us = max(home.last_us, t)
        for tenant in record["tenants"]:
            home.tenants[tenant] += 1
        for uid in unfinished:
            home.uids.add(uid)
            home.outstanding.add(uid)
            if len(home.first_uids) < SAMPLE_UIDS:
                home.first_uids.append(uid)
            self._by_uid.setdefault(uid, home)
        if kind == "lot_slow":
            home.lot_files += record["files"]
            if home.worst_observed_ms is None or record["duration_ms"] > home.worst_observed_ms:
                home.worst_observed_ms, home.expected_ms = record["duration_ms"], record["expected_ms"]
        # Scope from where the batches concentrate: one batch, one customer's batches, or everyone's.
        top = home.tenants.most_common(1)
        if len(home.lots) == 1:
            home.scope, home.scope_key = "lot", lot
        elif top and top[0][1] >= self.cfg.tenant_share * len(home.lots) and len(home.tenants) == 1:
            home.scope, home.scope_key = "tenant", top[0][0]
        else:
            home.scope, home.scope_key = "global", None
        if opened:
            out.append(self._event(home, "opened", t))
        elif t - home.last_update_us >= self.cfg.update_every_s * US_PER_S:
            out.append(self._event(home, "updated", t))
        return out

    def finish(self, t_us: int | None = None) -> list[dict[str, Any]]:
        """End of input: what is quiet by ``t_us`` (default: the last anomaly + quiet) resolves; the rest stays
        open (a finite input's end is not the passage of time)."""
        if t_us is None:
            return []
        return self.advance(t_us)

    # -- internals ---------------------------------------------------------------------------------------

    def _cause_of_lot(self, record: dict[str, Any], unfinished: list[str]) -> Incident | None:
        """The file-level incident (open, or resolved within ``remember_s``) that explains a lot record."""
        known = Counter(inc.incident_id for u in unfinished
                        if (inc := self._by_uid.get(u)) is not None and inc.stage != LOT_STAGE)
        if known:
            top_id, n = known.most_common(1)[0]
            # Half of its unfinished files in one incident: the batch is that incident's casualty.
            if 2 * n >= len(unfinished):
                return next(i for i in self.open + self.resolved if i.incident_id == top_id)
        # Else an incident that covers the batch's customers while it was in flight explains it.
        start, end = parse_rfc3339_us(record["submitted_at"]), parse_rfc3339_us(record["finished_at"])
        tenants = set(record["tenants"])
        for inc in self.open + self.resolved:
            if inc.stage == LOT_STAGE or inc.started_us > end or (inc.resolved_us or end) < start:
                continue
            if inc.scope == "global" or (inc.scope == "tenant" and inc.scope_key in tenants) or (
                    inc.scope == "lot" and inc.scope_key == record["lot"]):
                return inc
        return None

    def _forget(self, t_us: int) -> None:
        # An early arrival matters only while its stall can still open an incident (the open window).
        window = t_us - int(self.cfg.open_window_s * US_PER_S)
        if self._arrived_early and min(self._arrived_early.values()) < window:
            self._arrived_early = {u: t for u, t in self._arrived_early.items() if t >= window}
        horizon = t_us - int(self.cfg.remember_s * US_PER_S)
        while self.resolved and (self.resolved[0].resolved_us or 0) < horizon:
            inc = self.resolved.pop(0)
            for uid in inc.uids:
                if self._by_uid.get(uid) is inc:
                    del self._by_uid[uid]

    def _home(self, a: Anomaly) -> Incident | None:
        inc = self._by_uid.get(a.uid)
        if inc is not None and inc in self.open:
            return inc
        same = [i for i in self.open if i.kind == a.kind and i.stage == a.stage and i.covers(a)]
        if same:
            return same[0]
        if a.kind == "slow_trace":
            # A slow end to end during an open slowdown whose scope covers the file is that slowdown's.
            covering = [i for i in self.open if i.kind in ("slow_stage", "stalled") and i.covers(a)]
            if covering:
                return covering[0]
        if a.kind == "stalled":
            # A file so late at a slow stage that it was called stalled there is the slowdown's too.
            slow = [i for i in self.open if i.kind == "slow_stage" and i.stage == a.stage and i.covers(a)]
            if slow:
                return slow[0]
        return None

    def _open(self, key: tuple[str, str], members: list[tuple[int, Anomaly]], t: int) -> Incident | None:
        cfg = self.cfg
        tenants = Counter(m.tenant for _, m in members)
        lots = Counter(m.lot for _, m in members)
        uids = {m.uid for _, m in members}
        top_tenant, n_tenant = tenants.most_common(1)[0]
        top_lot, n_lot = lots.most_common(1)[0]
        if len(uids) == 1:
            scope, scope_key = "trace", next(iter(uids))
        elif top_tenant is not None and n_tenant >= cfg.tenant_share * len(members):
            if n_tenant < cfg.open_count:
                return None  # the tenant's own anomalies are not yet enough
            scope, scope_key = "tenant", top_tenant
        elif top_lot is not None and n_lot >= cfg.lot_share * len(members):
            if n_lot < cfg.open_count:
                return None
            scope, scope_key = "lot", top_lot
        else:
            scope, scope_key = "global", None
        # The first anomaly's own time (not when it was detected): the same id in the backtest and the stream.
        first = min(parse_rfc3339_us(m.event_time) for _, m in members)
        inc = Incident(
            incident_id=f"{key[0]}-{key[1]}-{scope}-{scope_key or 'all'}-{format_rfc3339(first)}",
            kind=key[0], stage=key[1], scope=scope, scope_key=scope_key, started_us=first, last_us=t,
        )
        for tq, m in members:
            if inc.covers(m):
                inc.join(m, tq, self._arrived_early)
                self._by_uid[m.uid] = inc
        self.open.append(inc)
        return inc

    def _event(self, inc: Incident, event: str, t_us: int) -> dict[str, Any]:
        inc.last_update_us = t_us
        quiet_since = t_us - int(self.cfg.quiet_s * US_PER_S)
        active = sum(1 for last in self._active.values() if last >= min(inc.started_us, quiet_since))
        record = {
            "incident_id": inc.incident_id,
            "event": event,
            "kind": inc.kind,
            "stage": inc.stage,
            "scope": inc.scope,
            "scope_key": inc.scope_key,
            "tenants": sorted(inc.tenants),
            "affected_tenants": len(inc.tenants),
            "active_tenants": active,
            "started_at": format_rfc3339(inc.started_us),
            "resolved_at": format_rfc3339(inc.resolved_us) if inc.resolved_us is not None else None,
            "at": format_rfc3339(t_us),
            "files": len(inc.uids) + inc.lot_files,
            "sample_uids": sorted(inc.first_uids),
            "lots": sorted(inc.lots)[:SAMPLE_LOTS],
            "arrived": len(inc.arrived),
            "worst_observed_ms": inc.worst_observed_ms,
            "expected_ms": inc.expected_ms,
            "message": _message(inc, event),
        }
        self.events.append(record)
        return record


def _message(inc: Incident, event: str) -> str:
    where = {"global": "everyone", "tenant": f"tenant {inc.scope_key}", "lot": f"lot {inc.scope_key}",
             "trace": f"file {inc.scope_key}"}[inc.scope]
    what = {"slow_stage": f"{inc.stage} is slow", "slow_trace": "files are slow end to end",
            "stalled": f"files stall before {inc.stage}", "failed": f"{inc.stage} fails",
            "lot_incomplete": "batches did not complete", "lot_slow": "batches take far longer than usual",
            }.get(inc.kind, inc.kind)
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
    return f"{head}{what} for {where} ({files}, {len(inc.tenants)} tenants){how}"
