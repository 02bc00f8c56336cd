"""Hostile log lines: what someone else's code can write, case by case, each with how stagewatch must take it.

``hostile_lines(template)`` turns one valid LogEntry (a dict) into lines that must not change any verdict about
the other files: dated at the ends of time, with absurd numbers, with identifiers carrying terminal escapes,
control and bidi characters, blank. ``spliced`` puts them into a stream of valid lines. ``whole_lines`` is the
hypothesis strategy for what those cases do not think of, ``placed`` puts its lines into a ``CleanDay``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us
from stagewatch.evaluation.simulate import SHORT_FAULTS, SHORT_HOURS, SHORT_START, SimConfig, simulate_to_dir

__all__ = [
    "HARMLESS_EVENTS",
    "HOSTILE",
    "RELATIVE",
    "CleanDay",
    "Drawn",
    "Verdict",
    "hostile_lines",
    "jaccard",
    "placed",
    "spliced",
    "whole_lines",
]


def _with(template: dict[str, Any], **changes: Any) -> dict[str, Any]:
    entry = copy.deepcopy(template)
    for path, value in changes.items():
        node = entry
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return entry


# (name, what must become of the line, the change to a valid entry -- or the raw line)
HOSTILE: list[tuple[str, str, dict[str, Any] | bytes]] = [
    ("year_9999", "bad_timestamp", {"timestamp": "9999-12-31T23:59:59Z"}),
    ("leap_second_of_9999", "bad_timestamp", {"timestamp": "9999-12-31T23:59:60Z"}),
    ("epoch_0", "bad_timestamp", {"timestamp": "1970-01-01T00:00:00Z"}),
    ("year_0", "bad_timestamp", {"timestamp": "0000-01-01T00:00:00Z"}),
    ("year_10000", "bad_timestamp", {"timestamp": "10000-01-01T00:00:00Z"}),
    ("offset_24h", "bad_timestamp", {"timestamp": "2026-06-01T12:00:00+24:00"}),
    ("no_offset", "bad_timestamp", {"timestamp": "2026-06-01T12:00:00"}),
    # Sound dates, far from when the logs are: they would move the watermark (or open files that stall).
    ("year_2099", "future", {"timestamp": "2099-06-01T00:00:00Z"}),
    ("last_second_before_2200", "future", {"timestamp": "2199-12-31T23:59:59Z"}),
    ("year_2001", "too_old", {"timestamp": "2001-06-01T00:00:00Z"}),
    ("first_second_of_2000", "too_old", {"timestamp": "2000-01-01T00:00:00Z"}),
    ("epoch_number_huge", "bad_timestamp", {"timestamp": 1e308}),
    ("uid_terminal_escape", "bad_uid", {"jsonPayload__uid": "evil\x1b[2J\x1b]0;owned\x07"}),
    ("uid_bidi_override", "bad_uid", {"jsonPayload__uid": "f-\u202e1"}),
    ("uid_nul", "bad_uid", {"jsonPayload__uid": "f\x00"}),
    ("uid_100k", "bad_uid", {"jsonPayload__uid": "u" * 100_000}),
    ("stage_newline", "bad_stage", {"jsonPayload__stage": "upload\nfake"}),
    ("stage_c1", "bad_stage", {"jsonPayload__stage": "up\u0085load"}),
    ("blank", "blank", b""),
    ("carriage_return", "blank", b"\r"),
    ("spaces", "blank", b"   "),
]
# Dated relative to the valid line before them, wherever they are put: (name, outcome, seconds from it).
RELATIVE: list[tuple[str, str, float]] = [
    ("a_day_ahead", "future", 86_400.0),
    ("twenty_minutes_ahead", "future", 1200.0),  # (the clock's resolution is a block or two of events)
    ("a_month_behind", "too_old", -30 * 86_400.0),
    ("leap_second_a_day_ahead", "future", 86_400.0),  # written as :60 of the second before
]
# Lines that are events but must change no verdict about other files (their own file is new and alone).
HARMLESS_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("latency_1e308", {"httpRequest__latency": "1e308s"}),
    ("latency_negative", {"httpRequest__latency": "-5s"}),
    ("tenant_escape", {"jsonPayload__tenant": "\x1b[31mred\x1b[0m"}),
]


def hostile_lines(template: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """(name, expected outcome, line) for each case; expected ``event`` for lines that stay events."""
    out = []
    for name, outcome, change in HOSTILE:
        line = change if isinstance(change, bytes) else orjson.dumps(_with(template, **change))
        out.append((name, outcome, line))
    for name, outcome, _ in RELATIVE:
        out.append((name, outcome, orjson.dumps(_with(template, insertId=f"relative-{name}"))))
    for k, (name, change) in enumerate(HARMLESS_EVENTS):
        # A uid of its own and no insertId: a duplicate of nothing, and alone in its file.
        entry = _with(template, **change, jsonPayload__uid=f"hostile-{k}", insertId=f"hostile-{k}")
        out.append((name, "event", orjson.dumps(entry)))
    return out


def spliced(valid: list[bytes], hostile: list[tuple[str, str, bytes]], seed: int = 1) -> list[bytes]:
    """``valid`` in its order with the ``hostile`` lines put at random places (each after the stream's first 500
    lines, so that inference has seen normal lines first); a line that stays an event takes the time of the
    valid line before it, so that it is on time and goes all the way through."""
    rng = random.Random(seed)
    out = list(valid)
    offsets = {name: s for name, _, s in RELATIVE}
    originals = set(valid)
    for name, outcome, line in hostile:
        at = rng.randint(min(500, len(out)), len(out))
        if outcome == "event" or name in offsets:
            before = next(e for e in map(_entry, (x for x in reversed(out[:at]) if x in originals))
                          if isinstance(e, dict) and "timestamp" in e)
            t_us = parse_rfc3339_us(before["timestamp"]) + int(offsets.get(name, 0.0) * US_PER_S)
            stamp = format_rfc3339(t_us)
            if name.startswith("leap_second"):
                stamp = format_rfc3339(t_us // US_PER_S * US_PER_S - US_PER_S)[:17] + "60Z"
            line = orjson.dumps({**orjson.loads(line), "timestamp": stamp})
        out.insert(at, line)
    return out


def straggled(valid: list[bytes], lead_s: float, lines: int = 1, copies: int = 1) -> tuple[list[bytes], list[bytes]]:
    """Two inputs alike but for a few lines: a file's line moved later in the day's order, behind the newest time
    before it by 20-40 s of event time -- a straggler, within the allowed lateness (60 s), after a line of its own
    file 10 s or more older than that newest time --; and the same with, just before the straggler, ``lines``
    lines of other files dated ``lead_s`` ahead of that newest time (a writer whose clock runs fast, believed:
    well within ``max_ahead_s``), each sent ``copies`` times (at-least-once delivery). A watermark that followed
    the newest line would have passed the straggler (and, in the streaming job, its file's line before it)."""
    at = len(valid) // 2
    times = [_time_us(x) for x in valid]
    newest = max(t for t in times[:at] if t is not None)
    uids = [e["jsonPayload"].get("uid") if isinstance(e := _entry(x), dict) and isinstance(e.get("jsonPayload"), dict)
            else None for x in valid]
    j = next(j for j in range(at - 1, 0, -1)
             if (t := times[j]) is not None and newest - 40 * US_PER_S <= t <= newest - 20 * US_PER_S
             and any(uids[k] == uids[j] and t < (times[k] or 0) <= newest - 10 * US_PER_S
                     for k in range(j + 1, at)))
    assert (times[j] or 0) < newest + (lead_s - 60) * US_PER_S  # behind what the newest line alone would pull
    rest = valid[:j] + valid[j + 1:at]
    stamp = format_rfc3339(newest + int(lead_s * US_PER_S))
    ahead = [orjson.dumps(_with(orjson.loads(valid[j]), jsonPayload__uid=f"hostile-ahead-{n}",
                                insertId=f"hostile-ahead-{n}", timestamp=stamp)) for n in range(lines)]
    return [*rest, valid[j], *valid[at:]], [*rest, *(ahead * copies), valid[j], *valid[at:]]


Verdict = tuple[str, str, str, str]


class CleanDay:
    """A short simulated day to put drawn lines into: its lines, a valid upload entry to draw from, its uids."""

    def __init__(self, folder: Path, seed: int = 11, rate_per_min: float = 3) -> None:
        simulate_to_dir(SimConfig(seed=seed, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=rate_per_min,
                                  faults=SHORT_FAULTS), folder)
        self.path = folder / "logs.jsonl"
        self.lines = self.path.read_bytes().splitlines()
        entries = [e for e in map(_entry, self.lines) if isinstance(e, dict) and isinstance(e.get("jsonPayload"), dict)]
        self.template = next(e for e in entries if e["jsonPayload"].get("stage") == "upload")
        self.uids = {e["jsonPayload"]["uid"] for e in entries if isinstance(e["jsonPayload"].get("uid"), str)}

    def verdicts(self, anomalies: Iterable[dict[str, Any]]) -> set[Verdict]:
        """The verdicts about this day's own files (a drawn line's file may have verdicts of its own)."""
        return {(a["kind"], a["uid"], a["stage"], a["event_time"]) for a in anomalies if a["uid"] in self.uids}


def jaccard(a: set[Verdict], b: set[Verdict]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _time_us(line: bytes) -> int | None:
    entry = _entry(line)
    try:
        return parse_rfc3339_us(entry["timestamp"])
    except (TypeError, KeyError, ValueError):
        return None


def _entry(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Whole lines drawn by hypothesis: what the fixed cases above do not think of. A drawn line is bytes without a
# newline, a LogEntry with fields replaced by junk (or removed), a LogEntry cut short or with one byte changed, or
# JSON that is not an object. The uid of a drawn entry is never a real file's: junk, "hostile-" + junk, or absent,
# so that "no verdict about another file changes" can be asserted. An entry's time is junk, or the time of the
# valid line before it plus an offset (close to it, so that it goes all the way through, or far from it).
# ---------------------------------------------------------------------------------------------------------------

_ODD = ["\x1b[2J", "\x1b]0;owned\x07", "\u202e", "\x00", "\x85", "\r", "<!channel>", "*bold*", "`", '"', "\\",
        "\ufeff", "𝕦", "\u2028"]
_text = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=24),
                  st.lists(st.sampled_from(_ODD), min_size=1, max_size=4).map("".join))
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False), _text)
_junk = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_text, inner, max_size=3), max_leaves=6)
_DROP = object()
_FIELDS = ["timestamp", "insertId", "severity", "jsonPayload", "jsonPayload__stage", "jsonPayload__tenant",
           "jsonPayload__lot", "jsonPayload__message", "httpRequest", "httpRequest__latency", "receiveTimestamp"]
