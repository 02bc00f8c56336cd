"""The kinds of verdict stagewatch makes, in one registry: anomalies about one file, and verdicts about a lot.

The core's builders (``anomalies``, ``lots``) make records of these kinds; the incident messages, the report, the
evaluation and the simulator read their names and words from here. A new kind starts with an entry below.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FAILED",
    "FILE_KINDS",
    "KINDS",
    "LOT_INCOMPLETE",
    "LOT_KINDS",
    "LOT_SLOW",
    "SLOW_STAGE",
    "SLOW_TRACE",
    "STALLED",
    "TRACE_STATUSES",
    "Kind",
    "brief",
    "incident_phrase",
]

SLOW_STAGE = "slow_stage"
SLOW_TRACE = "slow_trace"
STALLED = "stalled"
FAILED = "failed"
LOT_INCOMPLETE = "lot_incomplete"
LOT_SLOW = "lot_slow"

#: How a file's trace ended (a ``TraceSummary``'s ``status``): ``open`` is still in flight at the end of the
#: input, or evicted after the session gap.
TRACE_STATUSES = ("complete", "stalled", "failed", "open")


@dataclass(frozen=True)
class Kind:
    name: str
    label: str  # a column head: "slow stage"
    # The record's ``stage`` is the stage that was slow, did not arrive, or failed -- so an evaluation matches
    # it -- rather than ``end_to_end`` or a lot.
    names_stage: bool
    incident: str  # what an incident of this kind is about, as a sentence's subject: "{stage} is slow"
    brief: str  # the same in a few words, for lists: "{stage} slow"


FILE_KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(SLOW_STAGE, "slow stage", True, "{stage} is slow", "{stage} slow"),
    Kind(SLOW_TRACE, "slow end to end", False, "files are slow end to end", "slow end to end"),
    Kind(STALLED, "stalled", True, "files stall before {stage}", "stalls before {stage}"),
    Kind(FAILED, "failed", True, "{stage} fails", "{stage} failing"),
)}
LOT_KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(LOT_INCOMPLETE, "lot incomplete", False, "batches did not complete", LOT_INCOMPLETE),
    Kind(LOT_SLOW, "lot slow", False, "batches take far longer than usual", LOT_SLOW),
)}
#: The anomaly kinds (one file each), in the order reports and scores list them.
KINDS = tuple(FILE_KINDS)
_ALL = FILE_KINDS | LOT_KINDS


def incident_phrase(kind: str, stage: str) -> str:
    """"analyse is slow", "files stall before download"; an unknown kind as its name."""
    found = _ALL.get(kind)
    return found.incident.format(stage=stage) if found is not None else kind


def brief(kind: str, stage: str) -> str:
    """"analyse slow", "stalls before download"; an unknown kind as its name."""
    found = _ALL.get(kind)
    return found.brief.format(stage=stage) if found is not None else kind
