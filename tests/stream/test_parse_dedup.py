"""The streaming job's composite transforms on the DirectRunner (TestPipeline / TestStream, streaming)."""

from __future__ import annotations

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from stagewatch.core.timeutil import format_rfc3339
from stagewatch.stream.steps.dedup import Dedup
from stagewatch.stream.steps.parse import DEAD_LETTERS, ParseEvents

pytestmark = pytest.mark.pipeline

T0 = 1_780_000_000  # seconds


def entry(uid: str, stage: str, t_s: float, insert_id: str | None = None) -> bytes:
    e: dict[str, object] = {"timestamp": format_rfc3339(int(t_s * 1_000_000)),
                            "jsonPayload": {"uid": uid, "stage": stage}}
    if insert_id:
        e["insertId"] = insert_id
    return orjson.dumps(e)


def streaming() -> PipelineOptions:
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    return opts


def test_parse_events_tags_dead_letters_with_their_reason() -> None:
    lines = [
        entry("f1", "upload", T0, "i1"),
        b"{not json",
        b"[1, 2]",
        orjson.dumps({"timestamp": "2026-06-06T00:00:00Z", "jsonPayload": {"stage": "x"}}),
        orjson.dumps({"timestamp": "yesterday", "jsonPayload": {"uid": "u", "stage": "x"}}),
        b"\xff\xfe",
    ]
    with TestPipeline() as p:
        out = p | "Lines" >> beam.Create(lines) | ParseEvents()
        assert_that(out.events | "Uids" >> beam.Map(lambda ev: (ev.uid, ev.stage)),
                    equal_to([("f1", "upload")]), label="Events")
        assert_that(out[DEAD_LETTERS] | "Reasons" >> beam.Map(lambda d: d.reason),
                    equal_to(["invalid_json", "not_object", "missing_uid", "bad_timestamp", "not_utf8"]),
                    label="DeadLetters")


def test_dedup_in_streaming_keeps_the_first_of_each_line() -> None:
    stream = (
        TestStream()
        .add_elements([entry("f1", "upload", T0, "i1"), entry("f1", "upload", T0, "i1")])
        .advance_watermark_to(T0 + 10)
        .add_elements([entry("f1", "register", T0 + 5, "i2"), entry("f1", "upload", T0, "i1"),
                       entry("f2", "upload", T0 + 6), entry("f2", "upload", T0 + 6)])
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=streaming()) as p:
        events = (p | "Stream" >> stream | ParseEvents(stamp=True)).events | Dedup(horizon_s=3600)
        assert_that(events | beam.Map(lambda ev: (ev.uid, ev.stage)),
                    equal_to([("f1", "upload"), ("f1", "register"), ("f2", "upload")]))


def test_event_times_too_far_from_the_wall_clock_are_dead_lettered_from_pubsub() -> None:
    """From Pub/Sub (``stamp=False``: the element time is the event time) a line arrives at the processing time:
    an event dated an hour ahead of it is ``future``, one dated a month back ``too_old``; both dead letters carry
    the event, and neither reaches a later step."""
    import time

    from stagewatch.core.clock import TimeBounds

    now = time.time()
    lines = [entry("ok", "a", now - 30), entry("ahead", "a", now + 3600), entry("old", "a", now - 30 * 86400),
             entry("ok2", "a", now + 60)]
    with TestPipeline(options=streaming()) as p:
        out = p | "Lines" >> beam.Create(lines) | ParseEvents(stamp=False, bounds=TimeBounds())
        assert_that(out.events | "Uids" >> beam.Map(lambda ev: ev.uid), equal_to(["ok", "ok2"]), label="Events")
        assert_that(out[DEAD_LETTERS] | "Reasons" >> beam.Map(lambda d: (d.reason, orjson.loads(d.line)["uid"])),
                    equal_to([("future", "ahead"), ("too_old", "old")]), label="DeadLetters")


def test_from_a_file_a_line_is_judged_against_the_time_it_was_stamped_with() -> None:
    """A file source stamps each line with the file's robust clock (``file_source``); the parser judges the
    event time against that stamp, as the backtest does -- and a line without a stamp is not judged."""
    from apache_beam.transforms.window import TimestampedValue

    from stagewatch.core.clock import TimeBounds

    stream = (TestStream()
              .add_elements([TimestampedValue(entry("ok", "a", T0 + 500), T0),
                             TimestampedValue(entry("ahead", "a", T0 + 700), T0),
                             TimestampedValue(entry("old", "a", T0 - 8 * 86400), T0)])
              .advance_watermark_to_infinity())
    with TestPipeline(options=streaming()) as p:
        out = p | stream | ParseEvents(bounds=TimeBounds(max_ahead_s=600))
        assert_that(out.events | "Uids" >> beam.Map(lambda ev: ev.uid), equal_to(["ok"]), label="Events")
        assert_that(out[DEAD_LETTERS] | "Reasons" >> beam.Map(lambda d: (d.reason, d.received_at)),
                    equal_to([("future", format_rfc3339(T0 * 1_000_000)),
                              ("too_old", format_rfc3339(T0 * 1_000_000))]), label="DeadLetters")
