"""What a log line becomes: a ``StageEvent`` (a file reached a stage), or a ``Rejected`` line with a reason from
``REJECT_REASONS``; and where each field lives in a line (``FieldMapping``: dotted paths, every one configurable;
the defaults follow what a Cloud Logging sink publishes, ``shared/logentry-example.json``). ``parser.Parser``
turns lines into these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "BLANK",
    "LIMITS",
    "MAX_LINE_BYTES",
    "REJECT_REASONS",
    "FieldMapping",
    "Limits",
    "Rejected",
    "StageEvent",
]

MAX_LINE_BYTES = 256 * 1024

# Reasons a line is rejected, in the order the parser checks them. ``late`` and ``duplicate`` are added by the
# drivers (they depend on the stream, not on the line).
REJECT_REASONS = (
    "too_large",
    "not_utf8",
    "invalid_json",
    "not_object",
    "missing_uid",
    "bad_uid",
    "missing_stage",
    "bad_stage",
    "bad_timestamp",
)
#: An empty (or blank) line: counted on its own, neither an event nor a rejected line, and not dead-lettered.
BLANK = "blank"


@dataclass(frozen=True)
class Limits:
    """What a log line's values may be. Values from logs are someone else's: a uid or stage with control or
    formatting characters (C0, C1, NUL, bidi overrides) or longer than its cap is rejected; a tenant or lot is
    cleaned (those characters dropped, cut to its cap); an event time outside ``[min_time, max_time)`` is a
    ``bad_timestamp`` (no log line of this pipeline was written in 1970 or in 9999, and such times break the
    arithmetic of the clocks downstream); a reported latency outside ``[0, max_latency_ms]`` is dropped from its
    event (the event still counts: its time is sound, only what the line said about its own duration is not)."""

    max_uid_chars: int = 512
    max_stage_chars: int = 128
    max_label_chars: int = 256  # tenant, lot
    min_time_us: int = 946_684_800_000_000  # 2000-01-01T00:00:00Z
    max_time_us: int = 7_258_118_400_000_000  # 2200-01-01T00:00:00Z
    max_latency_ms: float = 30 * 24 * 3600 * 1000.0  # 30 days: the baselines' largest bin


LIMITS = Limits()

class StageEvent(NamedTuple):
    """One log line that says a file reached a stage. A tuple: cheap to build, pickle and compare."""

    uid: str
    stage: str
    t_us: int  # event time, epoch microseconds
    tenant: str | None
    lot: str | None
    insert_id: str | None
    failed: bool
    reported_ms: float | None  # the latency the log line itself reports, if any

    def dedup_key(self) -> str | tuple[str, str, int]:
        """At-least-once delivery repeats a line: same insertId, or else same uid + stage + time -- within one file
        (both drivers dedup per UID: an application that sets its own insertIds repeats them across files)."""
        return self.insert_id if self.insert_id is not None else (self.uid, self.stage, self.t_us)


class Rejected(NamedTuple):
    """A line the parser could not turn into an event, with the reason and enough of the line to find it."""

    reason: str
    detail: str
    line: str  # the first 1,000 characters (decoded leniently), for the dead-letter record



@dataclass(frozen=True)
class FieldMapping:
    """Where each field lives in a log line: dotted paths, tried in order. Every path is configurable."""

    uid: tuple[str, ...] = ("jsonPayload.uid", "labels.uid", "uid")
    stage: tuple[str, ...] = ("jsonPayload.stage", "labels.stage", "stage")
    tenant: tuple[str, ...] = ("jsonPayload.tenant", "labels.tenant", "tenant")
    lot: tuple[str, ...] = ("jsonPayload.lot", "labels.lot", "lot")
    timestamp: tuple[str, ...] = ("timestamp",)
    insert_id: tuple[str, ...] = ("insertId", "insert_id")
    severity: tuple[str, ...] = ("severity",)
    http_status: tuple[str, ...] = ("httpRequest.status", "status")
    latency: tuple[str, ...] = ("httpRequest.latency",)
    duration_ms: tuple[str, ...] = ("jsonPayload.duration_ms", "duration_ms")
    extra_failed: tuple[str, ...] = field(default=("jsonPayload.failed", "failed"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FieldMapping:
        """Build from a config table; each value is a path or a list of paths. Unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown field mapping keys {sorted(unknown)}; known: {sorted(known)}")
        kwargs: dict[str, tuple[str, ...]] = {}
        for key, value in raw.items():
            paths = (value,) if isinstance(value, str) else tuple(value)
            if not paths or not all(isinstance(p, str) and p for p in paths):
                raise ValueError(f"field mapping {key!r} must be a non-empty path or list of paths")
            kwargs[key] = paths
        return cls(**kwargs)
