"""Two bugs of Beam's bundle-based in-process runner (apache-beam 2.77.0, Python), each as a minimal pipeline that
needs nothing but Beam -- what the local runner's corrections A and B answer (``stagewatch.stream.local.patches``)
and what goes upstream. Run one on Beam's own runner::

    python tests/stream/beam_bugs.py empty_bundle_side_input   # A: crashes
    python tests/stream/beam_bugs.py timer_output_hold         # B: loses what a timer emitted

``tests/stream/test_local_runner.py`` runs both on Beam's runner (they fail) and on the corrected one (they pass).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

__all__ = ["empty_bundle_side_input", "streaming", "timer_output_hold"]


def streaming() -> PipelineOptions:
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    return options


class _BufferAndDrop(beam.DoFn):
    """Keeps each value until the watermark passes it, then forgets it: its timer's bundle outputs nothing."""

    BUFFER = BagStateSpec("buffer", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def process(self, kv: tuple[str, int], buffer: Any = beam.DoFn.StateParam(BUFFER),
                fire: Any = beam.DoFn.TimerParam(FIRE)) -> None:
        buffer.add(kv[1])
        fire.set(Timestamp(seconds=kv[1]))

    @on_timer(FIRE)
    def _fire(self, buffer: Any = beam.DoFn.StateParam(BUFFER)) -> Iterator[int]:
        buffer.clear()
        return iter(())


def empty_bundle_side_input(runner: Any) -> None:
    """Bug A. A stateful step whose timer emits nothing commits an empty output bundle; the runner schedules the
    next ParDo on it anyway, and when that ParDo has a side input in fixed windows it maps "the window of the
    bundle's latest element" onto the side input's -- ``None`` for an empty bundle: ``AttributeError: 'NoneType'
    object has no attribute 'max_timestamp'`` (``executor.py``, ``TransformExecutor.call``). Expected: the empty
    bundle is skipped (the watermark manager already ignores empty bundles) and the pipeline finishes."""
    stream = (TestStream().add_elements([TimestampedValue(("k", 5), 5)]).advance_watermark_to(10)
              .advance_watermark_to_infinity())
    with beam.Pipeline(runner=runner, options=streaming()) as p:
        side = p | "Side" >> beam.Create([("x", 1)]) | "SideWindows" >> beam.WindowInto(FixedWindows(10))
        held = (p | stream | "Keyed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, int])
                | "BufferAndDrop" >> beam.ParDo(_BufferAndDrop()))
        _ = (held | "MainWindows" >> beam.WindowInto(FixedWindows(10))
             | "WithSideInput" >> beam.Map(lambda v, s: (v, s), beam.pvalue.AsDict(side)))


class _EmitAtTimer(beam.DoFn):
    """Buffers values; when the watermark passes the earliest, emits them all at that timer's time."""

    BUFFER = BagStateSpec("buffer", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def process(self, kv: tuple[str, int], buffer: Any = beam.DoFn.StateParam(BUFFER),
                fire: Any = beam.DoFn.TimerParam(FIRE)) -> None:
        buffer.add(kv[1])
        fire.set(Timestamp(seconds=min(buffer.read())))

    @on_timer(FIRE)
    def _fire(self, ts: Any = beam.DoFn.TimestampParam, buffer: Any = beam.DoFn.StateParam(BUFFER)
              ) -> Iterator[Any]:
        for v in buffer.read():
            yield TimestampedValue(("all", v), ts)
        buffer.clear()


def timer_output_hold(runner: Any, sink: beam.DoFn) -> None:
    """Bug B. What a timer emits carries the timer's timestamp, and in the Beam model a pending event-time timer
    holds its step's output watermark there (Java runners: BEAM-2535). This runner holds nothing for timers: when
    the watermark jumps past a timer, the next step's watermark passes it too, before the timer has fired, and
    what the timer emits is late there -- a grouping in 10-second windows without allowed lateness drops it.
    Expected at ``sink``: ``[5, 7]`` and ``[25]``; Beam's runner delivers neither."""
    stream = (TestStream()
              .add_elements([TimestampedValue(("a", 5), 5), TimestampedValue(("a", 7), 7),
                             TimestampedValue(("b", 25), 25)])
              .advance_watermark_to(100)  # one jump past every window
              .advance_watermark_to_infinity())
    with beam.Pipeline(runner=runner, options=streaming()) as p:
        _ = (p | stream | "Keyed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, int])
             | "EmitAtTimer" >> beam.ParDo(_EmitAtTimer())
             | "Windows" >> beam.WindowInto(FixedWindows(10), allowed_lateness=0)
             | "Group" >> beam.GroupByKey()
             | "Sorted" >> beam.Map(lambda kv: sorted(kv[1]))
             | "Sink" >> beam.ParDo(sink))


class _Print(beam.DoFn):
    def process(self, element: Any) -> None:
        print("grouped:", element)


if __name__ == "__main__":
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which == "empty_bundle_side_input":
        empty_bundle_side_input(BundleBasedDirectRunner())
    elif which == "timer_output_hold":
        timer_output_hold(BundleBasedDirectRunner(), _Print())
    else:
        sys.exit("usage: python tests/stream/beam_bugs.py empty_bundle_side_input|timer_output_hold")
    print("finished")
