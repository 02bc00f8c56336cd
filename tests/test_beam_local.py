"""The local runner's fixes keep what a pipeline sees: here, that every bundle still gets a DoFn of its own."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream

from stagewatch.beam.local import local_runner

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
