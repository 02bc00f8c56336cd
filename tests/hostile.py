"""Hostile log lines: what someone else's code can write, case by case, each with how stagewatch must take it.

``hostile_lines(template)`` turns one valid LogEntry (a dict) into lines that must not change any verdict about
the other files: dated at the ends of time, with absurd numbers, with identifiers carrying terminal escapes,
control and bidi characters, blank. ``spliced`` puts them into a stream of valid lines.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson

from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us

__all__ = ["HARMLESS_EVENTS", "HOSTILE", "RELATIVE", "hostile_lines", "spliced"]


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


def _entry(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
