"""Incidents: per-file anomalies grouped into what people act on — one slowdown, one incident, with a scope.

An ``IncidentTracker`` is fed anomalies in the order they are detected (the backtest's order; event time)
and emits incident events: ``opened`` when enough anomalies of one kind and stage concentrate, ``updated``
(rate-limited) as files join, ``resolved`` when none has joined for a while (event time: four of its usual gaps
between files, 5 to 15 minutes; ``Incident.quiet_us``) -- or, for
stalls, once every file it holds has arrived after all (``arrived``) and none stalled for ``settle_s``.

Lots (``add_lot``: the records of ``lots.LotTracker``) are judged hours after their files, when the batch
went quiet. A lot whose unfinished files belong to an incident already known is that incident's consequence
and opens nothing (its record stays in the ``lots`` table); an unexplained one opens an incident of stage
``lot``: scope ``lot`` for one batch, widening to the tenant or to everyone as more batches of the same kind
join it. An incomplete lot's incident resolves early when its unfinished files arrive.

Scope comes from where the opening anomalies concentrate, not from one file: when one tenant accounts for
``tenant_share`` of them the incident is that tenant's (a slow home network, a wrong client setting) and
only that tenant's files join it; else one lot's; else ``global`` (many tenants), with affected and active
tenant counts. A customer's anomalies also open its incident on their own when they are too many for its
traffic (``core.candidates``: a bar that scales with the customer's files), and a customer's incident widens
to everyone when the same cause then reaches the others: one cause, one incident.

An anomaly joins only an incident that explains it (``candidates.cause_key``): a slow end-to-end file the
incident of the stage that added most to it (or that stage's stall), never one of another stage; one whose
stages are not named opens its own only when ``slow_trace_factor`` times as many gather.

Timeline (open_count 5, window 15 min)::

    10:00-10:03  5 slow analyse from 4 tenants       -> opened  (global, analyse, 5 files)
    10:03-10:30  more slow analyse, slow end to end   -> updated (at most every update_every_s)
    10:35        nothing new for 5 min (211 files in  -> resolved (resolved_at 10:35)
                 30 min: 4 gaps is well under 5 min)
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from stagewatch.core.bar import Bar
from stagewatch.core.candidates import cause_key, weights
from stagewatch.core.incident import LOT_STAGE, SAMPLE_LOTS, SAMPLE_UIDS, Incident, IncidentConfig, message
from stagewatch.core.kinds import LOT_SLOW, SLOW_STAGE, STALLED
from stagewatch.core.records import Anomaly, IncidentEvent, LotRecord, TraceSummary
from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us

__all__ = ["IncidentConfig", "IncidentTracker"]


def _event_us(a: Anomaly) -> int:
    return parse_rfc3339_us(a.detected_at)


_LATE = frozenset({SLOW_STAGE, STALLED})
_HOUR_US = 3600 * US_PER_S
_TENANT_MEMORY_US = 24 * _HOUR_US  # how long before the oldest incident that can count it a tenant is kept


def _explains(inc: Incident, key: tuple[str, str]) -> bool:
    """Whether an open incident is the cause ``key`` points at: the same kind and stage, or lateness at the
    same stage either way -- a file slow at a stage where files stall is that stall's (held, then let go),
    and a file so late at a slow stage that it was called stalled there is the slowdown's."""
    return inc.stage == key[1] and (inc.kind == key[0] or (inc.kind in _LATE and key[0] in _LATE))