# Seconds from the valid line before: near (an event on time, or a little late), or beyond the bounds.
_offsets = st.one_of(st.floats(-60.0, 60.0), st.sampled_from([-30 * 86_400.0, 15 * 60.0, 86_400.0, 1e9]))


@dataclass(frozen=True)
class Drawn:
    """One drawn line before it is placed: ``raw`` as it is, or ``entry`` dated ``offset_s`` after the valid line
    before it (``None``: its own ``timestamp``), then cut to ``cut`` bytes or with byte ``flip`` changed."""

    at: float  # where in the stream, as a fraction of it
    raw: bytes | None = None
    entry: Any = None
    offset_s: float | None = None
    cut: int | None = None
    flip: int | None = None

    def line(self, before_us: int) -> bytes:
        if self.raw is not None:
            return self.raw
        entry = self.entry
        if self.offset_s is not None and isinstance(entry, dict):
            entry = {**entry, "timestamp": format_rfc3339(before_us + int(self.offset_s * US_PER_S))}
        line = orjson.dumps(entry)
        if self.cut is not None:
            line = line[: self.cut % (len(line) + 1)]
        if self.flip is not None and line:
            i = self.flip % len(line)
            line = line[:i] + bytes([line[i] ^ 0x20]) + line[i + 1:]
        return line.replace(b"\n", b" ")


