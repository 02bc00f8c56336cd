"""The report's headline: what to act on first, then what is out of its usual range with no incident, and why.

A support person reads the top of the page and acts on it, so the headline leads with the incidents -- open
ones first, in red, then the span's resolved ones -- each with its scope and customer. A stage or a customer
out of its usual range *without* an incident is said plainly, with the reason none opened (no file crossed its
own line; too few for an incident; the customer's own usual), and in red only then: a stage out of range
because of a known incident is that incident's, and says so. The quickstart demo's page had put "Slowest
stage: upload (8.7x)" in red where the story was one customer's uploads.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from stagewatch.core.candidates import poisson_tail
from stagewatch.core.incident import IncidentConfig
from stagewatch.core.kinds import FAILED, KINDS, LOT_INCOMPLETE, SLOW_STAGE, STALLED, TRACE_STATUSES, brief
from stagewatch.core.timeutil import format_duration_ms, parse_rfc3339_us
from stagewatch.investigate.page import Page, counts, ms, tile
from stagewatch.investigate.report_data import (
    ABOVE_USUAL_RATIO,
    END_TO_END,
    MIN_BAND_N,
    ReportData,
    StageSeries,
    TenantRow,
    band_window_us,
    duration_words,
)

__all__ = ["MAX_HEADLINE_INCIDENTS", "headline", "incident_what", "scope_words", "stage_series", "stands_out",
           "unjudged_lots"]

# The headline names at most this many resolved incidents; the table below has them all.
MAX_HEADLINE_INCIDENTS = 5
_STAGE_KINDS = (SLOW_STAGE, STALLED, FAILED)


def scope_words(inc: dict[str, Any]) -> str:
    key = inc.get("scope_key")
    return f"{inc['scope']} {key}" if key else str(inc["scope"])


def incident_what(inc: dict[str, Any]) -> str:
    """An incident in a few words: "analyse slow", "stalls before download", "tenant wayne: upload slow"."""
    what = brief(inc["kind"], inc["stage"])
    return f"{scope_words(inc)}: {what}" if inc["scope"] != "global" else what


def unjudged_lots(data: ReportData) -> bool:
    """No lot could have been judged yet: none has been quiet for the lots' quiet since its last file."""
    return not data.lots and data.judgeable_lots == 0


def stands_out(data: ReportData, t: TenantRow) -> str | None:
    """A stage where this customer has trouble of its own: at least 3 of its files flagged there, more than its
    share of the files makes likely among that stage's anomalies (a Poisson tail under 1 in 1,000: a small
    customer's 3 of a global stall's 19 is chance, 7 of 7 is not) -- "upload: 7 of 7 flagged"."""
    total_files = sum(r.files for r in data.tenants) or 1
    share = t.files / total_files
    at: dict[str, list[int]] = {}
    for a in data.anomalies:
        if a["kind"] in _STAGE_KINDS:
            mine = at.setdefault(a["stage"], [0, 0])
            mine[1] += 1
            mine[0] += a.get("tenant") == t.tenant
    hits = [(n, stage, of) for stage, (n, of) in at.items() if n >= 3 and poisson_tail(n, of * share) < 1e-3]
    if not hits:
        return None
    n, stage, of = max(hits)
    return f"{stage}: {n} of {of} flagged"


def _covering(data: ReportData, stage: str, start_us: int, end_us: int) -> list[dict[str, Any]]:
    """Incidents on ``stage`` whose span meets [start, end)."""
    found = []
    for inc in data.incidents:
        if inc["stage"] != stage:
            continue
        began = parse_rfc3339_us(inc["started_at"])
        ended = parse_rfc3339_us(inc["resolved_at"]) if inc.get("resolved_at") else parse_rfc3339_us(inc["at"])
        if began < end_us and ended + data.bucket_us >= start_us:
            found.append(inc)
    return found


def _why_no_incident(data: ReportData, stage: str, start_us: int, end_us: int) -> str:
    flagged = {a["uid"] for a in data.anomalies if a["stage"] == stage and a["kind"] in _STAGE_KINDS
               and start_us <= parse_rfc3339_us(a["event_time"]) < end_us}
    need = IncidentConfig().open_count
    if not flagged:
        return "no file there crossed its own alert line (each is judged against its customer's usual at that hour)"
    if len(flagged) < need:
        return (f"{len(flagged)} file{'s' if len(flagged) != 1 else ''} flagged, fewer than the {need} an incident "
                f"needs within {format_duration_ms(IncidentConfig().open_window_s * 1000)}")
    return f"its {len(flagged)} flagged files were not more than that traffic flags by chance"


