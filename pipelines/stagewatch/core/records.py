"""The records stagewatch emits: anomalies and trace summaries (the contract of the README), and their JSON.

Every consumer (the backtest's files, the streaming job's sinks, the evaluators) reads these shapes; the
field names and meanings are documented in README.md under "Records".
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from stagewatch.core.timeutil import format_duration_ms

__all__ = [
    "KINDS",
    "Anomaly",
    "StageTiming",
    "TraceSummary",
    "anomaly_id",
    "dumps",
    "slow_message",
    "stall_message",
]

KINDS = ("slow_stage", "slow_trace", "stalled", "failed")
TRACE_STATUSES = ("complete", "stalled", "failed", "open")


def anomaly_id(kind: str, uid: str, stage: str, event_time_us: int) -> str:
    """Deterministic: the same verdict on the same input has the same id in every driver and every rerun."""
    key = f"{kind}\x1f{uid}\x1f{stage}\x1f{event_time_us}".encode()
    return hashlib.blake2b(key, digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class Anomaly:
    anomaly_id: str
    kind: str  # one of KINDS
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
    baseline: str | None  # "tenant" when the tenant's own baseline judged, "stage" for the stage-wide one
    severity: str  # "warning", "error" or "critical"
    # What was measured: "wait" (since the previous stage's event), "latency" (reported by the log line),
    # "end_to_end", "deadline" (a stall); None for a failure.
    measure: str | None
    message: str

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
    verdict: str


@dataclass(frozen=True, slots=True)
class TraceSummary:
    uid: str
    tenant: str | None
    lot: str | None
    status: str  # one of TRACE_STATUSES
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


def dumps(record: Anomaly | TraceSummary | dict[str, Any]) -> bytes:
    """One JSON line (without the newline)."""
    if isinstance(record, dict):
        return orjson.dumps(record)
    return orjson.dumps(record.to_dict())


def slow_message(
    stage: str, uid: str, observed_ms: float, median_ms: float, threshold_ms: float, tenant_baseline: bool,
    tenant: str | None, measure: str = "wait",
) -> str:
    whose = f" for {tenant}" if tenant_baseline and tenant else ""
    if stage == "end_to_end":
        head = f"{uid} took {format_duration_ms(observed_ms)} end to end"
    elif measure == "latency":
        head = f"{stage} of {uid} took {format_duration_ms(observed_ms)} (as its log line reports)"
    else:
        head = f"{stage} of {uid} took {format_duration_ms(observed_ms)}"
    return (
        f"{head}; usually {format_duration_ms(median_ms)}{whose} at this hour, "
        f"alert above {format_duration_ms(threshold_ms)}"
    )


def stall_message(
    uid: str, missing: str, last: str, waited_ms: float, median_ms: float, deadline_ms: float
) -> str:
    return (
        f"{uid} has not reached {missing} {format_duration_ms(waited_ms)} after {last}; "
        f"{missing} usually comes {format_duration_ms(median_ms)} after, "
        f"stalled when nothing arrives within {format_duration_ms(deadline_ms)}"
    )
