"""AssembleTraces on the DirectRunner in streaming: the same measurements as the in-process trace, in order."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from stagewatch.core.events import StageEvent
from stagewatch.core.outbox import Outbox
from stagewatch.core.records import event_json
from stagewatch.core.stages import StageOrder
from stagewatch.core.traces import Trace, TraceRules
from stagewatch.stream.steps.assemble import FAILURES, LATE, SUMMARIES, AssembleTraces, _Recorder
from tests.streams import T0, Pipeline, S, file_events

pytestmark = pytest.mark.pipeline

PIPE = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 5.0})
RULES = TraceRules(StageOrder(PIPE.stages))


def _streaming() -> PipelineOptions:
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    return opts


def _ms(t_us: int) -> float:
    """TestStream watermarks must be whole milliseconds."""
    return (t_us // 1000) / 1000


def _oracle(events: list[StageEvent]) -> list[tuple]:
    """What the in-process trace measures for the same events, in event-time order per file."""
    out = []
    for uid in sorted({e.uid for e in events}):
        trace, rec, box = Trace(uid, 3), _Recorder(RULES), Outbox()
        for ev in sorted((e for e in events if e.uid == uid), key=lambda e: e.t_us):
            if trace.add(ev, RULES, rec, ev.t_us, box):
                break
        out += [(r.file.uid, r.m.measure, r.m.stage_i, round(r.m.value_ms, 3)) for r in rec.measurements]
    return out


def test_out_of_order_arrivals_give_the_in_process_measurements() -> None:
    rng = random.Random(1)
    events = [e for k in range(12) for e in file_events(PIPE, f"f{k}", T0 + k * 20 * S, rng)]
    arrival = sorted(events, key=lambda e: e.t_us + rng.randint(0, 30) * S)
    assert arrival != sorted(events, key=lambda e: e.t_us)
    stream = TestStream()
    for i in range(0, len(arrival), 6):
        batch = arrival[i:i + 6]
        stream = stream.add_elements([TimestampedValue(e, e.t_us / S) for e in batch])
        stream = stream.advance_watermark_to(_ms(min(e.t_us for e in arrival[i:]) - 31 * S))
    # Past every event before the end: what timers emit at the final jump to infinity reaches assert_that's
    # grouping after its window closed, and would be dropped as late.
    stream = stream.advance_watermark_to(_ms(max(e.t_us for e in events) + 60 * S)).advance_watermark_to_infinity()
    with TestPipeline(options=_streaming()) as p:
        out = p | stream | AssembleTraces(RULES)
        got = out.measurements | beam.Map(lambda r: (r.file.uid, r.m.measure, r.m.stage_i, round(r.m.value_ms, 3)))
        assert_that(got, equal_to(_oracle(events)), label="Measurements")
        assert_that(out[SUMMARIES] | beam.Map(lambda s: (s.uid, s.status)),
                    equal_to([(f"f{k}", "complete") for k in range(12)]), label="Summaries")


def test_late_event_is_dead_lettered_and_failure_reported() -> None:
    rng = random.Random(2)
    ok = file_events(PIPE, "ok", T0, rng)
    bad = file_events(PIPE, "bad", T0 + 100 * S, rng)
    bad[1] = bad[1]._replace(failed=True)
    late = ok[1]._replace(insert_id="again", t_us=ok[1].t_us - 1)
    stream = (
        TestStream()
        .add_elements([TimestampedValue(e, e.t_us / S) for e in ok])
        .advance_watermark_to(_ms(ok[-1].t_us + S))
        .add_elements([TimestampedValue(late, late.t_us / S)])
        .add_elements([TimestampedValue(e, e.t_us / S) for e in bad[:2]])
        .advance_watermark_to(_ms(bad[1].t_us + 60 * S))
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=_streaming()) as p:
        out = p | stream | AssembleTraces(RULES)
        assert_that(out[LATE] | beam.Map(lambda d: d.reason), equal_to(["late"]), label="Late")
        assert_that(out[FAILURES] | beam.Map(lambda a: (a.uid, a.kind, a.stage)),
                    equal_to([("bad", "failed", "b")]), label="Failures")
        assert_that(out[SUMMARIES] | beam.Map(lambda s: (s.uid, s.status)),
                    equal_to([("ok", "complete"), ("bad", "failed")]), label="Summaries")


@pytest.mark.parametrize("lag_s", [0, 90], ids=["watermark_at_each_event", "watermark_90s_behind"])
def test_events_within_a_ttl_of_a_close_are_dead_lettered_as_the_backtest_counts_them(lag_s: int) -> None:
    """A trace closed open at its TTL keeps a "closed" mark for one more TTL, in both drivers: a straggler
    dated within it is ``after_close`` (not a second trace of the file, whose summary would then overwrite the
    first's downstream), one dated after it starts a new trace -- by its time, however far behind the
    watermark is when it arrives (90 s: the mark is still there then). Seen in the soak: the mark lasted no
    time here."""
    from stagewatch.backtest.engine import DetectorConfig
    from tests.streams import run

    rng = random.Random(3)
    ttl_s = 120.0
    rules = TraceRules(StageOrder(PIPE.stages), ttl_s=ttl_s)
    x = file_events(PIPE, "x", T0, rng, drop_from="c")  # stays open: closes at its last event + TTL
    close_s = (x[-1].t_us - T0) / S + ttl_s
    straggler = x[0]._replace(stage="c", insert_id="x-late", t_us=T0 + int((close_s + 30) * S))
    reopened = x[0]._replace(insert_id="x-again", t_us=T0 + int((close_s + ttl_s + 40) * S))
    # Complete files around it keep the backtest's watermark moving past every close.
    others = [e for k in range(16) for e in file_events(PIPE, f"f{k}", T0 + k * 40 * S, rng)]
    events = sorted([*x, straggler, reopened, *others], key=lambda e: e.t_us)

    _, summaries, det = run(events, PIPE.stages, DetectorConfig(ttl_s=ttl_s))
    assert sorted((s.uid, s.status) for s in summaries if s.uid == "x") == [("x", "open"), ("x", "open")]
    assert det.out.counts.get("after_open") == 1

    stream, watermark = TestStream(), 0.0
    for ev in events:  # in order, the watermark ``lag_s`` behind each event
        stream = stream.add_elements([TimestampedValue(ev, ev.t_us / S)])
        if _ms(ev.t_us - lag_s * S) > watermark:
            stream, watermark = stream.advance_watermark_to(_ms(ev.t_us - lag_s * S)), _ms(ev.t_us - lag_s * S)
    stream = stream.advance_watermark_to(_ms(events[-1].t_us + 2 * int(ttl_s * S))).advance_watermark_to_infinity()
    with TestPipeline(options=_streaming()) as p:
        out = p | stream | AssembleTraces(rules)
        assert_that(out[LATE] | beam.Map(lambda d: (d.reason, d.line)),
                    equal_to([("after_close", event_json(straggler))]), label="AfterClose")
        assert_that(out[SUMMARIES] | beam.Filter(lambda s: s.uid == "x") | beam.Map(lambda s: (s.uid, s.status)),
                    equal_to([("x", "open"), ("x", "open")]), label="Summaries")
