"""``TrackIncidents`` (the streaming job's incidents) against the core's tracker fed the same inputs in order."""

from __future__ import annotations

from typing import Any

import pytest

from stagewatch.core.incidents import IncidentTracker
from stagewatch.core.measurements import Arrival
from stagewatch.core.records import IncidentEvent
from stagewatch.core.timeutil import US_PER_S
from tests.records import MIN, anomaly, closed_summary, lot_record
from tests.streams import T0


@pytest.mark.pipeline
def test_the_streaming_tracker_makes_the_backtests_events_from_late_and_shuffled_inputs() -> None:
    """``TrackIncidents`` on the DirectRunner (streaming) over anomalies, arrivals, lot records and summaries
    that reach it shuffled and up to two minutes behind the watermark (as verdicts do) makes the events the
    core tracker makes from the same inputs in time order: a stall incident resolved by its files' arrival,
    and a lot incident resolved when its unfinished file arrives."""
    import random

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.window import TimestampedValue

    from stagewatch.core.timeutil import parse_rfc3339_us
    from stagewatch.stream.local import LocalRunner
    from stagewatch.stream.steps.incidents import TrackIncidents

    stalls = [anomaly("stalled", f"f{i}", "download", T0 + i * 20 * US_PER_S, f"t{i % 3}") for i in range(6)]
    # Before the stall incident opens (its fifth stall, at +80 s): in time order it finds nothing to join.
    slow_end = anomaly("slow_trace", "s1", "end_to_end", T0 + 70 * US_PER_S, "t1")
    arrivals = [Arrival(f"f{i}", "download", T0 + (4 + i) * MIN) for i in range(6)]
    lot = lot_record("lot-7", "lot_incomplete", T0 - 100 * MIN, ["g1"], tenant="t9")  # judged at T0 + 20 min
    late_file = Arrival("g1", "store_result", T0 + 26 * MIN)
    summary = closed_summary("z", "t1", T0 + 1 * MIN)
    timed: list[tuple[int, str, Any]] = [
        *[(parse_rfc3339_us(a.detected_at), "anomaly", a) for a in [*stalls, slow_end]],
        *[(r.t_us, "arrival", r) for r in [*arrivals, late_file]],
        (parse_rfc3339_us(lot.judged_at), "lot", lot), (T0 + MIN, "summary", summary),
    ]
    tracker, want = IncidentTracker(), []
    for t, what, record in sorted(timed, key=lambda x: x[0]):
        want += (tracker.add(record) if what == "anomaly" else tracker.arrived(record.uid, t)
                 if what == "arrival" else tracker.add_lot(record) if what == "lot" else [])
    want += tracker.advance(T0 + 60 * MIN)
    assert [(e.event, e.kind) for e in want if e.event != "updated"] == [
        ("opened", "stalled"), ("resolved", "stalled"), ("opened", "lot_incomplete"), ("resolved", "lot_incomplete")]
    assert all(e.arrived for e in want if e.event == "resolved")
    assert "s1" not in tracker.resolved[0].uids

    # Delivered in 100 s watermark steps; verdicts (anomalies) after the watermark passed their time, as the
    # judging step delivers them (the slow end to end two minutes late); each step's elements shuffled.
    rng, stream, step = random.Random(5), TestStream(), 100 * US_PER_S
    delay = {"slow_trace": 120 * US_PER_S, "stalled": 20 * US_PER_S}
    pending = [(t + (delay[r.kind] if what == "anomaly" else 0), t, what, r) for t, what, r in timed]
    wm = T0 - step
    while pending:
        wm += step
        chunk = [x for x in pending if x[0] <= wm]
        pending = [x for x in pending if x[0] > wm]
        rng.shuffle(chunk)
        if chunk:
            stream = stream.add_elements([TimestampedValue((what, r), t / US_PER_S) for _, t, what, r in chunk])
        stream = stream.advance_watermark_to(wm / US_PER_S)
    # Time passes to the end of the input before the stream closes: what is due by then is decided then.
    stream = stream.advance_watermark_to((T0 + 60 * MIN) / US_PER_S)
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True

    def milestone(e: IncidentEvent) -> tuple[Any, ...]:
        return e.event, e.incident_id, e.at, e.files, e.arrived, tuple(e.lots)

    with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
        tagged = p | stream.advance_watermark_to_infinity()
        inputs = tuple(tagged | f"Only{kind.title()}" >> beam.FlatMap(lambda x, k=kind: [x[1]] if x[0] == k else [])
                       for kind in ("anomaly", "summary", "arrival", "lot"))
        got = inputs | TrackIncidents(end_us=T0 + 60 * MIN, hold_s=250)
        assert_that(got | beam.Map(milestone), equal_to([milestone(e) for e in want]))
