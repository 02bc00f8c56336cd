"""``stagewatch explain UID``: one file's journey as a terminal timeline, read from a run's tables.

The tables are a local output folder (what ``stagewatch run --output_dir`` writes) or the BigQuery dataset
of the streaming job (see ``stagewatch.store.readers``). For each stage: when it was logged, how long the file
waited for it, what is usual for that stage at that hour, and the verdict: the file's anomalies, or the trace's
own. "Usual" names one baseline, the one the verdict used: for a flagged stage the anomaly's own (its median, the
customer's or everyone's, as its message says); else the median wait of the customer's other files that reached
the stage within an hour either side (everyone's when the customer has fewer than 5 there), from the same tables.
"""

from __future__ import annotations

import statistics
from typing import Any

from stagewatch.core.anomalies import IN_PROGRESS
from stagewatch.core.timeutil import US_PER_S, format_duration_ms, parse_rfc3339_us
from stagewatch.store.readers import Tables

__all__ = ["explain"]

HOUR_US = 3600 * US_PER_S
DAY_US = 24 * HOUR_US


def _usual(traces: list[dict[str, Any]], trace: dict[str, Any], stage: str, t_us: int) -> str:
    """The median wait of the other files at that stage within the hour, the customer's own when it has 5."""
    def waits(tenant: str | None) -> list[float]:
        return [st["duration_ms"] for tr in traces if tr["uid"] != trace["uid"] and (tenant is None or
                                                                                    tr["tenant"] == tenant)
                for st in tr["stages"] if st["stage"] == stage and st["duration_ms"] is not None
                and abs(parse_rfc3339_us(st["time"]) - t_us) <= HOUR_US]

    own = waits(trace["tenant"]) if trace["tenant"] else []
    if len(own) >= 5:
        return f"{format_duration_ms(statistics.median(own))} for {trace['tenant']} (n={len(own)})"
    everyone = waits(None)
    return f"{format_duration_ms(statistics.median(everyone))} (n={len(everyone)})" if len(everyone) >= 5 else "—"


def _judged_by(a: dict[str, Any]) -> str:
    """The usual the anomaly was judged against, as its message names it."""
    if a.get("expected_ms") is None:
        return "—"
    whose = f" for {a['tenant']}" if a.get("baseline") == "tenant" and a.get("tenant") else ""
    return f"{format_duration_ms(a['expected_ms'])}{whose}"


def explain(uid: str, tables: Tables, day_us: int | None = None) -> str:
    """The timeline of ``uid``; raises ``ValueError`` when the tables have no such file. ``day_us``: the start
    (UTC midnight) of the day the file began, when known: the file is then looked for in that day's partitions
    (and the neighbours') rather than in the whole tables, which on BigQuery is what the query costs."""
    since = until = None
    if day_us is not None:
        since, until = day_us - DAY_US, day_us + 2 * DAY_US
    mine = list(tables.rows("traces", uid=uid, since_us=since, until_us=until))
    if not mine:
        near = "" if day_us is None else " near that day"
        raise ValueError(f"no file {uid!r} in {tables.where}{near}")
    trace = mine[-1]
    # The other files near it in time, for "usual at that hour". Traces are partitioned by their first event,
    # and a neighbour's stage within the hour before this file's first began before it: an extra hour of
    # margin covers files that took up to an hour to get there (most take minutes; slower ones are missed).
    first, last = parse_rfc3339_us(trace["first_time"]), parse_rfc3339_us(trace["last_time"])
    traces = list(tables.rows("traces", since_us=first - 2 * HOUR_US, until_us=last + HOUR_US))
    # Its anomalies come after its first event, within its span and a stall's deadline.
    anomalies = list(tables.rows("anomalies", uid=uid, since_us=first - HOUR_US, until_us=last + DAY_US))
    by_stage = {a["stage"]: a for a in anomalies}
    lines = [f"{uid} · tenant {trace['tenant'] or '-'} · lot {trace['lot'] or '-'} · {trace['status'].upper()}"]
    lines.append(f"  {'stage':<14}{'logged at':<28}{'waited':>10}  {'usual at that hour':<28}verdict")
    for st in trace["stages"]:
        t = parse_rfc3339_us(st["time"])
        waited = "—" if st["duration_ms"] is None else format_duration_ms(st["duration_ms"])
        anomaly = by_stage.get(st["stage"])
        usual_text = _judged_by(anomaly) if anomaly else _usual(traces, trace, st["stage"], t)
        # The streaming job's summaries say "pending" (verdicts are made downstream): no anomaly means none.
        verdict = anomaly["kind"].upper() if anomaly else ("not flagged" if st["verdict"] == "pending" else
                                                          st["verdict"])
        lines.append(f"  {st['stage']:<14}{st['time']:<28}{waited:>10}  {usual_text:<28}{verdict}")
    for a in anomalies:
        if a["kind"] == "stalled" or a["stage"] == "end_to_end" or a["stage"] not in {s["stage"] for s in
                                                                                      trace["stages"]}:
            when = "deadline passed" if a["kind"] == "stalled" else _judged_by(a)
            verdict = a["kind"].upper()
            if a.get("measure") == IN_PROGRESS:  # flagged while it was still there: it had waited its line
                waited, verdict = format_duration_ms(a["observed_ms"]), verdict + " (still in it)"
            else:
                waited = ""
            lines.append(f"  {a['stage']:<14}{a['event_time']:<28}{waited:>10}  {when:<28}{verdict}")
    if trace.get("end_to_end_ms") is not None:
        lines.append(f"  end to end: {format_duration_ms(trace['end_to_end_ms'])}")
    for a in anomalies:
        lines.append(f"  ! {a['message']}")
    if not anomalies:
        lines.append("  no anomaly for this file")
    return "\n".join(lines)
