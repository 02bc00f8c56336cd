"""A local log file as the job's source: a ``TestStream`` of its lines at their event times, behind a watermark.

Beam's in-process streaming runner cannot read files (its file source is splittable, which that runner does not
run), and the runner that can downloads a binary first; so a local run's file becomes a ``TestStream``.
"""

from __future__ import annotations

from typing import Any

from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core.clock import BlockClock, Held, Pull, TimeBounds
from stagewatch.core.dedup import DEDUP_HORIZON_S, TAKEN, FirstSeen
from stagewatch.core.events import StageEvent
from stagewatch.core.parser import Parser
from stagewatch.core.records import DEAD_LINE_CHARS
from stagewatch.core.stages import INFER_SAMPLE
from stagewatch.core.timeutil import US_PER_S
from stagewatch.logfiles import Damage, expand_inputs, iter_lines

__all__ = ["file_stream"]


def file_stream(
    path: str, lateness_us: int, step_us: int, bounds: TimeBounds | None = None, chunk: int = 2000,
    damaged: list[Damage] | None = None, keep: int = DEAD_LINE_CHARS,
) -> tuple[Any, list[StageEvent], int]:
    """A local file as a stream: lines in file order, each stamped with the time it "arrives" at -- the
    file's robust clock (``core/clock.py``), the same the backtest judges event times against, so the
    parsing step dead-letters the same lines as ``future`` or ``too_old`` --, the watermark following the
    newest believed event times minus the allowed lateness: what a Pub/Sub source with a timestamp attribute
    does, without letting one line from the future move it (the fourth newest: ``core.clock.Pull``).

    The watermark moves at least every ``step_us`` of event time (and every ``chunk`` lines): a jump larger
    than a baseline interval would close many intervals at once, and the snapshots of an interval would
    reach the judging step after the watermark had already let it judge that interval without them.

    Returns (stream, the first ``INFER_SAMPLE`` events -- what the stage order is inferred from when none is
    given --, the last believed event time). With ``damaged``, a file that breaks off (a truncated or corrupt
    ``.gz``) is streamed up to the break and noted there, as the backtest does; without it, the error is raised.
    ``keep``: the characters of a rejected line its dead letter keeps (what the backtest holds of one, and
    counts towards ``Held``'s bound).
    """
    bounds = bounds or TimeBounds()
    parser = Parser()
    stream = TestStream()
    batch: list[Any] = []
    sample: list[StageEvent] = []
    clock: BlockClock[tuple[bytes, StageEvent]] = BlockClock()
    early: Held[bytes] = Held()  # rejected lines read before the clock knows a time
    newest = 0
    # What the watermark follows: the 4th newest believed time within the lateness of its clock, of the lines the
    # backtest takes (``Ingest``: a repeat is not taken -- four copies of one line ahead are one line --, nor is a
    # line behind the watermark).
    pull, seen = Pull(), FirstSeen(int(DEDUP_HORIZON_S * US_PER_S))
    pulled = -1
    advanced = -1

    def emit() -> None:
        """Hand the batch over when it is full or the watermark moved a step; advance the watermark."""
        nonlocal stream, batch, advanced
        watermark = max(0, pulled - lateness_us) // 1000 * 1000  # TestStream keeps whole milliseconds
        if len(batch) >= chunk or (advanced >= 0 and watermark - advanced >= step_us) or advanced < 0 < watermark:
            stream = stream.add_elements(batch)
            batch = []
            if watermark > advanced:
                stream = stream.advance_watermark_to(watermark / 1e6)
                advanced = watermark

    def arrived(block: list[tuple[bytes, StageEvent]], at: int) -> None:
        nonlocal newest, pulled
        if early:
            batch.extend(TimestampedValue(raw, Timestamp(micros=at)) for raw in early.take())
        for raw, ev in block:
            t_us = ev.t_us
            if bounds.verdict(t_us, at) is None:
                newest = max(newest, t_us)
                taken = seen.take(ev, pulled - lateness_us) == TAKEN  # as Ingest takes it: not a repeat, nor late
                if taken and pulled < t_us <= at + lateness_us:  # further ahead of the clock it does not: cap_lead
                    pulled = pull.push(t_us)
            batch.append(TimestampedValue(raw, Timestamp(micros=at)))  # judged again, the same way, when parsed
            emit()  # event by event, as a Pub/Sub source's watermark would follow them

    for raw in iter_lines(expand_inputs([path]), damaged=damaged):  # a folder: its files in name order
        ev = parser.parse(raw)
        if isinstance(ev, StageEvent):
            if len(sample) < INFER_SAMPLE:
                sample.append(ev)
            if (done := clock.push((raw, ev), ev.t_us)) is not None:
                arrived(*done)
        elif clock.now < 0:
            if early.add(raw, min(len(raw), keep)):  # a long run of junk before the first event: at the epoch
                batch.extend(TimestampedValue(held, Timestamp(micros=0)) for held in early.take())
        else:
            batch.append(TimestampedValue(raw, Timestamp(micros=clock.now)))  # rejected downstream
            emit()
    for done in clock.end(bounds):  # the last blocks, stepped like the rest: no jump over many intervals at the end
        arrived(*done)
    if newest == 0:
        raise ValueError(f"{path} holds no stage events")
    if batch:
        stream = stream.add_elements(batch)
    # Past the last event, then the end: timers due by the last event fire before the stream closes.
    stream = stream.advance_watermark_to(newest // 1000 / 1000).advance_watermark_to_infinity()
    return stream, sample, newest
