"""The local runner's fixes keep what a pipeline sees: every bundle still gets a DoFn of its own; timers due
when set fire in order, and only once the watermark passed them. Its corrections: a pending timer holds its
step's output watermark."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stagewatch.stream.local import local_runner

pytestmark = pytest.mark.pipeline

_SEEN: list[tuple[str, int]] = []


class _CountInBundle(beam.DoFn):
    """Counts on its own instance: a DoFn shared or reused across bundles would count on."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.n = 0

    def process(self, element: Any) -> None:
        self.n += 1
        _SEEN.append((self.tag, self.n))


def test_each_bundle_gets_a_fresh_copy_of_the_graphs_dofn() -> None:
    """The runner copies a step's DoFn for every bundle; the local runner unpickles that copy from bytes
    pickled once (fix 6 in ``beam/local.py``). Each bundle must still start from the DoFn as built."""
    _SEEN.clear()
    stream = TestStream()
    for k in range(4):  # four bundles of three elements
        stream = stream.add_elements([f"e{k}-{i}" for i in range(3)]).advance_watermark_to(10 * (k + 1))
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=local_runner(), options=opts) as p:
        events = p | stream
        events | "First" >> beam.ParDo(_CountInBundle("first"))
        events | "Second" >> beam.ParDo(_CountInBundle("second"))
    for tag in ("first", "second"):
        counts = [n for t, n in _SEEN if t == tag]
        assert len(counts) == 12, counts
        assert max(counts) == 3 and counts.count(1) == 4, counts  # every bundle counted from 0


_RELEASED: list[tuple[str, int, int]] = []  # (key, event time, bundle number)
_BUNDLES: list[int] = []


class _ReleaseOneAtATime(beam.DoFn):
    """Buffers values; each firing releases the earliest one and sets the timer at the next -- the pattern of
    ``AssembleTraces``, whose chains of due timers fix 7 fires within one bundle."""

    BUFFER = BagStateSpec("buffer", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def start_bundle(self) -> None:
        _BUNDLES.append(len(_BUNDLES))
        self.bundle = _BUNDLES[-1]

    def process(self, kv: tuple[str, int], buffer: Any = beam.DoFn.StateParam(BUFFER),
                fire: Any = beam.DoFn.TimerParam(FIRE)) -> None:
        buffer.add(kv[1])
        fire.set(Timestamp(seconds=min(buffer.read())))

    @on_timer(FIRE)
    def _fire(self, key: Any = beam.DoFn.KeyParam, buffer: Any = beam.DoFn.StateParam(BUFFER),
              fire: Any = beam.DoFn.TimerParam(FIRE)) -> None:
        first, *rest = sorted(buffer.read())
        _RELEASED.append((key, first, self.bundle))
        buffer.clear()
        for t in rest:
            buffer.add(t)
        if rest:
            fire.set(Timestamp(seconds=rest[0]))


def test_timers_due_by_the_watermark_fire_in_the_bundle_that_set_them() -> None:
    """A chain of timers each due when set runs in one bundle, in order per key; a timer beyond the watermark
    waits for it (a later, earlier-timed value is still released before it)."""
    _RELEASED.clear()
    _BUNDLES.clear()
    stream = (
        TestStream()
        .add_elements([TimestampedValue(("a", t), t) for t in (5, 1, 200, 3, 2, 4)])
        .add_elements([TimestampedValue(("b", t), t) for t in (7, 6, 8)])
        .advance_watermark_to(100)
        .add_elements([TimestampedValue(("a", 150), 150)])
        .advance_watermark_to(300)
        .advance_watermark_to_infinity()
    )
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=local_runner(), options=opts) as p:
        (p | stream | beam.Map(lambda kv: kv).with_output_types(tuple[str, int])
         | beam.ParDo(_ReleaseOneAtATime()))
    order = {k: [t for key, t, _ in _RELEASED if key == k] for k in ("a", "b")}
    assert order == {"a": [1, 2, 3, 4, 5, 150, 200], "b": [6, 7, 8]}
    # Everything due by watermark 100 (the first eight releases) in one bundle: without fix 7 it took five.
    first_eight = {bundle for key, t, bundle in _RELEASED if t < 100}
    assert len(first_eight) == 1, _RELEASED


class _EmitAtTimer(beam.DoFn):
    """Buffers values; when the watermark passes the earliest, emits them all at that timer's time."""

    BUFFER = BagStateSpec("buffer", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def process(self, kv: tuple[str, int], buffer: Any = beam.DoFn.StateParam(BUFFER),
                fire: Any = beam.DoFn.TimerParam(FIRE)) -> None:
        buffer.add(kv[1])
        fire.set(Timestamp(seconds=min(buffer.read())))

    @on_timer(FIRE)
    def _fire(self, ts: Any = beam.DoFn.TimestampParam, buffer: Any = beam.DoFn.StateParam(BUFFER)) -> Any:
        for v in buffer.read():
            yield TimestampedValue(("all", v), ts)
        buffer.clear()


def test_a_pending_timer_holds_its_steps_output_watermark() -> None:
    """Correction B: what a timer emits at its own time is not late for the step after it, however far the
    watermark jumped. Here it is grouped in 10-second windows with no allowed lateness: without the hold the
    watermark downstream passed the window before the timer fired, and the group lost it."""
    stream = (
        TestStream()
        .add_elements([TimestampedValue(("a", 5), 5), TimestampedValue(("a", 7), 7), TimestampedValue(("b", 25), 25)])
        .advance_watermark_to(100)  # one jump past every window
        .advance_watermark_to_infinity()
    )
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=local_runner(), options=opts) as p:
        grouped = (p | stream | beam.Map(lambda kv: kv).with_output_types(tuple[str, int])
                   | beam.ParDo(_EmitAtTimer())
                   | beam.WindowInto(FixedWindows(10), allowed_lateness=0)
                   | beam.GroupByKey()
                   | beam.Map(lambda kv: sorted(kv[1])))
        assert_that(grouped, equal_to([[5, 7], [25]]))
