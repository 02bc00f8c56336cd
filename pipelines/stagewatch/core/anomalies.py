"""One builder per anomaly kind: what a verdict says about a file, made the same way by both drivers.

The backtest's traces and judge, and the streaming job's judging and stall steps, call these and nothing else to
make an ``Anomaly``: who (``FileRef``), where, when, how bad against which baseline, and the sentence a support
person reads.
"""

from __future__ import annotations

from stagewatch.core.baselines import END_TO_END, Snapshot
from stagewatch.core.kinds import FAILED, SLOW_STAGE, SLOW_TRACE, STALLED
from stagewatch.core.measurements import FileRef, Measurement, StallInfo
from stagewatch.core.records import Anomaly, anomaly_id
from stagewatch.core.timeutil import US_PER_MS, format_duration_ms, format_rfc3339

__all__ = ["IN_PROGRESS", "failed", "overdue", "overdue_at", "slow", "slow_message", "stall_message", "stalled",
           "where_it_went"]

# The ``measure`` of a slow verdict made while the file was still in the stage (its wait so far).
IN_PROGRESS = "in_progress"


def _anomaly(kind: str, file: FileRef, stage: str, last_stage: str | None, t_us: int, now_us: int, *,
             observed_ms: float | None, severity: str, message: str, expected_ms: float | None = None,
             threshold_ms: float | None = None, score: float | None = None, baseline_n: int | None = None,
             baseline: str | None = None, measure: str | None = None, cause_stage: str | None = None) -> Anomaly:
    return Anomaly(
        anomaly_id=anomaly_id(kind, file.uid, stage, t_us),
        kind=kind,
        uid=file.uid,
        stage=stage,
        last_stage=last_stage,
        tenant=file.tenant,
        lot=file.lot,
        event_time=format_rfc3339(t_us),
        detected_at=format_rfc3339(now_us),
        observed_ms=observed_ms,
        expected_ms=expected_ms,
        threshold_ms=threshold_ms,
        score=score,
        baseline_n=baseline_n,
        baseline=baseline,
        severity=severity,
        measure=measure,
        message=message,
        cause_stage=cause_stage,
    )


def slow(file: FileRef, stage: str, last_stage: str | None, m: Measurement, snap: Snapshot, by_tenant: bool,
         now_us: int, named: tuple[tuple[str, float], ...] = (), since: str = "") -> Anomaly:
    """``slow_stage`` (a stage's wait or reported latency) or ``slow_trace`` (``m`` end to end) over ``snap``'s
    line; ``stage`` is the stage's name (``end_to_end`` for a whole file). ``named``: for a whole file, the
    stages that added most over their usual, and by how much (``core.evidence``). ``since``: for a wait across
    skipped optional stages, what it was measured from (its usual is that path's)."""
    ratio = m.value_ms / snap.threshold_ms
    return _anomaly(
        SLOW_TRACE if m.measure == "end_to_end" else SLOW_STAGE, file, stage, last_stage, m.t_us, now_us,
        observed_ms=m.value_ms,
        expected_ms=snap.median_ms,
        threshold_ms=snap.threshold_ms,
        score=ratio,
        baseline_n=int(snap.n),
        baseline="tenant" if by_tenant else "stage",
        severity="critical" if ratio >= 2 else "warning",
        measure=m.measure,
        message=slow_message(stage, file.uid, m.value_ms, snap.median_ms, snap.threshold_ms, by_tenant, file.tenant,
                             m.measure, since) + where_it_went(named),
        cause_stage=named[0][0] if named else None,
    )


def stalled(file: FileRef, missing: str, last_stage: str, last_t_us: int, deadline_us: int, stall: StallInfo,
            now_us: int) -> Anomaly:
    """The stage ``missing`` did not come by ``deadline_us`` after ``last_stage`` (logged at ``last_t_us``);
    declared at ``now_us``."""
    waited = (now_us - last_t_us) / US_PER_MS
    allowed = stall.allowed_ms
    return _anomaly(
        STALLED, file, missing, last_stage, deadline_us, now_us,
        observed_ms=waited,
        expected_ms=stall.median_ms,
        threshold_ms=allowed,
        score=waited / allowed if allowed > 0 else None,
        baseline_n=stall.n,
        baseline="tenant" if stall.by_tenant else "stage",
        severity="critical",
        measure="deadline",
        message=stall_message(file.uid, missing, last_stage, waited, stall.median_ms, allowed),
    )


