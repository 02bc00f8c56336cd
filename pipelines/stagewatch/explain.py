"""``stagewatch explain UID``: one file's journey as a terminal timeline, read from a local output folder.

The folder is what ``stagewatch run --output_dir`` writes (``traces*.jsonl``, ``anomalies*.jsonl``) or
``replay``'s files put together there. For each stage: when it was logged, how long the file waited for it,
what is usual for that stage at that hour (the median wait of the other files that reached it within an hour
either side, from the same folder), and the verdict: the file's anomalies, or the trace's own.
"""

from __future__ import annotations

import glob
import os
import statistics
from collections.abc import Iterator
from typing import Any

import orjson

from stagewatch.timeutil import US_PER_S, format_duration_ms, parse_rfc3339_us

__all__ = ["explain", "read_table"]

HOUR_US = 3600 * US_PER_S


def read_table(folder: str, table: str) -> Iterator[dict[str, Any]]:
    """The rows of ``<table>*.jsonl`` in ``folder`` (a local run's stand-in for the BigQuery table)."""
    paths = sorted(glob.glob(os.path.join(glob.escape(folder), f"{table}*.jsonl")))
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    yield orjson.loads(line)


def _usual(traces: list[dict[str, Any]], uid: str, stage: str, t_us: int) -> tuple[float, int] | None:
    waits = [
        st["duration_ms"]
        for tr in traces if tr["uid"] != uid
        for st in tr["stages"]
        if st["stage"] == stage and st["duration_ms"] is not None
        and abs(parse_rfc3339_us(st["time"]) - t_us) <= HOUR_US
    ]
    return (statistics.median(waits), len(waits)) if len(waits) >= 5 else None


def explain(uid: str, folder: str) -> str:
    """The timeline of ``uid``; raises ``ValueError`` when the folder has no such file."""
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a folder (give the --output_dir of stagewatch run)")
    traces = list(read_table(folder, "traces"))
    if not traces:
        raise ValueError(f"{folder} has no traces*.jsonl (give the --output_dir of stagewatch run)")
    mine = [t for t in traces if t["uid"] == uid]
    if not mine:
        raise ValueError(f"no file {uid!r} in {folder} ({len(traces):,} files there)")
    trace = mine[-1]
    anomalies = [a for a in read_table(folder, "anomalies") if a["uid"] == uid]
    by_stage = {a["stage"]: a for a in anomalies}
    lines = [f"{uid} · tenant {trace['tenant'] or '-'} · lot {trace['lot'] or '-'} · {trace['status'].upper()}"]
    lines.append(f"  {'stage':<14}{'logged at':<28}{'waited':>10}  {'usual at that hour':<22}verdict")
    for st in trace["stages"]:
        t = parse_rfc3339_us(st["time"])
        waited = "—" if st["duration_ms"] is None else format_duration_ms(st["duration_ms"])
        usual = _usual(traces, uid, st["stage"], t)
        usual_text = "—" if usual is None else f"{format_duration_ms(usual[0])} (n={usual[1]})"
        anomaly = by_stage.get(st["stage"])
        # The streaming job's summaries say "pending" (verdicts are made downstream): no anomaly means none.
        verdict = anomaly["kind"].upper() if anomaly else ("not flagged" if st["verdict"] == "pending" else
                                                          st["verdict"])
        lines.append(f"  {st['stage']:<14}{st['time']:<28}{waited:>10}  {usual_text:<22}{verdict}")
    for a in anomalies:
        if a["kind"] == "stalled" or a["stage"] == "end_to_end" or a["stage"] not in {s["stage"] for s in
                                                                                      trace["stages"]}:
            when = "deadline passed" if a["kind"] == "stalled" else ""
            lines.append(f"  {a['stage']:<14}{a['event_time']:<28}{'':>10}  {when:<22}{a['kind'].upper()}")
    if trace.get("end_to_end_ms") is not None:
        lines.append(f"  end to end: {format_duration_ms(trace['end_to_end_ms'])}")
    for a in anomalies:
        lines.append(f"  ! {a['message']}")
    if not anomalies:
        lines.append("  no anomaly for this file")
    return "\n".join(lines)