def _stages(data: ReportData, page: Page) -> list[tuple[str, bool]]:
    out = []
    for s in data.series:
        if s.stage == END_TO_END or (i := s.worst()) is None or (r := s.ratio(i)) < ABOVE_USUAL_RATIO:
            continue
        start, end = s.starts_us[i], s.starts_us[i] + data.bucket_us
        where = (f"{escape(s.stage)}: p95 wait {ms(s.p95[i])} in {page.bucket(start)} UTC, usually up to "
                 f"{ms(s.usual_p95[i])} ({r:.1f}x)")
        known = _covering(data, s.stage, start, end)
        if known:
            out.append((f"{where} — the incident{'s' if len(known) > 1 else ''} above: "
                        f"{escape('; '.join(incident_what(k) for k in known))}.", False))
        else:
            out.append((f"<b>{where}</b> — no incident: {escape(_why_no_incident(data, s.stage, start, end))}.",
                        True))
    return out


def _tenants(data: ReportData) -> list[tuple[str, bool]]:
    overall = next((s.all_p95 for s in data.series if s.stage == END_TO_END), math.nan)
    own = {i["scope_key"] for i in data.incidents if i["scope"] == "tenant"}
    out = []
    for t in data.tenants:
        if t.tenant in own or math.isnan(t.e2e_p95) or math.isnan(overall) or t.e2e_p95 < ABOVE_USUAL_RATIO * overall:
            continue
        why = ("none of its files was flagged: against its own baseline this is its usual" if not t.flagged_files
               else f"{t.flagged_files} of its {t.files} files flagged, too few for an incident of its own")
        out.append((f"<b>tenant {escape(t.tenant)}: p95 end to end {ms(t.e2e_p95)}, {t.e2e_p95 / overall:.1f}x "
                    f"everyone's</b> — no incident: {escape(why)}.", True))
    return out


def _tiles(data: ReportData, open_incidents: list[dict[str, Any]]) -> list[str]:
    incomplete = sum(1 for r in data.lots if r["kind"] == LOT_INCOMPLETE)
    if unjudged_lots(data):
        lots = tile("lot records", "—", "no lot judged yet: 2 h after its last file")
    else:
        n = data.judgeable_lots
        lots = tile("lot records", f"{len(data.lots):,}", f"{incomplete} incomplete · {len(data.lots) - incomplete}"
                    " slow" if data.lots else f"{n:,} lot{'s' if n != 1 else ''} judged: none incomplete or slow",
                    "bad" if data.lots else "good")
    return [
        tile("files", f"{data.traces:,}", counts(data.statuses, TRACE_STATUSES) or "none"),
        tile("anomalies", f"{len(data.anomalies):,}", counts(data.anomaly_kinds, KINDS) or "none",
             "bad" if data.anomalies else "good"),
        tile("incidents", f"{len(data.incidents):,}", f"{len(open_incidents)} still open" if data.incidents
             else "none", "bad" if open_incidents else ("" if data.incidents else "good")),
        lots,
    ]


def headline(data: ReportData, page: Page) -> str:
    open_incidents = [i for i in data.incidents if not i.get("resolved_at")]
    kinds = counts(data.anomaly_kinds, KINDS)
    summary = (f"{data.traces:,} files, {len(data.anomalies):,} anomalies{f' ({kinds})' if kinds else ''}, "
               f"{len(data.incidents):,} incidents ({len(open_incidents)} open), {len(data.lots):,} lot records.")
    lines = [f'<p class="headline">{escape(summary)}</p>']
    for inc in open_incidents:
        lines.append(f'<p class="headline bad">Open since {page.time(inc["started_at"])} UTC: '
                     f'{escape(inc["message"])}</p>')
    resolved = [i for i in data.incidents if i.get("resolved_at")]
    if resolved:
        named = [f"{escape(incident_what(i))} {page.minute(i['started_at'])}–{page.minute(i['resolved_at'])} "
                 f"({i.get('files') or 0} files)" for i in resolved[:MAX_HEADLINE_INCIDENTS]]
        more = f" and {len(resolved) - MAX_HEADLINE_INCIDENTS} more" if len(resolved) > MAX_HEADLINE_INCIDENTS else ""
        lines.append(f'<p class="headline">Resolved incidents: {"; ".join(named)}{more}.</p>')
    if not data.incidents and data.traces:
        lines.append('<p class="headline">No incidents in this span.</p>')
    unexplained = _stages(data, page) + _tenants(data)
    for text, bad in unexplained:
        lines.append(f'<p class="headline{" bad" if bad else ""}">Out of usual range: {text}</p>')
    comparable = any(s.worst() is not None for s in stage_series(data))
    if data.traces and not comparable:
        window = duration_words(band_window_us(data.bucket_us))
        lines.append(f'<p class="headline">Too little data to compare the stages with their usual band (a band '
                     f"needs {MIN_BAND_N} files in the {window} before a bucket).</p>")
    elif data.traces and not unexplained:
        lines.append(f'<p class="headline">Every stage stayed within {ABOVE_USUAL_RATIO}x its usual p95.</p>')
    return f'<section id="summary"><div class="tiles">{"".join(_tiles(data, open_incidents))}</div>' \
           f'{"".join(lines)}</section>'


def stage_series(data: ReportData) -> list[StageSeries]:
    """The stages' series, without end to end."""
    return [s for s in data.series if s.stage != END_TO_END]