@st.composite
def whole_lines(draw: st.DrawFn, template: dict[str, Any]) -> Drawn:
    at = draw(st.floats(0.0, 1.0))
    kind = draw(st.sampled_from(["bytes", "entry", "entry", "entry", "damaged", "not_object"]))
    if kind == "bytes":
        return Drawn(at, raw=draw(st.binary(max_size=300)).replace(b"\n", b""))
    if kind == "not_object":
        return Drawn(at, entry=draw(_junk))
    # Mostly entries that parse, so that the drawn lines reach the detector, not only the parser.
    plausible = st.one_of(st.sampled_from(["upload", "download", "analyse", "lot_check", "acme", "0.5s", "9e9s",
                                           "ERROR", "-1s", "1e308s", 0.5]), _text)
    changes = draw(st.dictionaries(st.sampled_from(_FIELDS), st.one_of(st.just(_DROP), _junk, plausible),
                                   max_size=3))
    uid = st.text("abcdef0123456789-", min_size=1, max_size=8) | _text
    changes["jsonPayload__uid"] = draw(st.one_of(uid.map("hostile-".__add__), uid.map("hostile-".__add__),
                                                 uid.map("hostile-".__add__), st.just(_DROP), _junk))
    entry = copy.deepcopy(template)
    for path, value in changes.items():
        node = entry
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if value is _DROP:
                node.pop(leaf, None)
            else:
                node[leaf] = value
    offset = None if "timestamp" in changes else draw(_offsets)
    if kind == "damaged":
        return Drawn(at, entry=entry, offset_s=offset, cut=draw(st.none() | st.integers(0, 10_000)),
                     flip=draw(st.none() | st.integers(0, 10_000)))
    return Drawn(at, entry=entry, offset_s=offset)


def placed(valid: list[bytes], drawn: list[Drawn], skip: int = 500) -> list[bytes]:
    """``valid`` with the drawn lines put in (after its first ``skip`` lines); each dated from the valid line
    before it."""
    out = list(valid)
    inserted: set[int] = set()
    for d in sorted(drawn, key=lambda d: d.at):
        at = min(skip, len(out)) + int(d.at * (len(out) - min(skip, len(out))))
        before = next(t for t in (_time_us(out[i]) for i in range(at - 1, -1, -1) if i not in inserted)
                      if t is not None)
        out.insert(at, d.line(before))
        inserted = {i + (i >= at) for i in inserted} | {at}
    return out
