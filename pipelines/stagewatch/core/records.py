"""The records stagewatch emits -- anomalies, trace summaries, dead letters, lot verdicts, incident events -- and
their JSON shape (``to_dict``), the contract every sink and reader shares (``docs/records.md``).

They are frozen: a record built by one step is read, never changed, by the next (the streaming job sends them
between steps as they are; the sinks turn them into JSON at the edge).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple, Protocol

import orjson

__all__ = [
    "Anomaly",
    "DeadLetter",
    "IncidentEvent",
    "LotFile",
    "LotRecord",
    "Record",
    "StageTiming",
    "TraceSummary",
    "anomaly_id",
    "dead_letter",
    "dumps",
    "event_json",
    "without_payload",
]

#: A dead letter keeps this much of the line (or record) it is about: enough to find it, bounded whatever came in,
#: the same for every reason.
DEAD_LINE_CHARS = 1000


class Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def _set_slots(obj: Any, state: Any) -> None:
    """Unpickle a frozen slotted record, filling the fields a record pickled by an older release lacks with
    their defaults (the streaming job's buffers hold records across ``--update``)."""
    values = list(state) if isinstance(state, (list, tuple)) else [state.get(f.name) for f in fields(obj)]
    for i, f in enumerate(fields(obj)):
        object.__setattr__(obj, f.name, values[i] if i < len(values) else f.default)


def anomaly_id(kind: str, uid: str, stage: str, event_time_us: int) -> str:
    """Deterministic: the same verdict on the same input has the same id in every driver and every rerun."""
    key = f"{kind}\x1f{uid}\x1f{stage}\x1f{event_time_us}".encode()
    return hashlib.blake2b(key, digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class Anomaly:
    anomaly_id: str
    kind: str  # one of kinds.KINDS
    uid: str
    stage: str  # the slow / failed stage; for "stalled" the stage that did not arrive; "end_to_end"
    last_stage: str | None  # the last stage the file reached
    tenant: str | None
    lot: str | None
    event_time: str  # RFC 3339: when it happened (the stage's event; for stalls, the deadline)
    detected_at: str  # RFC 3339: the stream's event-time watermark when the verdict was made
    observed_ms: float | None
    expected_ms: float | None  # baseline median
    threshold_ms: float | None  # the alert line (for stalls: the deadline after the last stage)
    score: float | None  # observed / threshold: 1.0 is on the alert line
    baseline_n: int | None  # (decayed) number of samples behind the baseline
    # "tenant" when the tenant's own baseline judged (or its young key agreed with the stage's line that did:
    # ``judged_by._as_its_own``), "stage" for the stage-wide one
    baseline: str | None
    severity: str  # "warning", "error" or "critical"
    # What was measured: "wait" (since the previous stage's event), "latency" (reported by the log line),
    # "end_to_end", "deadline" (a stall); None for a failure.
    measure: str | None
    message: str
    # For a slow_trace: the stage that added most over its usual (``core.evidence``), the cause an incident
    # files it under; None when no stage stood out, and for every other kind.
    cause_stage: str | None = None

    def __setstate__(self, state: Any) -> None:
        _set_slots(self, state)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StageTiming:
    stage: str
    time: str  # RFC 3339
    duration_ms: float | None  # wait since the previous stage's event (clamped at 0); None for the first
    reported_ms: float | None  # what the log line itself reported (httpRequest.latency / duration_ms)
    # ok | slow | warmup (no baseline yet) | failed | start (first event) | skew (clock inversion, clamped)
    # | held (still waiting for the stage before it) | unordered (a stage outside the stage order)
    # | pending (the streaming job: judged downstream)
    verdict: str


@dataclass(frozen=True, slots=True)
class TraceSummary:
    uid: str
    tenant: str | None
    lot: str | None
    status: str  # one of kinds.TRACE_STATUSES
    first_time: str
    last_time: str
    end_to_end_ms: float | None  # first event to the terminal stage, when complete
    stages: tuple[StageTiming, ...]
    missing_stages: tuple[str, ...]  # required stages before the last one reached that never logged
    negative_gaps: int  # clock-skew inversions clamped to 0
    closed_at: str  # watermark when the summary was made

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped: lists, not tuples (a BigQuery REPEATED field takes a list)."""
        row = asdict(self)
        row["missing_stages"] = list(self.missing_stages)
        row["stages"] = list(row["stages"])
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> TraceSummary:
        """A summary read back from its JSON shape (a run's ``traces`` table)."""
        return cls(**{**row, "stages": tuple(StageTiming(**s) for s in row["stages"] or ()),
                      "missing_stages": tuple(row["missing_stages"] or ())})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that was not used, and why (``reason``: the parser's, ``late``, ``after_close``,
    ``internal_error``, ``bigquery_rejected``); ``source`` is the step that set it aside."""

    reason: str
    detail: str
    line: str  # the line (or record) it is about, cut to DEAD_LINE_CHARS (a rejected line: the payload setting)
    received_at: str  # RFC 3339
    source: str  # parse, late, assemble, bigquery:<table>; a stream step's name for internal_error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def event_json(ev: Any) -> str:
    """A ``StageEvent`` set aside after parsing (late, from the future ...), as its dead letter's ``line``."""
    return orjson.dumps(ev._asdict()).decode()


def dead_letter(reason: str, detail: str, line: str, received_at: str, source: str,
                keep: int = DEAD_LINE_CHARS) -> DeadLetter:
    """``keep``: characters of ``line`` kept (a rejected line: as the parser's dead-letter payload says)."""
    return DeadLetter(reason, detail, line[:keep], received_at, source)


def without_payload(dl: DeadLetter) -> DeadLetter:
    """The dead letter as written with the payload ``none``: what it is about, not what it held."""
    return replace(dl, line="") if dl.line else dl


class LotFile(NamedTuple):
    """One file of a lot, as the lot saw it close."""

    uid: str
    status: str
    tenant: str | None
    last_stage: str | None


@dataclass(frozen=True, slots=True)
class LotRecord:
    """A verdict about a batch of files (``kind``: ``lot_incomplete`` or ``lot_slow``). The field order is the
    JSON's."""

    lot: str
    tenants: tuple[str, ...]
    files: int
    started_at: str
    submitted_at: str  # its last file's first event: the whole batch is in from then on
    finished_at: str
    judged_at: str  # when it had been quiet long enough to judge
    duration_ms: float  # submitted to finished
    kind: str
    expected_ms: float | None  # the usual for lots of its size (lot_slow)
    unfinished: tuple[LotFile, ...]
    message: str
    # lot_slow: the one file without which the batch would not have been slow (it finished last, the rest in
    # time): a lot slow only because of one file is that file's story, and opens no incident.
    slowed_by: str | None = None

    def __setstate__(self, state: Any) -> None:
        _set_slots(self, state)

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["tenants"] = list(self.tenants)
        row["unfinished"] = [f._asdict() for f in self.unfinished]
        return row


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """An incident opened, updated or resolved (``event``). The field order is the JSON's."""

    incident_id: str
    event: str  # opened, updated, resolved
    kind: str
    stage: str
    scope: str  # trace, lot, tenant, global
    scope_key: str | None  # the tenant or lot, for those scopes
    tenants: tuple[str, ...]  # affected
    affected_tenants: int
    active_tenants: int
    started_at: str
    resolved_at: str | None
    at: str  # when this event was made (event time)
    files: int
    sample_uids: tuple[str, ...]
    lots: tuple[str, ...]
    arrived: int  # held-up files that came through after all
    worst_observed_ms: float | None
    expected_ms: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        for name in ("tenants", "sample_uids", "lots"):
            row[name] = list(row[name])
        return row


def dumps(record: Record | dict[str, Any]) -> bytes:
    """One JSON line (without the newline)."""
    if isinstance(record, dict):
        return orjson.dumps(record)
    return orjson.dumps(record.to_dict())
