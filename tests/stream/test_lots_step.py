"""``TrackLots`` (the streaming job's lots) against the core's ``LotTracker`` on the same summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewatch.core.lots import LotTracker
from stagewatch.core.records import TraceSummary
from stagewatch.core.timeutil import US_PER_S


@pytest.mark.pipeline
def test_the_streaming_job_judges_the_same_lots(tmp_path: Path) -> None:
    """``TrackLots`` on the DirectRunner (streaming) over the trace summaries of a simulated day gives the
    records ``LotTracker`` gives, whatever order the summaries arrive in within the watermark's steps."""
    import random

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.window import TimestampedValue

    from stagewatch.backtest.replay import replay
    from stagewatch.core.timeutil import parse_rfc3339_us
    from stagewatch.evaluation.simulate import SimConfig, simulate_to_dir
    from stagewatch.logfiles import iter_lines
    from stagewatch.stream.local import LocalRunner
    from stagewatch.stream.steps.lots import TrackLots

    simulate_to_dir(SimConfig(seed=8, hours=18, peak_rate_per_min=10), tmp_path)
    summaries: list[TraceSummary] = []
    replay(iter_lines([str(tmp_path / "logs.jsonl")]), on_summary=summaries.append)
    tracker, want = LotTracker(), []
    for s in summaries:
        want += tracker.observe(s)
    end_us = max(parse_rfc3339_us(s.closed_at) for s in summaries)
    assert {r.kind for r in want} == {"lot_incomplete", "lot_slow"}
    stream, step, rng = TestStream(), 100 * US_PER_S, random.Random(3)
    timed = sorted(summaries, key=lambda s: parse_rfc3339_us(s.closed_at))
    i = 0
    while i < len(timed):
        until = parse_rfc3339_us(timed[i].closed_at) + step
        chunk = []
        while i < len(timed) and parse_rfc3339_us(timed[i].closed_at) < until:
            chunk.append(TimestampedValue(timed[i], parse_rfc3339_us(timed[i].closed_at) / US_PER_S))
            i += 1
        rng.shuffle(chunk)
        stream = stream.add_elements(chunk).advance_watermark_to((until - US_PER_S) // 1000 / 1000)
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
        got = p | stream.advance_watermark_to_infinity() | TrackLots(end_us=end_us)
        assert_that(got | beam.Map(lambda r: (r.kind, r.lot, r.files, r.expected_ms)),
                    equal_to([(r.kind, r.lot, r.files, r.expected_ms) for r in want]))
