"""What ``WatchStalls`` keeps per file, and the small pieces of state handling its timers share: the mark of a
declared stall, the file's moves, the deadlines waiting, the judged anomalies held for their moment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam

from stagewatch.core.measurements import Arrival, Deadline
from stagewatch.core.records import Anomaly, StageTiming
from stagewatch.core.timeutil import parse_rfc3339_us
from stagewatch.core.traces import TraceRules

__all__ = ["ARRIVALS", "MEASURE_RANK", "StallMark", "add_moves", "arrival", "deadlines_of", "first_beyond",
           "held_order", "held_time"]

# ``Arrival``: a file declared stalled moved on after all (incidents resolve when they all do).
# The backtest closes a stalled trace and hears of its next event; here the trace goes on upstream, so the
# arrival is its next progress -- or, when the stage it reached was the last, its summary.
ARRIVALS = "arrivals"


class StallMark(NamedTuple):
    """A file declared stalled: which stall, after which progress, waiting for which stage, declared when; and
    whether it has shown itself beyond the stall since; its deadline (None in marks written before it was kept:
    then nothing judged after the stall is dropped)."""

    anomaly_id: str
    last_t_us: int
    next_i: int
    at_us: int
    arrived: bool = False
    deadline_us: int | None = None


def add_moves(moves: Any, seen: list[tuple[int, str]]) -> None:
    """Remember where a file was seen and when (a progress, or a closed file's stages), each once."""
    known = moves.read() or ()
    fresh = [m for m in dict.fromkeys(seen) if m not in known]
    if fresh:
        moves.write((*known, *fresh))


def deadlines_of(pending: Any) -> tuple[Deadline, ...]:
    """The deadlines waiting for a file (one, not a tuple, in state written before 2026-12-04)."""
    value = pending.read()
    if value is None:
        return ()
    return (value,) if isinstance(value, Deadline) else tuple(value)


# Of a stage's anomalies judged at one moment, the backtest's order: the reported latency, then the wait.
MEASURE_RANK = {"latency": 0, "wait": 1}


def held_time(item: tuple[int, int, Anomaly]) -> int:
    return item[0]


def held_order(item: tuple[int, int, Anomaly]) -> tuple[int, int]:
    return item[0], item[1]


def first_beyond(mark: StallMark, stages: tuple[StageTiming, ...], rules: TraceRules) -> tuple[str, int] | None:
    """(stage, time) of the first stage in a closed file's summary that shows it got past its stall: the stage
    it stalled waiting for or a later one, or any line logged after the stall was declared (what the
    backtest, which closes a stalled trace, hears as its next event). A stage before the stall that was
    logged out of order is not a move on."""
    for timing in stages:
        t_us = parse_rfc3339_us(timing.time)
        if rules.index.get(timing.stage, -1) >= mark.next_i or t_us > mark.at_us:
            return timing.stage, t_us
    return None


def arrival(stalled: Any, uid: str, stage: str | None, t_us: int) -> Iterator[Any]:
    """The first sign of a stalled file beyond the progress it stalled at, once."""
    mark: StallMark | None = stalled.read()
    if mark is None or mark.arrived or t_us <= mark.last_t_us:
        return
    stalled.write(mark._replace(arrived=True))
    yield beam.pvalue.TaggedOutput(ARRIVALS, Arrival(uid, stage, t_us))
