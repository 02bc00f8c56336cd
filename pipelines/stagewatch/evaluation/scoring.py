"""Scoring anomalies against labels: trace-level precision / recall / F1 per kind, and stall detection delay.

A label and a verdict match when they name the same file (uid) and the same kind; for ``slow_stage``,
``stalled`` and ``failed`` the stage must match too (a verdict at the wrong stage sends people to the wrong
service). A file flagged slow while still in a stage (``in_progress``) that then stalled there is scored by
its stall; given the files that arrived after their stall (``arrived``), a file labelled slow at the stage it
was declared stalled before is scored by its slow verdicts -- the stall was the first word, the arrival
corrected it (a stage slowed 20x passes a deadline of 8x its line). A verdict of a kind nobody labelled counts
as a false positive of that kind.
Several verdicts of one kind on one file count once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stagewatch.core.anomalies import IN_PROGRESS
from stagewatch.core.kinds import FILE_KINDS, KINDS, SLOW_STAGE, STALLED
from stagewatch.core.timeutil import parse_rfc3339_us

__all__ = ["IncidentMatch", "KindScore", "matched", "prf", "score_incidents", "score_kinds"]

_STAGED = frozenset(k.name for k in FILE_KINDS.values() if k.names_stage)


@dataclass(frozen=True)
class KindScore:
    kind: str
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return prf(self.tp, self.fp, self.fn)[0]

    @property
    def recall(self) -> float:
        return prf(self.tp, self.fp, self.fn)[1]

    @property
    def f1(self) -> float:
        return prf(self.tp, self.fp, self.fn)[2]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
        }


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1; a kind with nothing to find and nothing found scores 1.0 (nothing missed)."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    kind = row["kind"]
    stage = (row.get("stage") or "") if kind in _STAGED else ""
    return (row["uid"], kind, stage)


Key = tuple[str, str, str]  # (uid, kind, stage): stage "" for the kinds that name none


def matched(
    labels: Iterable[dict[str, Any]], anomalies: Iterable[dict[str, Any]],
    ambiguous: Iterable[dict[str, Any]] = (), arrived: Iterable[str] = (),
) -> tuple[dict[Key, dict[str, Any]], dict[Key, dict[str, Any]]]:
    """The labels and the verdicts ``score_kinds`` scores, by key (the first verdict of each): a verdict found
    and not labelled is a false positive of its kind."""
    came = set(arrived)
    truth = {_key(r): r for r in labels}
    unsure = {_key(r) for r in ambiguous} - truth.keys()
    found: dict[Key, dict[str, Any]] = {}
    for a in anomalies:
        key = _key(a)
        if key in unsure:
            continue
        if a.get("measure") == IN_PROGRESS and key not in truth and (key[0], STALLED, key[2]) in truth:
            # Flagged slow while still in the stage it then stalled in: true of it, and the stall verdict
            # that followed is what is scored (it is neither a slow stage to find nor a false one).
            continue
        if key[1] == STALLED and key[0] in came and key not in truth and (key[0], SLOW_STAGE, key[2]) in truth:
            # Clearly slow there, declared stalled, then it arrived: what it was is what its slow verdicts say.
            # (Not an ambiguous one, a little over the normal p99.9: a stall on it is a false one.)
            continue
        found.setdefault(key, a)
    return truth, found


def score_kinds(
    labels: Iterable[dict[str, Any]], anomalies: Iterable[dict[str, Any]],
    ambiguous: Iterable[dict[str, Any]] = (), arrived: Iterable[str] = (),
) -> tuple[list[KindScore], dict[str, float | int | None]]:
    """Per-kind scores, and stall detection delay (seconds from the file's last event to the verdict).
    ``ambiguous``: cases neither to find nor to miss (the zoo's between p99.9 and 1.5x it): a verdict on one
    is not counted at all. ``arrived``: the uids of files declared stalled that logged again after all (the
    drivers' ``Arrival``s); none given scores every stall as first said."""
    truth, found = matched(labels, anomalies, ambiguous, arrived)
    scores = []
    kinds = list(KINDS) + sorted(({k[1] for k in truth} | {k[1] for k in found}) - set(KINDS))
    for kind in kinds:
        t = {k for k in truth if k[1] == kind}
        f = {k for k in found if k[1] == kind}
        scores.append(KindScore(kind, len(t & f), len(f - t), len(t - f)))
    delays = []
    for key in truth.keys() & found.keys():
        if key[1] == STALLED:
            label, verdict = truth[key], found[key]
            delays.append((parse_rfc3339_us(verdict["detected_at"]) - parse_rfc3339_us(label["time"])) / 1e6)
    delay: dict[str, float | int | None] = {"n": len(delays), "median_s": None, "p95_s": None, "max_s": None}
    if delays:
        arr = np.asarray(delays)
        delay.update(
            median_s=round(float(np.median(arr)), 1),
            p95_s=round(float(np.percentile(arr, 95)), 1),
            max_s=round(float(arr.max()), 1),
        )
    return scores, delay


@dataclass(frozen=True)
class IncidentMatch:
    """How one injected fault showed up as incidents."""

    fault: str
    incidents: int  # incidents of the fault's kind, stage and scope that opened during it
    scope_ok: bool  # the matching incident names the right scope (the tenant for a tenant fault, else global)
    opened_after_s: float | None  # from the fault's start to the incident's opening
    resolved_after_end_s: float | None  # from the fault's end to the incident's resolution (None: unresolved)


def score_incidents(
    events: Iterable[dict[str, Any]], faults: Iterable[dict[str, Any]], slack_s: float = 900.0
) -> tuple[list[IncidentMatch], list[dict[str, Any]]]:
    """Match ``opened`` incidents to the manifest's faults: same kind (the one it settled on: files flagged slow
    while still in a stage open a slowdown, which becomes a stall when most of them stall) and stage, opened
    between the fault's start and its end + ``slack_s``. Returns one row per fault and the spurious incidents
    (matching none)."""
    events = list(events)
    settled = {e["incident_id"]: e["kind"] for e in events}  # the last event's kind
    opened = [{**e, "kind": settled[e["incident_id"]]} for e in events if e["event"] == "opened"]
    resolved = {e["incident_id"]: e for e in events if e["event"] == "resolved"}
    used: set[str] = set()
    rows = []
    for f in faults:
        start, end = parse_rfc3339_us(f["start"]), parse_rfc3339_us(f["end"])
        hits = [
            e for e in opened
            if e["kind"] == f["kind"] and e["stage"] == f["stage"]
            and start <= parse_rfc3339_us(e["at"]) <= end + slack_s * 1e6
        ]
        used.update(e["incident_id"] for e in hits)
        first = min(hits, key=lambda e: e["at"]) if hits else None
        want = ("tenant", f["tenant"]) if f.get("tenant") else ("global", None)
        done = resolved.get(first["incident_id"]) if first else None
        rows.append(IncidentMatch(
            fault=f["name"],
            incidents=len(hits),
            scope_ok=first is not None and (first["scope"], first["scope_key"]) == want,
            opened_after_s=(parse_rfc3339_us(first["at"]) - start) / 1e6 if first else None,
            resolved_after_end_s=(parse_rfc3339_us(done["resolved_at"]) - end) / 1e6 if done else None,
        ))
    spurious = [e for e in opened if e["incident_id"] not in used]
    return rows, spurious