def overdue_at(last_t_us: int, stall: StallInfo, ttl_us: int | None = None) -> int | None:
    """When a file logged at ``last_t_us`` and not seen since is past the awaited stage's line: flagged slow
    then, still in the stage. None when its stall comes as soon (a stall factor of 1), there is no line, or
    it falls past ``ttl_us`` after that time (the file is let go before: nothing more is said of it)."""
    if stall.line_ms is None or stall.line_ms >= stall.allowed_ms:
        return None
    at = last_t_us + int(stall.line_ms * US_PER_MS)
    return None if ttl_us is not None and at >= last_t_us + ttl_us else at


def overdue(file: FileRef, stage: str, last_stage: str, stall: StallInfo, at_us: int) -> Anomaly:
    """``slow_stage`` of a file still in ``stage``: nothing logged since ``last_stage`` by the stage's line, at
    ``at_us`` (``overdue_at``), which is when it is made. What it took so far is the line; its stall, if it
    comes, says more."""
    line = stall.line_ms
    assert line is not None
    whose = " for " + file.tenant if stall.by_tenant and file.tenant else ""
    return _anomaly(
        SLOW_STAGE, file, stage, last_stage, at_us, at_us,
        observed_ms=line,
        expected_ms=stall.median_ms,
        threshold_ms=line,
        score=1.0,
        baseline_n=stall.n,
        baseline="tenant" if stall.by_tenant else "stage",
        severity="warning",
        measure=IN_PROGRESS,
        message=(f"{file.uid} is still in {stage}: nothing logged for {format_duration_ms(line)} since "
                 f"{last_stage}; usually {format_duration_ms(stall.median_ms)}{whose} at this hour, "
                 f"alert above {format_duration_ms(line)}"),
    )


def failed(file: FileRef, stage: str, last_stage: str | None, t_us: int, observed_ms: float | None,
           now_us: int) -> Anomaly:
    """The log line of ``stage`` said it failed (``observed_ms``: how long after the stage before it)."""
    after = f" after {format_duration_ms(observed_ms)}" if observed_ms is not None else ""
    return _anomaly(FAILED, file, stage, last_stage, t_us, now_us, observed_ms=observed_ms, severity="error",
                    message=f"{stage} of {file.uid} failed{after}")


def slow_message(
    stage: str, uid: str, observed_ms: float, median_ms: float, threshold_ms: float, tenant_baseline: bool,
    tenant: str | None, measure: str = "wait", since: str = "",
) -> str:
    whose = f" for {tenant}" if tenant_baseline and tenant else ""
    if stage == END_TO_END:
        head = f"{uid} took {format_duration_ms(observed_ms)} end to end"
    elif measure == "latency":
        head = f"{stage} of {uid} took {format_duration_ms(observed_ms)} (as its log line reports)"
    else:
        head = f"{stage} of {uid} took {format_duration_ms(observed_ms)}" + (f" ({since})" if since else "")
    return (
        f"{head}; usually {format_duration_ms(median_ms)}{whose} at this hour, "
        f"alert above {format_duration_ms(threshold_ms)}"
    )


def where_it_went(named: tuple[tuple[str, float], ...]) -> str:
    """``; most of it in analyse (+41 s), upload (+3.2 s)``, or nothing when no stage is named."""
    if not named:
        return ""
    return "; most of it in " + ", ".join(f"{stage} (+{format_duration_ms(ms)})" for stage, ms in named)


def stall_message(
    uid: str, missing: str, last: str, waited_ms: float, median_ms: float, deadline_ms: float
) -> str:
    return (
        f"{uid} has not reached {missing} {format_duration_ms(waited_ms)} after {last}; "
        f"{missing} usually comes {format_duration_ms(median_ms)} after, "
        f"stalled when nothing arrives within {format_duration_ms(deadline_ms)}"
    )
