"""What ``stagewatch report`` shows, computed from a run's tables: no HTML, no plotting here.

``gather`` reads the tables once through the ``Tables`` protocol (a local folder or BigQuery, the same row
dicts either way) and reduces them to what a page can hold: per-stage wait quantiles per time bucket with a
usual band, each incident once in its latest state, per-tenant counts, the end-to-end distribution, and the
lot records. Everything is aggregated here so that the page's size depends on the number of buckets, stages
and tenants, not on the number of files.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stagewatch.core.lots import LotConfig
from stagewatch.core.timeutil import US_PER_S, format_duration_ms, parse_rfc3339_us
from stagewatch.store.readers import Tables

__all__ = ["END_TO_END", "ReportData", "StageSeries", "TenantRow", "band_window_us", "bucket_us_for",
           "duration_words", "gather", "latest_incidents", "stage_order"]

END_TO_END = "end_to_end"
MINUTE_US = 60 * US_PER_S
# Bucket widths a person reads without arithmetic; the report takes the smallest that gives at most
# TARGET_BUCKETS buckets over the span (3 h -> 10 min, a day -> 1 h).
NICE_BUCKETS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
TARGET_BUCKETS = 30
# Fewer samples than this in a bucket and its p95 is one or two files: not drawn, not compared.
MIN_BUCKET_N = 5
# The usual band is computed from the traces, not taken from the anomalies' expected_ms / threshold_ms: those
# exist only where a file was flagged (nothing in a quiet hour, so no continuous band), and each is the line
# of the baseline that judged that file — often its tenant's own — so together they are a scatter of
# different customers' lines, not one stage's usual. The anomalies' own lines are shown where they belong:
# in each incident's "worst vs usual" and in the anomaly messages.
# A bucket's band is the p50-p95 of the waits of the files the detector did not flag, over this long before
# the bucket (at least three buckets): about what the detector's baselines remember at their shortest, and not
# so long that a daily load curve smears it. Leaving the flagged waits out is what keeps an hour-long
# slowdown from becoming its own "usual" (the detector learns them at a tenth of the weight, for that reason).
BAND_WINDOW_US = 60 * MINUTE_US
MIN_BAND_N = 20
# "Above usual": a bucket's p95 this far over the band's top. A p95 over a few dozen files passes the
# previous hour's p95 about half the time by chance; 1.5x does not.
ABOVE_USUAL_RATIO = 1.5
EVENT_ORDER = {"opened": 0, "updated": 1, "resolved": 2}


@dataclass
class StageSeries:
    """One stage's waits (or the files' end-to-end latency) per time bucket, and its usual band."""

    stage: str
    starts_us: list[int]  # bucket starts, the same for every stage
    n: list[int]
    p50: list[float]  # NaN where the bucket has fewer than MIN_BUCKET_N samples
    p95: list[float]
    usual_p50: list[float]  # NaN where the hour before had fewer than MIN_BAND_N unflagged samples
    usual_p95: list[float]
    all_p50: float  # over the whole span
    all_p95: float
    samples: int

    def ratio(self, i: int) -> float:
        """Bucket ``i``'s p95 over its usual p95 (NaN when either is missing)."""
        if self.n[i] < MIN_BUCKET_N or math.isnan(self.usual_p95[i]) or self.usual_p95[i] <= 0:
            return math.nan
        return self.p95[i] / self.usual_p95[i]

    def worst(self) -> int | None:
        """The bucket furthest above its usual band, if any bucket can be compared."""
        ratios = [(r, i) for i in range(len(self.starts_us)) if not math.isnan(r := self.ratio(i))]
        return max(ratios)[1] if ratios else None

    def latest(self) -> int | None:
        """The last bucket with enough samples to say anything."""
        return next((i for i in reversed(range(len(self.n))) if self.n[i] >= MIN_BUCKET_N), None)


@dataclass
class TenantRow:
    tenant: str
    files: int
    statuses: Counter[str]
    anomalies: Counter[str]  # by kind
    flagged_files: int  # files with at least one anomaly
    e2e_p50: float  # NaN without complete files
    e2e_p95: float


@dataclass
class ReportData:
    where: str
    since_us: int | None
    until_us: int | None
    first_us: int | None  # the data's span (stage events and anomalies) within the asked window
    last_us: int | None
    bucket_us: int
    traces: int
    statuses: Counter[str]
    anomalies: list[dict[str, Any]]  # sorted by event_time
    series: list[StageSeries]  # one per stage with waits, in pipeline order, then END_TO_END
    incidents: list[dict[str, Any]]  # the latest event of each incident, by started_at
    tenants: list[TenantRow]
    end_to_end: list[tuple[float, bool]]  # complete files: (ms, flagged slow end to end)
    lots: list[dict[str, Any]]  # lot records, by finished_at
    dead_letters: Counter[str] = field(default_factory=Counter)  # by reason
    # Lots whose last file is old enough (the lots' quiet before the data's end) to have been judged: with
    # none, "no lot record" means nothing yet, not "all good".
    judgeable_lots: int = 0

    @property
    def anomaly_kinds(self) -> Counter[str]:
        return Counter(a["kind"] for a in self.anomalies)


