"""``stagewatch report``: one self-contained HTML page answering "is it slow today?" from a run's tables.

The page is for a support person: a headline first (how many files, anomalies, incidents; which stage was
furthest above its usual, and whether anything is above usual in the latest bucket), then per-stage latency
over time with the usual band and the anomalies marked, the incidents (each once, in its latest state), a
per-tenant breakdown, the end-to-end distribution and the lots that did not complete or were slow.

Self-contained means it works offline and from an e-mail attachment: the charts are inline SVG, the style
is one inline ``<style>``, and there is no script, font, image or stylesheet to fetch. The data comes
through the ``Tables`` protocol only (``stagewatch.store.readers``), so a local folder and BigQuery give the same
page. Aggregation lives in ``report_data``, the charts in ``report_plots``; this module owns the page.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from html import escape
from typing import Any

from stagewatch.core.kinds import (
    FAILED,
    FILE_KINDS,
    KINDS,
    LOT_INCOMPLETE,
    LOT_SLOW,
    SLOW_STAGE,
    SLOW_TRACE,
    STALLED,
)
from stagewatch.core.lots import LotConfig
from stagewatch.core.timeutil import US_PER_S, format_duration_ms
from stagewatch.investigate.headline import (
    headline,
    incident_what,
    scope_words,
    stands_out,
    unjudged_lots,
)
from stagewatch.investigate.page import CSS, Markup, Page, breakable_id, counts, listed, ms, ratio_text, table, td
from stagewatch.investigate.report_data import (
    ABOVE_USUAL_RATIO,
    END_TO_END,
    ReportData,
    band_window_us,
    duration_words,
    gather,
)
from stagewatch.investigate.report_plots import end_to_end_svg, stage_latency_svg
from stagewatch.store.readers import Tables

__all__ = ["render_report"]

def _stages_section(data: ReportData, page: Page) -> str:
    chart = stage_latency_svg(data)
    if chart is None:
        return ('<section id="stages"><h2>Latency by stage</h2><p class="empty">No stage waits in this span '
                "(no trace rows).</p></section>")
    by_stage: dict[str, Counter[str]] = {}
    for a in data.anomalies:
        by_stage.setdefault(a["stage"], Counter())[a["kind"]] += 1
    incidents = Counter(i["stage"] for i in data.incidents)
    rows = []
    for s in data.series:
        i = s.worst()
        worst = "—" if i is None else f"{ms(s.p95[i])} in {page.bucket(s.starts_us[i])} vs {ms(s.usual_p95[i])}"
        r = math.nan if i is None else s.ratio(i)
        kinds = by_stage.get(s.stage, Counter())
        above = not math.isnan(r) and r >= ABOVE_USUAL_RATIO
        name = "end to end" if s.stage == END_TO_END else s.stage
        rows.append(f'<tr{" class=above" if above else ""}>' + "".join([
            td(name), td(f"{s.samples:,}", True), td(ms(s.all_p50), True), td(ms(s.all_p95), True),
            td(worst), td("—" if math.isnan(r) else f"{r:.1f}x", True),
            td(kinds[SLOW_STAGE] + kinds[SLOW_TRACE], True), td(kinds[STALLED], True),
            td(kinds[FAILED], True), td(incidents[s.stage], True)]) + "</tr>")
    rows_table = table([("stage", False), ("waits", True), ("p50", True), ("p95", True),
                    ("worst bucket: p95 vs usual p95", False), ("ratio", True), ("slow", True), ("stalled", True),
                    ("failed", True), ("incidents", True)], rows)
    bucket, window = duration_words(data.bucket_us), duration_words(band_window_us(data.bucket_us))
    return (
        '<section id="stages"><h2>Latency by stage</h2>'
        f'<p class="note">How long files waited for each stage (since the previous stage\'s event), p50 and p95 '
        f"per {bucket}, UTC, and end to end for the files that completed. The blue band is what was usual: the "
        f"p50–p95 of the files the detector did not flag, in the {window} before the bucket; a row in red went "
        f"{ABOVE_USUAL_RATIO}x above it. Markers are anomalies (each judged against its own line, often its "
        "customer's own baseline, so a marker can sit inside the band); shaded spans are the stage's incidents. "
        "Log scale.</p>"
        f"{chart}{rows_table}</section>"
    )


def _incidents_section(data: ReportData, page: Page) -> str:
    if not data.incidents:
        return ('<section id="incidents"><h2>Incidents</h2><p class="empty">No incidents in this span.</p>'
                "</section>")
    rows = []
    for inc in data.incidents:
        resolved = inc.get("resolved_at")
        state = ('<span class="badge resolved">resolved</span>' if resolved else
                 '<span class="badge open">open</span>')
        worst, usual = inc.get("worst_observed_ms"), inc.get("expected_ms")
        how = "—" if worst is None else ms(worst)
        if worst is not None and inc["kind"] == "failed":
            how = f"failed after up to {ms(worst)}"
        elif worst is not None and usual:
            how = f"{ms(worst)} vs {ms(usual)} ({ratio_text(worst, usual)})"
        tenants = list(inc.get("tenants") or [])
        of = f" ({inc.get('affected_tenants', len(tenants))} of {inc['active_tenants']} tenants)" if inc.get(
            "active_tenants") and inc["scope"] == "global" else ""
        samples = list(inc.get("sample_uids") or [])[:3]
        message = (f"{escape(inc['message'])}<span class=\"id mono\">{breakable_id(inc['incident_id'])}</span>"
                   + (f'<span class="id">e.g. {listed(samples, nowrap=True)}</span>' if samples else ""))
        ended = page.time(resolved) if resolved else f"last update {page.time(inc['at'])}"
        rows.append("<tr>" + "".join([
            td(Markup(state)), td(page.time(inc["started_at"]), True), td(ended, True),
            td(inc.get("files") or 0, True), td(scope_words(inc) + of), td(how, True), td(Markup(message))])
            + "</tr>")
    rows_table = table([("state", False), ("started", True), ("resolved", True), ("files", True),
                        ("scope", False), ("worst vs usual", True), ("what", False)], rows)
    return (f'<section id="incidents"><h2>Incidents</h2><p class="note">Each incident once, in its latest state '
            f"({len(data.incidents)}; times UTC): what, for whom, how many files. Look at a file with "
            "<code>stagewatch explain UID</code>.</p>"
            f"{rows_table}</section>")


def _tenants_section(data: ReportData, page: Page) -> str:
    if not data.tenants:
        return '<section id="tenants"><h2>Tenants</h2><p class="empty">No files in this span.</p></section>'
    top = max((t.e2e_p95 for t in data.tenants if not math.isnan(t.e2e_p95)), default=0.0)
    overall = next((s.all_p95 for s in data.series if s.stage == END_TO_END), math.nan)
    # A customer's own incidents (scope tenant) are what sets them apart; a global incident hits everyone.
    own: dict[str, list[str]] = {}
    for inc in data.incidents:
        if inc["scope"] == "tenant" and inc.get("scope_key"):
            end = page.minute(inc["resolved_at"]) if inc.get("resolved_at") else "open"
            own.setdefault(inc["scope_key"], []).append(
                f"{incident_what({**inc, 'scope': 'global'})} {page.minute(inc['started_at'])}–{end}")
    rows = []
    standing = {t.tenant: found for t in data.tenants if (found := stands_out(data, t)) is not None}
    # Stable: a customer with its own trouble first, then by share flagged.
    for t in sorted(data.tenants, key=lambda t: (t.tenant not in own and t.tenant not in standing)):
        hot = not math.isnan(t.e2e_p95) and not math.isnan(overall) and t.e2e_p95 >= ABOVE_USUAL_RATIO * overall
        width = 0.0 if math.isnan(t.e2e_p95) or top <= 0 else 100 * t.e2e_p95 / top
        bar = Markup(f'{escape(ms(t.e2e_p95))}<div class="bar{" hot" if hot else ""}" '
                      f'style="width:{width:.0f}%"></div>')
        share = f"{100 * t.flagged_files / t.files:.0f} %" if t.files else "—"
        marked = hot or t.tenant in own or t.tenant in standing
        rows.append(f'<tr{" class=above" if marked else ""}>' + "".join([
            td(t.tenant), td(f"{t.files:,}", True), td(t.statuses["open"], True),
            *(td(t.anomalies[k], True) for k in KINDS), td(share, True), td(ms(t.e2e_p50), True),
            td(bar, True), td(standing.get(t.tenant, "—")), td("; ".join(own.get(t.tenant, [])) or "—")]) + "</tr>")
    rows_table = table([("tenant", False), ("files", True), ("still open", True),
                    *((FILE_KINDS[k].label, True) for k in KINDS), ("files flagged", True),
                    ("p50", True), ("p95", True), ("stands out at", False), ("its own incidents", False)], rows,
                   groups=[("", 3), ("anomalies", len(KINDS)), ("", 1), ("end to end", 2), ("", 2)])
    return ('<section id="tenants"><h2>Tenants</h2><p class="note">Per customer: their files (still open: in '
            "flight when the data ends), their anomalies by kind, the share of their files with any anomaly, the "
            "end-to-end latency of their complete files, a stage where they have trouble of their own (at least "
            "3 of their files flagged there, and twice their share of the files among that stage's anomalies), "
            "and the incidents scoped to them alone. Rows in red: one of those, or p95 end to end at least "
            f"{ABOVE_USUAL_RATIO}x everyone's ({ms(overall)}). Those first, then by share of files flagged.</p>"
            f"{rows_table}</section>")


def _end_to_end_section(data: ReportData) -> str:
    chart = end_to_end_svg(data)
    if chart is None:
        return ('<section id="end-to-end"><h2>End-to-end latency</h2><p class="empty">No complete files in this '
                "span.</p></section>")
    flagged = sum(1 for _, f in data.end_to_end if f)
    not_done = data.traces - len(data.end_to_end)
    return ('<section id="end-to-end"><h2>End-to-end latency</h2>'
            f'<p class="note">From each file\'s first event to its last stage, for the {len(data.end_to_end):,} '
            f"complete files ({flagged:,} flagged slow end to end, in red); {not_done:,} files did not complete "
            "(stalled, failed or still open) and have no end to end. Log scale.</p>"
            f"{chart}</section>")


def _unfinished(record: dict[str, Any]) -> str:
    """The lot's unfinished files grouped by how they ended ("stalled after enqueue: f-1, f-2"): a support
    person reads one line per cause, and the causes point at the incident."""
    groups: dict[str, list[str]] = {}
    for f in record.get("unfinished") or []:
        how = f["status"] + (f" after {f['last_stage']}" if f.get("last_stage") else "")
        # A lot of one tenant needs no tenant per file; a shared lot does.
        who = f" ({f['tenant']})" if len(record.get("tenants") or []) > 1 and f.get("tenant") else ""
        groups.setdefault(how, []).append(f"{f['uid']}{who}")
    items = [f"<li>{escape(how)} ({len(uids)}): <span class=mono>{listed(uids, nowrap=True)}</span></li>"
             for how, uids in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0]))]
    return f'<ul class="files">{"".join(items)}</ul>'


def _lots_section(data: ReportData, page: Page) -> str:
    quiet = format_duration_ms(LotConfig().quiet_s * 1000)
    head = ('<section id="lots"><h2>Lots</h2><p class="note">A lot (batch) is judged once none of its files has '
            f"logged for {quiet}; batches still in flight at the end of the data have no verdict yet.</p>")
    incomplete = [r for r in data.lots if r["kind"] == LOT_INCOMPLETE]
    slow = [r for r in data.lots if r["kind"] == LOT_SLOW]
    def lot_cells(r: dict[str, Any]) -> list[str]:
        return [td(Markup(f"<span class='mono nowrap'>{escape(r['lot'])}</span>")),
                td(listed(list(r.get("tenants") or []))), td(r["files"], True)]

    if unjudged_lots(data):
        return (head + f'<p class="empty">No lot judged yet: lots are judged {quiet} after their last file, and '
                "no lot in this data has been quiet that long.</p></section>")
    parts = [head, "<h3>Lots that did not complete</h3>"]
    if incomplete:
        rows = ["<tr>" + "".join([
            *lot_cells(r), td(len(r.get("unfinished") or []), True), td(page.time(r["submitted_at"]), True),
            td(page.time(r["finished_at"]), True), td(Markup(_unfinished(r)))]) + "</tr>" for r in incomplete]
        parts.append(table([("lot", False), ("tenants", False), ("files", True), ("unfinished", True),
                             ("all in at", True), ("last activity", True), ("unfinished files", False)], rows))
    else:
        parts.append('<p class="empty">No incomplete lots in this span.</p>')
    parts.append("<h3>Slow lots</h3>")
    if slow:
        rows = ["<tr>" + "".join([
            *lot_cells(r), td(page.time(r["submitted_at"]), True), td(page.time(r["finished_at"]), True),
            td(ms(r.get("duration_ms")), True), td(ms(r.get("expected_ms")), True), td(r["message"])])
            + "</tr>" for r in slow]
        parts.append(table([("lot", False), ("tenants", False), ("files", True), ("all in at", True),
                             ("finished", True), ("took", True), ("usual", True), ("message", False)], rows))
    else:
        parts.append('<p class="empty">No slow lots in this span.</p>')
    return "".join(parts) + "</section>"


def _span_text(data: ReportData) -> str:
    def full(t: int) -> str:
        return datetime.fromtimestamp(t / US_PER_S, UTC).strftime("%Y-%m-%d %H:%M")

    if data.first_us is None or data.last_us is None:
        shown = "no data"
    else:
        shown = f"{full(data.first_us)} – {full(data.last_us)} UTC"
    asked = []
    if data.since_us is not None:
        asked.append(f"since {full(data.since_us)}")
    if data.until_us is not None:
        asked.append(f"until {full(data.until_us)}")
    return shown + (f" (asked: {' '.join(asked)} UTC)" if asked else "")


def render_report(tables: Tables, *, since_us: int | None, until_us: int | None) -> str:
    """The whole report as one HTML document (UTF-8 text), for the rows of ``tables`` in ``[since_us, until_us)``
    (each table filtered on its partition column; None: unbounded)."""
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise ValueError("--since must be before --until")
    data = gather(tables, since_us=since_us, until_us=until_us)
    page = Page(data)
    span = _span_text(data)
    dead = counts(data.dead_letters, sorted(data.dead_letters))
    footer = (f"{sum(data.dead_letters.values()):,} input lines rejected ({dead})." if data.dead_letters
              else "No rejected input lines.")
    body = "".join([
        f"<header><h1>stagewatch report</h1><p class=sub>{escape(span)} · from {escape(data.where)}</p></header>",
        f'<p class="headline bad">Incomplete input: {escape(tables.incomplete)}</p>' if tables.incomplete else "",
        headline(data, page),
        _stages_section(data, page),
        _incidents_section(data, page),
        _tenants_section(data, page),
        _end_to_end_section(data),
        _lots_section(data, page),
        f'<footer><h2>Input</h2><p class="note">{escape(footer)} Made by <code>stagewatch report</code> from '
        "the run's tables (traces, anomalies, incidents, lots, dead letters).</p></footer>",
    ])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>stagewatch report · {escape(span)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")
