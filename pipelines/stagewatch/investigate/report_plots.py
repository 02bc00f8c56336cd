"""The report's charts as inline SVG (matplotlib, no pyplot): per-stage latency over time, end-to-end spread.

Figures are built on ``matplotlib.figure.Figure`` directly rather than through pyplot, so no global figure
state or GUI backend is involved (the Agg backend is selected anyway, for any code that reaches pyplot).
Text stays text in the SVG (``svg.fonttype = none``): a third of the size of glyph outlines, and a support
person can search or copy a label. Ids are salted per figure, so two figures inlined in one page never share
a clip-path id, and no date is written, so the same tables give the same bytes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from stagewatch.core.timeutil import US_PER_MS, format_duration_ms, parse_rfc3339_us
from stagewatch.investigate.report_data import END_TO_END, ReportData, StageSeries, band_window_us, duration_words

__all__ = ["end_to_end_svg", "stage_latency_svg"]

US_PER_DAY = 86_400 * 1_000_000
# At most this many anomaly markers of one kind on one panel: a day of a bad incident flags thousands of
# files, and past a few hundred dots the picture is the same while the page grows by ~100 bytes a dot.
MAX_MARKERS = 300
MARKERS = {  # kind -> (marker, colour, legend label)
    "slow_stage": ("o", "#d62728", "slow (anomaly)"),
    "slow_trace": ("o", "#d62728", "slow (anomaly)"),
    "stalled": ("x", "#7b2cbf", "stalled: waited when declared"),
    "failed": ("v", "#222222", "failed: time in stage"),
}
P50_COLOUR, P95_COLOUR, BAND_COLOUR, INCIDENT_COLOUR = "#1f77b4", "#ff7f0e", "#9ecae1", "#d62728"
# Typed loosely: matplotlib's stubs want a Literal of every rc name as the key type.
_RC: dict[Any, Any] = {"svg.fonttype": "none", "font.size": 9, "font.family": "sans-serif",
       "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"]}


def _date(t_us: float) -> float:
    """Epoch microseconds as a matplotlib date (days since 1970-01-01, matplotlib's default epoch)."""
    return t_us / US_PER_DAY


def _levels() -> list[list[float]]:
    """Tick candidates in milliseconds, sparsest first: round durations as a person says them (500 ms, 2 s,
    30 s, 5 min, 2 h), not the powers of ten of the milliseconds (1.7 min, 17 min). Seconds, minutes and
    hours each have their own round numbers (a tick at 50 s and one at 1 min would collide)."""
    spec = [  # (mantissas below 10 s, seconds, minutes, hours)
        ((1,), (10,), (1, 10), (1, 10)),
        ((1, 2, 5), (10, 20, 30), (1, 2, 5, 10, 20, 30), (1, 2, 6, 12, 24)),
        ((1, 1.5, 2, 3, 4, 5, 7), (10, 15, 20, 30, 40), (1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 45),
         (1, 2, 3, 4, 6, 8, 12, 24)),
        ((1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9), (10, 12, 15, 20, 25, 30, 40, 50),
         (1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50),
         (1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 18, 24)),
    ]
    out = []
    for mantissas, seconds, minutes, hours in spec:
        values = {m * 10.0**e for e in range(-1, 4) for m in mantissas if m * 10.0**e < 10_000}
        values |= {m * 1_000.0 for m in seconds} | {m * 60_000.0 for m in minutes} | {m * 3_600_000.0 for m in hours}
        out.append(sorted(values))
    return out


TICK_LEVELS = _levels()


def duration_ticks(lo: float, hi: float) -> list[float]:
    """Three to eight round durations within ``[lo, hi]`` (ms), fewer only when no level has three."""
    for level in TICK_LEVELS:
        ticks = [v for v in level if lo <= v <= hi]
        if len(ticks) >= 3:
            return ticks if len(ticks) <= 8 else ticks[:: math.ceil(len(ticks) / 8)]
    return [v for v in TICK_LEVELS[-1] if lo <= v <= hi]


def _tick_label(ms: float, _pos: object = None) -> str:
    return format_duration_ms(ms).replace(".0 ", " ")  # "2 s", not "2.0 s", on a round tick


def _duration_axis(ax: Any, axis: str = "y") -> None:
    """Round-duration ticks on a log axis; call once the data is drawn (the ticks follow the limits)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    target.set_major_locator(FixedLocator(duration_ticks(lo, hi)))
    target.set_major_formatter(FuncFormatter(_tick_label))
    target.set_minor_formatter(NullFormatter())


def _time_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(tz=mdates.UTC, minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=mdates.UTC, show_offset=False))


def _to_svg(fig: Figure, name: str, key: str) -> str:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"stagewatch-{key}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    # Inline: no XML prolog or DOCTYPE (the DTD's address would be the page's only URL) and no RDF metadata.
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    # matplotlib numbers its element ids per figure (axes_1, line2d_1, ...): prefixed, so that ids stay
    # unique in a page holding several figures, with every reference to them.
    text = re.sub(r'\bid="', f'id="{key}-', text)
    text = text.replace('href="#', f'href="#{key}-').replace("url(#", f"url(#{key}-")
    return text.replace("<svg ", f'<svg role="img" aria-label="{name}" class="chart" ', 1)


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_MARKERS:
        return points
    step = len(points) / MAX_MARKERS
    return [points[int(i * step)] for i in range(MAX_MARKERS)]


def _floor(values: Sequence[float]) -> np.ndarray:
    """Waits of 0 (a clamped clock-skew gap) sit on a log axis at 1 ms."""
    return np.maximum(np.asarray(values, dtype=float), 1.0)


def _panel(ax: Any, s: StageSeries, data: ReportData) -> None:
    half = data.bucket_us / 2
    x = np.asarray([_date(t + half) for t in s.starts_us])
    ax.fill_between(x, _floor(s.usual_p50), _floor(s.usual_p95), color=BAND_COLOUR, alpha=0.55, linewidth=0)
    ax.plot(x, _floor(s.p50), color=P50_COLOUR, linewidth=1.4, marker=".", markersize=3)
    ax.plot(x, _floor(s.p95), color=P95_COLOUR, linewidth=1.4, marker=".", markersize=3)
    end_us = data.last_us if data.last_us is not None else 0
    for inc in data.incidents:
        if inc["stage"] == s.stage:
            start = parse_rfc3339_us(inc["started_at"])
            stop = parse_rfc3339_us(inc["resolved_at"]) if inc.get("resolved_at") else end_us
            ax.axvspan(_date(start), _date(max(stop, start + US_PER_MS)), color=INCIDENT_COLOUR, alpha=0.12,
                       linewidth=0)
    points: dict[str, list[tuple[float, float]]] = {}
    for a in data.anomalies:
        if a["stage"] == s.stage and a.get("observed_ms") is not None:
            points.setdefault(a["kind"], []).append((_date(parse_rfc3339_us(a["event_time"])), a["observed_ms"]))
    for kind, pts in points.items():
        marker, colour, _ = MARKERS.get(kind, MARKERS["slow_stage"])
        kept = _thin(pts)
        ax.scatter([p[0] for p in kept], _floor([p[1] for p in kept]), marker=marker, color=colour,
                   s=12 if marker != "o" else 8, linewidths=0.9, alpha=0.75, zorder=3)
    flagged = sum(len(p) for p in points.values())
    title = "end to end (complete files)" if s.stage == END_TO_END else s.stage
    ax.set_title(f"{title} · {flagged} flagged" if flagged else title, loc="left", fontsize=10,
                 color=INCIDENT_COLOUR if flagged else "#222222")
    ax.set_yscale("log")
    _duration_axis(ax)
    _time_axis(ax)
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    if data.first_us is not None and data.last_us is not None:
        ax.set_xlim(_date(s.starts_us[0]), _date(s.starts_us[-1] + data.bucket_us))


def stage_latency_svg(data: ReportData) -> str | None:
    """Small multiples, one per stage and one for end to end: p50 and p95 of the wait per bucket, the usual
    band, the stage's incidents as shaded spans and its anomalies as markers. None without any wait."""
    if not data.series or not data.series[0].starts_us:
        return None
    cols = 2
    rows = math.ceil(len(data.series) / cols)
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(11, 0.4 + 2.3 * rows))
        axes = fig.subplots(rows, cols, sharex=True, squeeze=False)
        for ax, s in zip(axes.flat, data.series, strict=False):
            _panel(ax, s, data)
        for ax in list(axes.flat)[len(data.series):]:
            ax.set_visible(False)
        bucket, window = duration_words(data.bucket_us), duration_words(band_window_us(data.bucket_us))
        handles = [
            Line2D([], [], color=P50_COLOUR, marker=".", label=f"p50 per {bucket}"),
            Line2D([], [], color=P95_COLOUR, marker=".", label=f"p95 per {bucket}"),
            Patch(color=BAND_COLOUR, alpha=0.55, label=f"usual: p50–p95 of the {window} before (unflagged files)"),
            Patch(color=INCIDENT_COLOUR, alpha=0.12, label="incident on this stage"),
            Line2D([], [], linestyle="", marker="o", color=MARKERS["slow_stage"][1], label="slow (anomaly)"),
            Line2D([], [], linestyle="", marker="x", color=MARKERS["stalled"][1], label=MARKERS["stalled"][2]),
            Line2D([], [], linestyle="", marker="v", color=MARKERS["failed"][1], label=MARKERS["failed"][2]),
        ]
        fig.legend(handles=handles, loc="upper center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (0.4 + 2.3 * rows)))
        return _to_svg(fig, "latency by stage over time", "st")


def end_to_end_svg(data: ReportData) -> str | None:
    """Histogram of the complete files' end-to-end latency on a log axis, the slow-flagged files stacked
    in red, with p50 / p95 / p99 marked. None without complete files."""
    if not any(v > 0 for v, _ in data.end_to_end):
        return None
    values = [v for v, _ in data.end_to_end if v > 0]
    rest = [v for v, flagged in data.end_to_end if v > 0 and not flagged]
    flagged = [v for v, flagged in data.end_to_end if v > 0 and flagged]
    lo, hi = min(values), max(values)
    bins = np.geomspace(lo, hi * 1.0001, 50).tolist() if hi > lo else [lo * 0.9, hi * 1.1]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(11, 3.2))
        ax = fig.subplots()
        ax.hist([rest, flagged], bins=bins, stacked=True, color=[P50_COLOUR, INCIDENT_COLOUR],
                label=["complete files", "flagged slow end to end"])
        ax.set_xscale("log")
        _duration_axis(ax, "x")
        top = ax.get_ylim()[1]
        # Staggered heights: p95 and p99 are often close together on a log axis.
        for (q, style), height in zip(((50, "-"), (95, "--"), (99, ":")), (0.97, 0.87, 0.77), strict=True):
            v = float(np.percentile(values, q))
            ax.axvline(v, color="#333333", linestyle=style, linewidth=1)
            ax.text(v, top * height, f" p{q} {format_duration_ms(v)}", va="top", ha="left", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        ax.set_ylabel("files")
        ax.grid(True, axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
        fig.tight_layout()
        return _to_svg(fig, "end-to-end latency distribution", "e2e")
