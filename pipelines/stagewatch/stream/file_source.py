"""A local log file as the job's source: a ``TestStream`` of its lines at their event times, behind a watermark.

Beam's in-process streaming runner cannot read files (its file source is splittable, which that runner does not
run), and the runner that can downloads a binary first; so a local run's file becomes a ``TestStream``.
"""

from __future__ import annotations

from typing import Any

from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from stagewatch.core.events import StageEvent
from stagewatch.core.parser import Parser
from stagewatch.core.stages import INFER_SAMPLE
from stagewatch.logfiles import iter_lines

__all__ = ["file_stream"]


def file_stream(path: str, lateness_us: int, step_us: int, chunk: int = 2000) -> tuple[Any, list[StageEvent], int]:
    """A local file as a stream: lines in file order, each at its event time, the watermark following the
    newest event time minus the allowed lateness — what a Pub/Sub source with a timestamp attribute does.

    The watermark moves at least every ``step_us`` of event time (and every ``chunk`` lines): a jump larger
    than a baseline interval would close many intervals at once, and the snapshots of an interval would
    reach the judging step after the watermark had already let it judge that interval without them.

    Returns (stream, the first ``INFER_SAMPLE`` events -- what the stage order is inferred from when none is
    given --, the last event time).
    """
    parser = Parser()
    stream = TestStream()
    batch: list[Any] = []
    sample: list[StageEvent] = []
    newest = 0
    advanced = -1
    for raw in iter_lines([path]):
        ev = parser.parse(raw)
        if isinstance(ev, StageEvent):
            newest = max(newest, ev.t_us)
            if len(sample) < INFER_SAMPLE:
                sample.append(ev)
            batch.append(TimestampedValue(raw, ev.t_us / 1e6))
        else:
            batch.append(TimestampedValue(raw, max(newest, 1) / 1e6))  # rejected downstream, never late
        watermark = max(0, newest - lateness_us) // 1000 * 1000  # TestStream keeps whole milliseconds
        if len(batch) >= chunk or (advanced >= 0 and watermark - advanced >= step_us) or advanced < 0 < watermark:
            stream = stream.add_elements(batch)
            batch = []
            if watermark > advanced:
                stream = stream.advance_watermark_to(watermark / 1e6)
                advanced = watermark
    if newest == 0:
        raise ValueError(f"{path} holds no stage events")
    if batch:
        stream = stream.add_elements(batch)
    # Past the last event, then the end: timers due by the last event fire before the stream closes.
    stream = stream.advance_watermark_to(newest // 1000 / 1000).advance_watermark_to_infinity()
    return stream, sample, newest
