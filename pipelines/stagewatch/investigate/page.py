"""The page's furniture: its style sheet, its time formats, and the cells, tables and tiles its sections are built
of. Every value from a run's tables reaches the HTML through ``td`` / ``listed`` (escaped) unless it is already
``Markup`` built from escaped parts."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape

from stagewatch.core.timeutil import US_PER_S, format_duration_ms, parse_rfc3339_us
from stagewatch.investigate.report_data import ReportData

__all__ = ["CSS", "MAX_LISTED", "Markup", "Page", "breakable_id", "counts", "listed", "ms", "ratio_text", "table",
           "td", "tile"]

# Lists inside a table cell stop here ("and 12 more"): a global incident names every tenant, a lot can
# leave hundreds of files unfinished, and the page must stay readable (and small).
MAX_LISTED = 8

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
       color: #222; background: #fff; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; max-width: 1180px;
       line-height: 1.4; font-size: 15px; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .5rem; border-bottom: 2px solid #e3e3e3; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
.sub, .note { color: #555; font-size: .9rem; }
.tiles { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: .5rem .9rem; min-width: 9rem; background: #fafafa; }
.tile b { display: block; font-size: 1.7rem; }
.tile.bad { border-color: #e7a1a1; background: #fdf1f1; }
.tile.good { border-color: #a9d8a9; background: #f2fbf2; }
.headline { font-size: 1.05rem; margin: .3rem 0; }
.headline.bad { color: #a11; }
.chart { width: 100%; height: auto; display: block; margin: .4rem 0; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; margin: .4rem 0 1rem; }
th, td { text-align: left; padding: .3rem .45rem; border-bottom: 1px solid #e6e6e6; vertical-align: top; }
th { background: #f3f3f3; }
th.group { text-align: center; border-bottom: 1px solid #ccc; }
.scroll { overflow-x: auto; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.above td { background: #fff4f4; }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 9px; font-size: .8rem; font-weight: 600; }
.badge.open { background: #d62728; color: #fff; }
.badge.resolved { background: #dfeedd; color: #235a23; }
.nowrap { white-space: nowrap; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .82rem; }
.id { color: #666; display: block; margin-top: .15rem; overflow-wrap: normal; word-break: normal; }
.bar { margin-left: auto; background: #c6dbef; height: .55rem; border-radius: 2px; margin-top: .2rem; }
.bar.hot { background: #f4a3a3; }
.empty { color: #555; font-style: italic; padding: .5rem 0; }
ul.files { margin: 0; padding-left: 1.1rem; }
"""


def ratio_text(observed: float, usual: float) -> str:
    return f"{observed / usual:.1f}x" if usual > 0 else "—"


class Page:
    """Formatting shared by the sections: times in UTC, as short as the data's span allows."""

    def __init__(self, data: ReportData) -> None:
        self.data = data
        first, last = data.first_us, data.last_us
        self.one_day = first is not None and last is not None and _day(first) == _day(last)

    def time(self, value: str | int | None) -> str:
        if value is None:
            return "—"
        t = parse_rfc3339_us(value) if isinstance(value, str) else value
        d = datetime.fromtimestamp(t / US_PER_S, UTC)
        return d.strftime("%H:%M:%S") if self.one_day else d.strftime("%m-%d %H:%M")

    def minute(self, value: str) -> str:
        """Down to the minute: for sentences."""
        d = datetime.fromtimestamp(parse_rfc3339_us(value) / US_PER_S, UTC)
        return d.strftime("%H:%M") if self.one_day else d.strftime("%m-%d %H:%M")

    def bucket(self, start_us: int) -> str:
        end = datetime.fromtimestamp((start_us + self.data.bucket_us) / US_PER_S, UTC)
        start = datetime.fromtimestamp(start_us / US_PER_S, UTC)
        head = start.strftime("%H:%M") if self.one_day else start.strftime("%m-%d %H:%M")
        return f"{head}–{end.strftime('%H:%M')}"


def _day(t_us: int) -> str:
    return datetime.fromtimestamp(t_us / US_PER_S, UTC).strftime("%Y-%m-%d")


def ms(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format_duration_ms(value)


class Markup(str):
    """Text that is already HTML (built from escaped parts): ``td`` does not escape it again."""


def listed(items: list[str], limit: int = MAX_LISTED, nowrap: bool = False) -> Markup:
    """Up to ``limit`` items, then "and N more"; ``nowrap``: never break inside an item (file ids)."""
    shown = ", ".join(f"<span class=nowrap>{escape(x)}</span>" if nowrap else escape(x) for x in items[:limit])
    return Markup(shown + (f" and {len(items) - limit} more" if len(items) > limit else ""))


def breakable_id(text: str) -> Markup:
    """An id that a narrow column breaks only between its parts (after a dash before its closing timestamp),
    never inside a word or the timestamp: "slow_stage-upload-tenant-wayne-" / "2026-06-06T13:52:36Z"."""
    m = re.search(r"\d{4}-\d\d-\d\dT[^-]*$", text)
    head, stamp = (text[:m.start()], text[m.start():]) if m else (text, "")
    return Markup("-<wbr>".join(escape(part) for part in head.split("-")) + escape(stamp))


def table(head: Iterable[tuple[str, bool]], rows: Iterable[str], groups: Iterable[tuple[str, int]] = ()) -> str:
    """A table in a box that scrolls sideways on a narrow screen rather than widening the page; ``groups``:
    an optional header row above ``head`` of (label, columns spanned)."""
    cells = "".join(f'<th class="num">{escape(h)}</th>' if num else f"<th>{escape(h)}</th>" for h, num in head)
    over = "".join(f'<th colspan="{n}" class="group">{escape(label)}</th>' for label, n in groups)
    over_row = f"<tr>{over}</tr>" if over else ""
    return (f'<div class="scroll"><table><thead>{over_row}<tr>{cells}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def td(value: object, num: bool = False) -> str:
    """A cell; ``value`` is escaped unless it is already markup (``Markup``)."""
    text = value if isinstance(value, Markup) else escape(str(value))
    return f'<td class="num">{text}</td>' if num else f"<td>{text}</td>"


def tile(label: str, value: str, detail: str, tone: str = "") -> str:
    return (f'<div class="tile {tone}"><b>{escape(value)}</b>{escape(label)}'
            f'<div class="note">{escape(detail)}</div></div>')


def counts(counter: Counter[str], order: Iterable[str]) -> str:
    return " · ".join(f"{k.replace('_', ' ')} {counter[k]:,}" for k in order if counter.get(k))
