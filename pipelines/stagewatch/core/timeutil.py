"""Event-time arithmetic: RFC 3339 parsing into integer microseconds, formatting, human durations.

Times are ``int`` microseconds since the Unix epoch everywhere in the core: exact (no float drift when two
drivers compare verdicts), cheap to compare, and the precision Beam timestamps carry.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, datetime

__all__ = [
    "US_PER_MS",
    "US_PER_S",
    "format_duration_ms",
    "format_rfc3339",
    "parse_duration_s",
    "parse_rfc3339_us",
]

US_PER_MS = 1_000
US_PER_S = 1_000_000

# Cache of "YYYY-MM-DDTHH:MM" -> epoch microseconds of that minute. Log streams are dense in time, so nearly
# every timestamp hits a handful of entries; this keeps timestamp parsing out of the profile.
_MINUTE_CACHE: dict[str, int] = {}
_MINUTE_CACHE_MAX = 50_000
# ... and of "YYYY-MM-DDTHH:MM:SS" (filled from a cached minute): a second's lines skip the seconds' checks.
_SECOND_CACHE: dict[str, int] = {}
_SECOND_CACHE_MAX = 100_000


_MINUTE_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", re.ASCII)
_TAIL_SHAPE = re.compile(r":\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def _minute_us(prefix: str) -> int:
    cached = _MINUTE_CACHE.get(prefix)
    if cached is not None:
        return cached
    if not _MINUTE_SHAPE.fullmatch(prefix):  # int() alone would admit spaces, signs and non-ASCII digits
        raise ValueError(prefix)
    year, month, day = int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10])
    hour, minute = int(prefix[11:13]), int(prefix[14:16])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60):
        raise ValueError(prefix)
    # calendar.timegm validates nothing, so the date is checked through datetime once per minute.
    datetime(year, month, day, hour, minute)
    value = calendar.timegm((year, month, day, hour, minute, 0)) * US_PER_S
    if len(_MINUTE_CACHE) >= _MINUTE_CACHE_MAX:
        _MINUTE_CACHE.clear()
    _MINUTE_CACHE[prefix] = value
    return value


def parse_rfc3339_us(text: str) -> int:
    """Parse an RFC 3339 timestamp (up to nanoseconds, ``Z`` or an offset) into epoch microseconds.

    Raises ``ValueError`` on anything else. Sub-microsecond digits are truncated, as Beam does.
    """
    # Fast paths for what Cloud Logging writes, "2026-06-06T08:21:26.343874838Z": its second already seen, or
    # its minute. str.isdigit admits non-ASCII digits too; int() rejects those with ValueError.
    if text[-1:] == "Z" and text[19:20] == ".":
        digits = text[20:-1]
        second = _SECOND_CACHE.get(text[:19])
        if second is not None and digits.isdigit():
            return second + int(digits[:6].ljust(6, "0"))
        base = _MINUTE_CACHE.get(text[:16]) if text[16:17] == ":" else None
        if base is not None:
            sec = text[17:19]
            if sec.isdigit() and digits.isdigit() and sec <= "60":
                second = base + int(sec) * US_PER_S
                if len(_SECOND_CACHE) >= _SECOND_CACHE_MAX:
                    _SECOND_CACHE.clear()
                _SECOND_CACHE[text[:19]] = second
                return second + int(digits[:6].ljust(6, "0"))
    return _parse_rfc3339_slow(text)


def _parse_rfc3339_slow(text: str) -> int:
    n = len(text)
    if n < 20 or not _TAIL_SHAPE.fullmatch(text, 16):
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    base = _minute_us(text[:16])
    sec_text = text[17:19]
    if not sec_text.isdigit():
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    seconds = int(sec_text)
    if seconds > 60:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    pos = 19
    micros = 0
    if pos < n and text[pos] == ".":
        end = pos + 1
        while end < n and text[end].isdigit():
            end += 1
        digits = text[pos + 1 : end]
        if not digits:
            raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
        micros = int((digits + "000000")[:6])
        pos = end
    zone = text[pos:]
    if zone in ("Z", "z"):
        offset_us = 0
    elif len(zone) == 6 and zone[0] in "+-" and zone[3] == ":" and zone[1:3].isdigit() and zone[4:].isdigit():
        if int(zone[1:3]) > 23 or int(zone[4:6]) > 59:
            raise ValueError(f"not an RFC 3339 offset: {text[:40]!r}")
        offset_us = (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * US_PER_S
        if zone[0] == "+":
            offset_us = -offset_us
    else:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    return base + seconds * US_PER_S + micros + offset_us


_FORMAT_CACHE: dict[int, str] = {}


def format_rfc3339(t_us: int) -> str:
    """Format epoch microseconds as RFC 3339 UTC with microseconds, e.g. ``2026-06-06T08:21:26.343874Z``."""
    minute, rest = divmod(int(t_us), 60 * US_PER_S)
    prefix = _FORMAT_CACHE.get(minute)
    if prefix is None:
        if len(_FORMAT_CACHE) >= _MINUTE_CACHE_MAX:
            _FORMAT_CACHE.clear()
        d = datetime.fromtimestamp(minute * 60, UTC)
        # Not strftime: glibc does not zero-pad years below 1000, and the text must parse back.
        prefix = _FORMAT_CACHE[minute] = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:"
    seconds, micros = divmod(rest, US_PER_S)
    return f"{prefix}{seconds:02d}.{micros:06d}Z"


def parse_duration_s(text: str) -> float:
    """Parse a protobuf Duration string as Cloud Logging writes it (``"1.234s"``) into seconds (finite, >= 0)."""
    if not text.endswith("s"):
        raise ValueError(f"not a duration: {text!r}")
    value = float(text[:-1])
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a duration: {text!r}")
    return value


def format_duration_ms(ms: float) -> str:
    """A duration as a support person reads it: ``340 ms``, ``8.4 s``, ``84 s``, ``12 min``, ``2.5 h``."""
    # Each unit is chosen on the value as it will be printed, so 999.6 ms reads "1.0 s", not "1000 ms".
    if round(ms) < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    if round(seconds) < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if round(minutes, 1) < 10:
        return f"{minutes:.1f} min"
    if round(minutes) < 90:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"
