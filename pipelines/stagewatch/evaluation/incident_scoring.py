"""Incidents against the faults that caused them: one incident per fault, its scope, its timing, its files.

``Recorder`` takes replay's records through the incident layer exactly as ``stagewatch replay --incidents``
does (``core.feed.BacktestFeed``: anomalies, arrivals of stalled files, trace summaries, and the lots they
make) and keeps the files each incident held. ``score`` then gives each incident to the fault whose files it
holds most of (none: spurious) and, per fault: how many incidents it got, whether the main one (most of its
files) has the fault's scope, how soon it opened after the fault began, how soon it resolved after the fault
ended, and its file precision (its files the fault made anomalous) and recall (of the fault's files that
were flagged, those it holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from stagewatch.core.feed import BacktestFeed
from stagewatch.core.measurements import Arrival
from stagewatch.core.records import Anomaly, TraceSummary
from stagewatch.core.timeutil import parse_rfc3339_us

__all__ = ["FaultOutcome", "FaultTruth", "Recorder", "score"]


@dataclass(frozen=True)
class FaultTruth:
    name: str
    scope: str  # global, tenant, lot
    key: str | None  # the tenant or lot
    start_us: int
    end_us: int
    labelled: frozenset[str]  # the files it made anomalous (its labels)


@dataclass(frozen=True)
class FaultOutcome:
    fault: str
    flagged: int  # its labelled files that got any verdict: what an incident can gather
    incidents: int  # incidents that hold most of their files from it
    scope_ok: bool  # the main incident's last scope is the fault's
    opened_after_s: float | None  # fault start -> the main incident's opening
    started_after_s: float | None  # fault start -> the main incident's first anomaly (its started_at)
    resolved_after_end_s: float | None  # fault end -> the main incident's resolution (None: still open)
    precision: float | None  # the main incident's files that are the fault's
    recall: float | None  # the fault's flagged files the main incident holds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recorder:
    """Replay's callbacks → incident events (as dicts) and the files of every incident."""

    def __init__(self) -> None:
        self.feed = BacktestFeed(incidents=True, lots=False)
        self.events: list[dict[str, Any]] = []
        self.files: dict[str, set[str]] = {}
        self.flagged: set[str] = set()

    def anomaly(self, a: Anomaly) -> None:
        self.flagged.add(a.uid)
        self._take(self.feed.anomaly(a))

    def summary(self, s: TraceSummary) -> None:
        self._take(self.feed.summary(s))

    def arrival(self, a: Arrival) -> None:
        self._take(self.feed.arrival(a))

    def finish(self) -> None:
        """End of input: what is still open keeps the files it has."""
        tracker = self.feed.tracker
        assert tracker is not None
        for inc in tracker.open:
            self.files[inc.incident_id] = set(inc.uids)

    def _take(self, rows: list[tuple[str, Any]]) -> None:
        tracker = self.feed.tracker
        assert tracker is not None
        for _, event in rows:
            self.events.append(event.to_dict())
            if event.event == "resolved":  # forgotten some hours later: keep its files now
                inc = next(i for i in reversed(tracker.resolved) if i.incident_id == event.incident_id)
                self.files[inc.incident_id] = set(inc.uids)


def score(events: Iterable[dict[str, Any]], files: dict[str, set[str]], faults: list[FaultTruth],
          flagged: set[str]) -> tuple[list[FaultOutcome], list[dict[str, Any]]]:
    """One outcome per fault, and the opening events of the incidents that hold none of any fault's files."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_id.setdefault(e["incident_id"], []).append(e)
    owner: dict[str, list[str]] = {f.name: [] for f in faults}
    spurious = []
    for inc_id, evs in by_id.items():
        held = files.get(inc_id, set())
        overlap = [(len(held & f.labelled), f.name) for f in faults]
        best = max(overlap, default=(0, ""))
        if best[0] == 0:
            spurious.append(evs[0])
        else:
            owner[best[1]].append(inc_id)
    outcomes = []
    for f in faults:
        gathered = f.labelled & flagged
        mine = owner[f.name]
        if not mine:
            outcomes.append(FaultOutcome(f.name, len(gathered), 0, False, None, None, None, None, None))
            continue
        main = max(mine, key=lambda i: (len(files.get(i, set()) & f.labelled), i))
        evs, held = by_id[main], files.get(main, set())
        last = evs[-1]
        opened = next((e for e in evs if e["event"] == "opened"), evs[0])
        done = next((e for e in evs if e["event"] == "resolved"), None)
        want = (f.scope, f.key if f.scope != "global" else None)
        outcomes.append(FaultOutcome(
            fault=f.name, flagged=len(gathered), incidents=len(mine),
            scope_ok=(last["scope"], last["scope_key"]) == want,
            opened_after_s=(parse_rfc3339_us(opened["at"]) - f.start_us) / 1e6,
            started_after_s=(parse_rfc3339_us(opened["started_at"]) - f.start_us) / 1e6,
            resolved_after_end_s=(parse_rfc3339_us(done["resolved_at"]) - f.end_us) / 1e6 if done else None,
            precision=len(held & f.labelled) / len(held) if held else None,
            recall=len(held & gathered) / len(gathered) if gathered else None,
        ))
    return outcomes, spurious
