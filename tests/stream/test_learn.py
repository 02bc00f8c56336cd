"""LearnBaselines in streaming gives, interval by interval, the snapshots of the in-process BaselineStore."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.early import early_snapshots, early_ticks_after
from stagewatch.core.interval_counts import bin_counts
from stagewatch.core.judged_by import lookup
from stagewatch.core.measurements import FileRef, Measured, Measurement
from stagewatch.core.stages import StageOrder
from stagewatch.core.traces import TraceRules
from stagewatch.core.verdicts import baseline_stage, judge_measurement
from stagewatch.stream.local import LocalRunner
from stagewatch.stream.steps.learn import LearnBaselines

pytestmark = pytest.mark.pipeline

RULES = TraceRules(StageOrder(("a", "b", "c")))
CFG = BaselineConfig()
T0 = 1_780_000_200_000_000  # on an interval boundary
S = 1_000_000


def _measurements() -> list[Measured]:
    rng = random.Random(4)
    out = []
    for k in range(2400):  # 2 hours, one every 3 s
        t = T0 + k * 3 * S
        for stage_i, median in ((1, 2000.0), (2, 30_000.0)):
            value = median * rng.lognormvariate(0, 0.3) * (8 if stage_i == 2 and 1800 < k < 1900 else 1)
            file = FileRef(f"u{k}", rng.choice(["t1", "t2", None]), None)
            out.append(Measured(file, "c", Measurement("wait", stage_i, value, t + stage_i), t + stage_i))
    return out


def _reference(ms: list[Measured]) -> dict[int, dict]:
    store, by_step = BaselineStore(CFG), {}
    for r in ms:
        store.advance(r.m.t_us)
        by_step[store.step] = dict(store.snaps)
        store.learn(baseline_stage(r.m, RULES), r.file.tenant, r.m.value_ms)
    return by_step


@pytest.mark.parametrize("straggler, newest_first", [(False, False), (True, False), (False, True)],
                         ids=["on_time", "with_a_count_after_its_fold", "newest_first_in_each_bundle"])
def test_snapshots_per_interval_match_the_in_process_store(straggler: bool, newest_first: bool) -> None:
    """Interval by interval, the same snapshots as the in-process store, and in the first interval the early
    snapshots of its first four ticks (``core.early``); with ``straggler``, a measurement of
    the first interval arrives two hours after that interval was folded: it is left out (counted), and the
    store's clock does not go back for it. ``newest_first``: each bundle of 25 minutes comes newest first (a
    backlog read out of order): a shard and a roll take their first interval to be the earliest they hear of,
    not the first to arrive."""
    ms = _measurements()
    want = _reference(ms)
    want_early = {}
    for b in early_ticks_after(T0, CFG):
        for stage in ("b", "c"):
            heard = [(r.file.tenant, r.m.value_ms) for r in ms if r.now_us < b and baseline_stage(r.m, RULES) == stage]
            for key, snap in early_snapshots(CFG, stage, T0 // CFG.interval_us, bin_counts(heard), b).items():
                want_early[(key, b)] = snap
    assert len(want_early) == 4 * 2 * 3  # four ticks, two stages, stage-wide and two tenants
    stream = TestStream()
    for i in range(0, len(ms), 500):
        chunk = ms[i:i + 500][::-1] if newest_first else ms[i:i + 500]
        for part in ([chunk[:250], chunk[250:]] if newest_first else [chunk]):  # separate bundles, newest first
            stream = stream.add_elements([TimestampedValue(r, r.m.t_us / S) for r in part])
        stream = stream.advance_watermark_to((ms[min(i + 500, len(ms)) - 1].m.t_us // 1000) / 1000)
    if straggler:
        late = ms[0]._replace(file=ms[0].file._replace(uid="late"), m=ms[0].m._replace(value_ms=1e6))
        stream = stream.add_elements([TimestampedValue(late, late.m.t_us / S)])
    stream = stream.advance_watermark_to((ms[-1].m.t_us + 600 * S) // 1000 / 1000).advance_watermark_to_infinity()
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True

    def check(got: list) -> None:
        by_step: dict[int, dict] = {}
        for (key, snap), step in got:
            by_step.setdefault(step, {})[key] = snap
        # The first interval's early snapshots: what a fresh baseline folds from what came before each tick.
        early = by_step.pop(T0 // CFG.interval_us)
        assert set(early) == set(want_early)
        for key, snap in want_early.items():
            assert early[key] == pytest.approx(snap, rel=1e-9, nan_ok=True), key
        compared = 0
        for step, snaps in want.items():
            if not snaps or step not in by_step:
                continue
            assert set(by_step[step]) == set(snaps), step
            for key, snap in snaps.items():
                assert by_step[step][key] == pytest.approx(snap, rel=1e-9, nan_ok=True), (step, key)
            compared += 1
        assert compared >= 20, compared

    with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
        snaps = p | stream | LearnBaselines(RULES, CFG)
        stamped = snaps | beam.Map(lambda kv, ts=beam.DoFn.TimestampParam: (kv, int(ts.micros) // CFG.interval_us))
        assert_that(stamped, check)


def _reference_anomalies(ms: list[Measured]) -> set[tuple]:
    store, out = BaselineStore(CFG), set()
    for r in ms:
        store.advance(r.m.t_us)
        stage = baseline_stage(r.m, RULES)
        snap, by_tenant = lookup(store, stage, r.file.tenant)
        _, a = judge_measurement(r.file, r.last_stage, r.m, snap, by_tenant, RULES, 0)
        if a is not None:
            out.add((a.anomaly_id, a.kind, a.uid, a.stage, round(a.observed_ms or 0, 3)))
        store.learn(stage, r.file.tenant, r.m.value_ms)
    return out


def test_judged_anomalies_match_the_in_process_judge() -> None:
    from stagewatch.stream.steps.judging import JudgeMeasurements

    ms = _measurements()
    want = _reference_anomalies(ms)
    assert len(want) > 50  # the 8x slowdown of stage c
    stream = TestStream()
    for i in range(0, len(ms), 500):
        chunk = sorted(ms[i:i + 500], key=lambda r: r.file.uid)  # out of order within each chunk
        stream = stream.add_elements([TimestampedValue(r, r.m.t_us / S) for r in chunk])
        stream = stream.advance_watermark_to((ms[min(i + 500, len(ms)) - 1].m.t_us // 1000) / 1000)
    stream = stream.advance_watermark_to((ms[-1].m.t_us + 900 * S) // 1000 / 1000).advance_watermark_to_infinity()
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
        records = p | stream
        snaps = records | LearnBaselines(RULES, CFG)
        anomalies, _ = (records, snaps) | JudgeMeasurements(RULES, CFG)
        got = anomalies | beam.Map(lambda a: (a.anomaly_id, a.kind, a.uid, a.stage, round(a.observed_ms or 0, 3)))

        def check(items: list) -> None:
            assert set(items) == want

        assert_that(got, check)
