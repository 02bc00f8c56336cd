"""What a value from a log line may be: read as text, as an event time, as an identifier or as a label -- or
why not. The parser (``parser``) uses these on every line; ``events.Limits`` says how far they go."""

from __future__ import annotations

from typing import Any

from stagewatch.core.timeutil import US_PER_MS, US_PER_S, parse_rfc3339_us

__all__ = ["as_str", "identifier_problem", "label", "timestamp_us"]


def as_str(value: Any) -> str | None:
    """A scalar as text (numbers too: an id logged as a number); None for an empty string, a bool or a container."""
    if value is None:
        return None
    if type(value) is str:
        return value or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def timestamp_us(value: Any) -> int:
    if type(value) is str:
        return parse_rfc3339_us(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Plain JSON lines may carry epoch numbers: seconds, milliseconds or microseconds by magnitude. The range
        # is checked by the caller; an infinite or NaN number raises here (OverflowError, ValueError).
        v = float(value)
        if v < 1e11:
            return round(v * US_PER_S)
        if v < 1e14:
            return round(v * US_PER_MS)
        return int(v)
    raise ValueError("missing timestamp")


def identifier_problem(value: str, limit: int) -> str | None:
    """Why a uid or stage cannot be one, or None."""
    if len(value) > limit:
        return f"is {len(value):,} characters long (at most {limit})"
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        return f"holds the control or formatting character U+{ord(bad):04X}"
    return None


def label(value: str | None, limit: int) -> str | None:
    """A tenant or lot as a label: characters that are not printable dropped, cut to ``limit``; None if empty."""
    if value is None or (len(value) <= limit and value.isprintable()):
        return value
    cleaned = "".join(c for c in value if c.isprintable())[:limit]
    return cleaned or None
