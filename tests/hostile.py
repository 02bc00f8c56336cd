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

__all__ = ["HOSTILE", "hostile_lines", "spliced"]


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
    for _, outcome, line in hostile:
        at = rng.randint(min(500, len(out)), len(out))
        if outcome == "event":
            before = next(e for e in map(_entry, reversed(out[:at])) if isinstance(e, dict) and "timestamp" in e)
            line = orjson.dumps({**orjson.loads(line), "timestamp": before["timestamp"]})
        out.insert(at, line)
    return out


def _entry(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
