"""Hand-made core records for tests: an anomaly, a lot verdict, a closed file's summary."""

from __future__ import annotations

from stagewatch.core.records import Anomaly, LotFile, LotRecord, TraceSummary, anomaly_id
from stagewatch.core.timeutil import US_PER_S, format_rfc3339

__all__ = ["MIN", "anomaly", "closed_summary", "lot_record"]

MIN = 60 * US_PER_S


def anomaly(kind: str, uid: str, stage: str, t_us: int, tenant: str | None, lot: str | None = None,
            observed: float = 900.0, baseline: str = "stage", cause_stage: str | None = None) -> Anomaly:
    return Anomaly(
        anomaly_id(kind, uid, stage, t_us), kind, uid, stage, None, tenant, lot, format_rfc3339(t_us),
        format_rfc3339(t_us), observed, 100.0, 250.0, observed / 250.0, 500, baseline, "critical", "wait", "m",
        cause_stage,
    )


def lot_record(lot: str, kind: str, finished_us: int, unfinished: list[str], tenant: str = "acme") -> LotRecord:
    return LotRecord(
        lot=lot, kind=kind, tenants=(tenant,), files=10, started_at=format_rfc3339(finished_us - MIN),
        submitted_at=format_rfc3339(finished_us - MIN), finished_at=format_rfc3339(finished_us),
        judged_at=format_rfc3339(finished_us + 120 * MIN), duration_ms=60_000.0,
        expected_ms=10_000.0 if kind == "lot_slow" else None,
        unfinished=tuple(LotFile(u, "stalled", tenant, "store_result") for u in unfinished), message=f"lot {lot}")


def closed_summary(uid: str, tenant: str, closed_us: int) -> TraceSummary:
    at = format_rfc3339(closed_us)
    return TraceSummary(uid=uid, tenant=tenant, lot=None, status="complete", first_time=at, last_time=at,
                        end_to_end_ms=None, stages=(), missing_stages=(), negative_gaps=0, closed_at=at)