class IncidentTracker:
    """Anomalies in (detection order) → ``IncidentEvent`` records (``docs/records.md``)."""

    def __init__(self, cfg: IncidentConfig | None = None) -> None:
        self.cfg = cfg or IncidentConfig()
        self.open: list[Incident] = []
        self.resolved: list[Incident] = []
        self._candidates: dict[tuple[str, str], deque[tuple[int, Anomaly]]] = {}
        self._by_uid: dict[str, Incident] = {}
        self._active: dict[str, int] = {}  # tenant -> last time it had any anomaly or file (active tenants)
        self.events: list[IncidentEvent] = []
        self.explained_lots = 0  # lot records that an incident already known explained
        # Stalled files that arrived before any incident held them (their stall still a candidate): uid -> time.
        self._arrived_early: dict[str, int] = {}
        self.bar = Bar(self.cfg)  # traffic and noise: what an incident's bar is measured against

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A tracker pickled by an older release (Beam state across --update) lacks what came later.
        self.__dict__.update({"explained_lots": 0, "_arrived_early": {},
                              "bar": Bar(state.get("cfg") or IncidentConfig()), **state})

    def incident_of(self, uid: str) -> str | None:
        """The id of the incident a file's anomalies joined (while it is open or remembered)."""
        inc = self._by_uid.get(uid)
        return inc.incident_id if inc is not None else None

    # -- input -------------------------------------------------------------------------------------------

    def seen_tenant(self, tenant: str | None, t_us: int) -> None:
        """A file of ``tenant`` was seen (any trace summary): the denominator of a global incident's reach."""
        if tenant:
            self._active[tenant] = max(self._active.get(tenant, 0), t_us)

    def closed_files(self, tenant: str, end_us: int, n: int) -> None:
        """``n`` files of ``tenant`` counted in the activity interval ending at ``end_us`` (``core.bar``)."""
        self.bar.traffic.add(tenant, end_us, n)

    def observe_summary(self, summary: TraceSummary) -> list[IncidentEvent]:
        """A trace closed: its tenant is active, the file counts in its traffic (``core.bar``), and event time
        has reached its close (quiet incidents resolve even when no anomaly follows them)."""
        t = parse_rfc3339_us(summary.closed_at)
        self.seen_tenant(summary.tenant, t)
        self.bar.file(summary)
        return self.advance(t)

    def add(self, a: Anomaly) -> list[IncidentEvent]:
        """One anomaly; returns the incident events it caused (also kept in ``events``)."""
        t = _event_us(a)
        out = self.advance(t)
        self.seen_tenant(a.tenant, t)
        key = cause_key(a)
        # Every anomaly, whatever it joins, is what the cause flags per hour (the bar's noise; a median).
        self.bar.anomaly(a, key)
        home = self._home(a, key)
        if home is not None:
            home.join(a, t, self._arrived_early)
            self._by_uid[a.uid] = home
            if home.kind == SLOW_STAGE and a.kind == STALLED and a.stage == home.stage:
                home.stalled_here.add(a.uid)
                if 2 * len(home.stalled_here) >= len(home.uids):
                    # Files flagged slow while still in the stage (at its line) opened it; now most of them
                    # stalled there: it is a stall (it resolves when they arrive), said at once.
                    home.kind = STALLED
                    out.append(self._event(home, "updated", t))
                    return out
            if t - home.last_update_us >= self.cfg.update_every_s * US_PER_S:
                out.append(self._event(home, "updated", t))
            return out
        cfg = self.cfg
        queue = self._candidates.setdefault(key, deque())
        queue.append((t, a))
        units = cfg.slow_trace_factor  # weights' units: an own verdict counts slow_trace_factor, an echo 1
        horizon = t - int(max(cfg.open_window_s, cfg.tenant_window_s) * US_PER_S)
        while queue and queue[0][0] < horizon:
            queue.popleft()
        window = int(cfg.open_window_s * US_PER_S)
        recent = [(tq, m) for tq, m in queue if tq > t - window]
        found = None
        k = sum(weights((m for _, m in recent), units).values())
        if k >= cfg.open_count * units and self.bar.surprising(key, k // units, None, t, window):
            found = self._open(key, recent, t)
        if found is None and a.tenant and self.bar.tenant_met(key, queue, a.tenant, t):
            found = self._open(key, [(tq, m) for tq, m in queue if m.tenant == a.tenant], t, ("tenant", a.tenant))
        if found is not None:
            inc, event = found
            self._candidates[key] = deque((tq, m) for tq, m in queue if not inc.covers(m))
            out.append(self._event(inc, event, t))
        return out

    def arrived(self, uid: str, t_us: int) -> list[IncidentEvent]:
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

    def advance(self, t_us: int) -> list[IncidentEvent]:
        """Event time moved to ``t_us``: resolve incidents that went quiet, or whose stalled files arrived."""
        out = []
        settle = int(self.cfg.settle_s * US_PER_S)
        for inc in list(self.open):
            # Each way out has its own instant, independent of when advance is called: the backtest calls it
            # at every anomaly, the streaming job every minute, and both must resolve at the same time.
            ways = [(inc.last_us + inc.quiet_us(self.cfg), "quiet")]
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

    def add_lot(self, record: LotRecord) -> list[IncidentEvent]:
        """One lot record (``lots.LotJudge``), at the time it was judged (``judged_at``)."""
        t = parse_rfc3339_us(record.judged_at)
        out = self.advance(t)
        lot, kind = record.lot, record.kind
        unfinished = [f.uid for f in record.unfinished]
        if kind == LOT_SLOW and record.slowed_by:
            # Slow only because of one file: that file's story (its verdict, its incident), not the batch's.
            self.explained_lots += 1
            return out
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
            first = parse_rfc3339_us(record.finished_at)
            home = Incident(incident_id=f"{kind}-{LOT_STAGE}-{lot}-{format_rfc3339(first)}", kind=kind,
                            stage=LOT_STAGE, scope="lot", scope_key=lot, started_us=first, last_us=t)
            self.open.append(home)
        home.lots.add(lot)
        home.last_us = max(home.last_us, t)
        for tenant in record.tenants:
            home.tenants[tenant] += 1
        for uid in unfinished:
            home.uids.add(uid)
            home.outstanding.add(uid)
            if len(home.first_uids) < SAMPLE_UIDS:
                home.first_uids.append(uid)
            self._by_uid.setdefault(uid, home)
        if kind == LOT_SLOW:
            home.lot_files += record.files
            if home.worst_observed_ms is None or record.duration_ms > home.worst_observed_ms:
                home.worst_observed_ms, home.expected_ms = record.duration_ms, record.expected_ms
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

    def finish(self, t_us: int | None = None) -> list[IncidentEvent]:
        """End of input: what is quiet by ``t_us`` (default: the last anomaly + quiet) resolves; the rest stays
        open (a finite input's end is not the passage of time)."""
        if t_us is None:
            return []
        return self.advance(t_us)

    # -- internals ---------------------------------------------------------------------------------------

    def _cause_of_lot(self, record: LotRecord, unfinished: list[str]) -> Incident | None:
        """The file-level incident (open, or resolved within ``remember_s``) that explains a lot record."""
        known = Counter(inc.incident_id for u in unfinished
                        if (inc := self._by_uid.get(u)) is not None and inc.stage != LOT_STAGE)
        if known:
            top_id, _ = known.most_common(1)[0]
            # Half of its unfinished files in incidents already known: the batch is their casualty, filed under
            # the one that took most (a batch in flight through a stall, then a failure burst, then a missing
            # completion check lost files to all three: not a fourth incident of its own).
            if 2 * sum(known.values()) >= len(unfinished):
                return next(i for i in self.open + self.resolved if i.incident_id == top_id)
        # Else an incident that covers the batch's customers while it was in flight explains it.
        start, end = parse_rfc3339_us(record.submitted_at), parse_rfc3339_us(record.finished_at)
        tenants = set(record.tenants)
        for inc in self.open + self.resolved:
            if inc.stage == LOT_STAGE or inc.started_us > end or (inc.resolved_us or end) < start:
                continue
            if inc.scope == "global" or (inc.scope == "tenant" and inc.scope_key in tenants) or (
                    inc.scope == "lot" and inc.scope_key == record.lot):
                return inc
        return None

    def _forget(self, t_us: int) -> None:
        # An early arrival matters only while its stall can still open an incident (the open window).
        window = t_us - int(self.cfg.open_window_s * US_PER_S)
        if self._arrived_early and min(self._arrived_early.values()) < window:
            self._arrived_early = {u: t for u, t in self._arrived_early.items() if t >= window}
        # Tenants last active more than a day before any incident that can still count them: log lines with
        # made-up tenant names grew this without bound. Once an hour: it is a pass over every tenant.
        if t_us >= self.__dict__.get("_next_sweep_us", 0):
            oldest = min([inc.started_us for inc in self.open] + [t_us]) - _TENANT_MEMORY_US
            self._active = {tenant: last for tenant, last in self._active.items() if last >= oldest}
            self._next_sweep_us = t_us + _HOUR_US
        horizon = t_us - int(self.cfg.remember_s * US_PER_S)
        while self.resolved and (self.resolved[0].resolved_us or 0) < horizon:
            inc = self.resolved.pop(0)
            for uid in inc.uids:
                if self._by_uid.get(uid) is inc:
                    del self._by_uid[uid]

    def _home(self, a: Anomaly, key: tuple[str, str]) -> Incident | None:
        """The open incident ``a`` (filed under ``key``, its ``cause_key``) joins, if any."""
        inc = self._by_uid.get(a.uid)
        if inc is not None and inc in self.open:
            return inc
        same = [i for i in self.open if (i.kind, i.stage) == key and i.covers(a)]
        if same:
            return same[0]
        near = [i for i in self.open if _explains(i, key) and i.covers(a)]
        return near[0] if near else None

    def _open(self, key: tuple[str, str], members: list[tuple[int, Anomaly]], t: int,
              scoped: tuple[str, str] | None = None) -> tuple[Incident, str] | None:
        """The incident ``members`` open (``opened``), or the narrower one of the same cause they widen to
        everyone (``updated``); None while a tenant's or lot's share is not yet enough. ``scoped``: the
        scope already decided (a tenant over its own bar)."""
        cfg = self.cfg
        weight = weights((m for _, m in members), cfg.slow_trace_factor)
        owner = {m.uid: (m.tenant, m.lot) for _, m in members}
        tenants: Counter[str | None] = Counter()
        lots: Counter[str | None] = Counter()
        for uid, w in weight.items():
            tenants[owner[uid][0]] += w
            lots[owner[uid][1]] += w
        total = sum(weight.values())
        need = cfg.open_count * cfg.slow_trace_factor  # in weights' units
        top_tenant, n_tenant = tenants.most_common(1)[0]
        top_lot, n_lot = lots.most_common(1)[0]
        scope: str
        scope_key: str | None
        if scoped is not None:
            scope, scope_key = scoped
        elif len(weight) == 1:
            scope, scope_key = "trace", next(iter(weight))
        elif top_lot is not None and n_lot >= cfg.lot_share * total:
            # The narrowest that holds them: one batch (of one customer) before the customer.
            if n_lot < need:
                return None
            scope, scope_key = "lot", top_lot
        elif (top_tenant is not None and n_tenant >= cfg.tenant_share * total
              and self.bar.its_own(top_tenant, n_tenant, total, t)):
            if n_tenant < need:
                return None  # the tenant's own anomalies are not yet enough (its own bar may still be met)
            scope, scope_key = "tenant", top_tenant
        else:
            scope, scope_key = "global", None
        inc = self._narrower(key, scope, scope_key)
        event = "updated"
        if inc is not None:  # the same cause, first seen at one batch or customer, reaches more
            inc.scope, inc.scope_key = scope, scope_key
        else:
            # The first anomaly's own time (not when it was detected): the same id in the backtest and the stream.
            first = min(parse_rfc3339_us(m.event_time) for _, m in members)
            inc = Incident(
                incident_id=f"{key[0]}-{key[1]}-{scope}-{scope_key or 'all'}-{format_rfc3339(first)}",
                kind=key[0], stage=key[1], scope=scope, scope_key=scope_key, started_us=first, last_us=t,
            )
            self.open.append(inc)
            event = "opened"
        for tq, m in members:
            if inc.covers(m):
                inc.join(m, tq, self._arrived_early)
                self._by_uid[m.uid] = inc
        return inc, event

    def _narrower(self, key: tuple[str, str], scope: str, scope_key: str | None) -> Incident | None:
        """An open incident of the same cause whose scope the new one contains: a lot's within its customer's,
        a lot's or a customer's within everyone's. It widens instead of a second incident opening."""
        for inc in self.open:
            if (inc.kind, inc.stage) != key:  # the same cause only: a customer's stall is not everyone's slowdown
                continue
            if scope == "global" and inc.scope in ("tenant", "lot"):
                return inc
            if scope == "tenant" and inc.scope == "lot" and set(inc.tenants) == {scope_key}:
                return inc
        return None

    def _event(self, inc: Incident, event: str, t_us: int) -> IncidentEvent:
        inc.last_update_us = t_us
        quiet_since = t_us - int(self.cfg.quiet_s * US_PER_S)
        active = sum(1 for last in self._active.values() if last >= min(inc.started_us, quiet_since))
        record = IncidentEvent(
            incident_id=inc.incident_id,
            event=event,
            kind=inc.kind,
            stage=inc.stage,
            scope=inc.scope,
            scope_key=inc.scope_key,
            tenants=tuple(sorted(inc.tenants)),
            affected_tenants=len(inc.tenants),
            active_tenants=active,
            started_at=format_rfc3339(inc.started_us),
            resolved_at=format_rfc3339(inc.resolved_us) if inc.resolved_us is not None else None,
            at=format_rfc3339(t_us),
            files=len(inc.uids) + inc.lot_files,
            sample_uids=tuple(sorted(inc.first_uids)),
            lots=tuple(sorted(inc.lots)[:SAMPLE_LOTS]),
            arrived=len(inc.arrived),
            worst_observed_ms=inc.worst_observed_ms,
            expected_ms=inc.expected_ms,
            message=message(inc, event),
        )
        self.events.append(record)
        return record