def latest_incidents(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each incident once: its latest event (every event carries the whole state), by start time.

    Events of one incident share its ``started_at``; a resolution made at the same instant as an update
    wins over it, since it is the later step of the same decision.
    """
    latest: dict[str, dict[str, Any]] = {}
    for e in events:
        key = (parse_rfc3339_us(e["at"]), EVENT_ORDER.get(e["event"], 1))
        have = latest.get(e["incident_id"])
        if have is None or key >= (parse_rfc3339_us(have["at"]), EVENT_ORDER.get(have["event"], 1)):
            latest[e["incident_id"]] = e
    return sorted(latest.values(), key=lambda e: (parse_rfc3339_us(e["started_at"]), e["incident_id"]))


def stage_order(traces: Iterable[dict[str, Any]]) -> list[str]:
    """The pipeline's stage order as the traces list it: each trace's stages are in order, but a file may
    skip an optional stage, so the order is the one every trace agrees with (a topological order of
    "comes right after" pairs), ties broken by first appearance."""
    seen: dict[str, int] = {}
    after: dict[str, set[str]] = defaultdict(set)
    for tr in traces:
        names = [st["stage"] for st in tr["stages"]]
        for name in names:
            seen.setdefault(name, len(seen))
        for a, b in itertools.pairwise(names):
            if a != b:
                after[a].add(b)
    before = Counter(b for bs in after.values() for b in bs)
    order: list[str] = []
    left = set(seen)
    while left:
        ready = [n for n in left if before[n] == 0] or list(left)  # a cycle (it should not happen): break it
        n = min(ready, key=seen.__getitem__)
        order.append(n)
        left.discard(n)
        for b in after[n]:
            before[b] -= 1
    return order


def band_window_us(bucket_us: int) -> int:
    """How far back a bucket's usual band looks (see BAND_WINDOW_US)."""
    return max(BAND_WINDOW_US, 3 * bucket_us)


def duration_words(us: int) -> str:
    """A round span as a person says it: "10 min", "3 h" (not "3.0 h")."""
    return format_duration_ms(us / 1000).replace(".0 ", " ")


def bucket_us_for(span_us: int) -> int:
    for minutes in NICE_BUCKETS_MIN:
        if span_us <= minutes * MINUTE_US * TARGET_BUCKETS:
            return minutes * MINUTE_US
    return NICE_BUCKETS_MIN[-1] * MINUTE_US * math.ceil(span_us / (NICE_BUCKETS_MIN[-1] * MINUTE_US * TARGET_BUCKETS))


def _quantiles(values: list[float], n_min: int) -> tuple[float, float]:
    if len(values) < n_min:
        return math.nan, math.nan
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return float(p50), float(p95)


def _series(stage: str, samples: list[tuple[int, float, bool]], starts: list[int], bucket_us: int) -> StageSeries:
    """``samples``: (time, ms, flagged). The bucket's own quantiles use every sample; the usual band only
    the unflagged samples of the window before the bucket (see BAND_WINDOW_US)."""
    samples.sort()
    times = np.asarray([t for t, _, _ in samples], dtype=np.int64)
    values = [v for _, v, _ in samples]
    clean = [(t, v) for t, v, flagged in samples if not flagged]
    clean_times = np.asarray([t for t, _ in clean], dtype=np.int64)
    clean_values = [v for _, v in clean]
    window = band_window_us(bucket_us)
    n, p50, p95, u50, u95 = [], [], [], [], []
    for start in starts:
        lo, hi = np.searchsorted(times, [start, start + bucket_us])
        q50, q95 = _quantiles(values[lo:hi], MIN_BUCKET_N)
        n.append(int(hi - lo))
        p50.append(q50)
        p95.append(q95)
        blo, bhi = np.searchsorted(clean_times, [start - window, start])
        b50, b95 = _quantiles(clean_values[blo:bhi], MIN_BAND_N)
        u50.append(b50)
        u95.append(b95)
    a50, a95 = _quantiles(values, 1)
    return StageSeries(stage, starts, n, p50, p95, u50, u95, a50, a95, len(values))


def _tenant_rows(traces: list[dict[str, Any]], anomalies: list[dict[str, Any]]) -> list[TenantRow]:
    by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for tr in traces:
        by_tenant[tr.get("tenant") or "-"].append(tr)
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    flagged: dict[str, set[str]] = defaultdict(set)
    for a in anomalies:
        tenant = a.get("tenant") or "-"
        kinds[tenant][a["kind"]] += 1
        flagged[tenant].add(a["uid"])
    rows = []
    for tenant in sorted(set(by_tenant) | set(kinds)):
        mine = by_tenant.get(tenant, [])
        e2e = [tr["end_to_end_ms"] for tr in mine if tr["status"] == "complete" and tr.get("end_to_end_ms") is not None]
        p50, p95 = _quantiles(e2e, 1)
        rows.append(TenantRow(tenant, len(mine), Counter(tr["status"] for tr in mine), kinds[tenant],
                              len(flagged[tenant]), p50, p95))
    # The tenants with the most trouble first, relative to their size: that is what the table is read for.
    rows.sort(key=lambda r: (-r.flagged_files / max(r.files, 1), r.tenant))
    return rows


def _latest_traces(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per file, its last: a file that resumed after its stall can be summarised twice."""
    latest: dict[str, dict[str, Any]] = {}
    for tr in rows:
        have = latest.get(tr["uid"])
        if have is None or parse_rfc3339_us(tr["closed_at"]) >= parse_rfc3339_us(have["closed_at"]):
            latest[tr["uid"]] = tr
    return list(latest.values())


def gather(tables: Tables, *, since_us: int | None, until_us: int | None) -> ReportData:
    """Read the tables for ``[since_us, until_us)`` (each table filtered on its partition column) and reduce
    them to what the report shows."""
    def rows(table: str) -> Iterable[dict[str, Any]]:
        return tables.rows(table, since_us=since_us, until_us=until_us)

    traces = _latest_traces(rows("traces"))
    anomalies = sorted(rows("anomalies"), key=lambda a: (parse_rfc3339_us(a["event_time"]), a["anomaly_id"]))
    incidents = latest_incidents(rows("incidents"))
    lots = sorted(rows("lots"), key=lambda r: (parse_rfc3339_us(r["finished_at"]), r["lot"]))
    dead = Counter(r["reason"] for r in rows("dead_letters"))

    # A wait is judged against the stage's baseline; the band must not learn from the waits the detector
    # flagged, or an hour-long slowdown would widen its own "usual". Trace rows cannot say which waits were
    # flagged (the streaming job's per-stage verdicts are "pending"), the anomalies can.
    flagged = {(a["uid"], a["stage"]) for a in anomalies}
    per_stage: dict[str, list[tuple[int, float, bool]]] = defaultdict(list)
    times: list[int] = []
    for tr in traces:
        for st in tr["stages"]:
            t = parse_rfc3339_us(st["time"])
            times.append(t)
            if st.get("duration_ms") is not None:
                per_stage[st["stage"]].append((t, float(st["duration_ms"]), (tr["uid"], st["stage"]) in flagged))
        if tr["status"] == "complete" and tr.get("end_to_end_ms") is not None:
            # By the time the file finished: that is when a slow end to end is judged (and shown) too.
            per_stage[END_TO_END].append((parse_rfc3339_us(tr["last_time"]), float(tr["end_to_end_ms"]),
                                          (tr["uid"], END_TO_END) in flagged))
    times += [parse_rfc3339_us(a["event_time"]) for a in anomalies]
    # A trace is in the window by its first event; its later stages may run past the window's end.
    if since_us is not None:
        times = [t for t in times if t >= since_us]
    if until_us is not None:
        times = [t for t in times if t < until_us]
    first_us, last_us = (min(times), max(times)) if times else (None, None)
    bucket_us = bucket_us_for((last_us - first_us) if first_us is not None and last_us is not None else 0)
    starts: list[int] = []
    if first_us is not None and last_us is not None:
        t = first_us // bucket_us * bucket_us  # on the clock's round minutes, as a person reads a chart
        while t <= last_us:
            starts.append(t)
            t += bucket_us
    names = [s for s in stage_order(traces) if per_stage.get(s)]
    series = [_series(s, per_stage[s], starts, bucket_us) for s in [*names, END_TO_END] if per_stage.get(s)]
    return ReportData(
        where=tables.where, since_us=since_us, until_us=until_us, first_us=first_us, last_us=last_us,
        bucket_us=bucket_us, traces=len(traces),
        statuses=Counter(tr["status"] for tr in traces),
        anomalies=anomalies, series=series, incidents=incidents,
        tenants=_tenant_rows(traces, anomalies),
        end_to_end=[(v, f) for _, v, f in per_stage.get(END_TO_END, [])],
        lots=lots, dead_letters=dead, judgeable_lots=_judgeable_lots(traces, last_us),
    )


def _judgeable_lots(traces: list[dict[str, Any]], last_us: int | None) -> int:
    last_of: dict[str, int] = {}
    for tr in traces:
        if tr.get("lot"):
            last_of[tr["lot"]] = max(last_of.get(tr["lot"], 0), parse_rfc3339_us(tr["last_time"]))
    if last_us is None:
        return 0
    quiet_us = int(LotConfig().quiet_s * US_PER_S)
    return sum(1 for t in last_of.values() if t + quiet_us <= last_us)
