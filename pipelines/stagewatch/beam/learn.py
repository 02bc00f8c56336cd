"""``LearnBaselines``: measurements → per-interval bin counts → one rolling ``BaselineStore`` per stage.

Scaling: the counts of an interval are combined per (baseline stage, interval window) with a combiner, so the
work of counting is spread over workers and each stage's roll receives one small dictionary per interval —
not every event. A stage's roll holds the stage-wide key and its tenants' keys together, because a young
tenant's snapshot borrows its stage's spread.

Output: at the end of each interval *k*, every key's snapshot for interval *k + 1*, as
``((stage, tenant), Snapshot)`` timestamped at the start of *k + 1* — to be windowed by interval and given to
the judging step as a side input. A stage keeps emitting each interval while it has seen data within the
trace TTL, so a quiet interval still has its snapshots; then it stops (a finite input's end does not loop).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import AccumulationMode, AfterCount, AfterWatermark
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration

from stagewatch.baselines import END_TO_END, BaselineConfig, BaselineStore
from stagewatch.beam.timers import fire_at, fire_no_later_than
from stagewatch.sketch import bin_of
from stagewatch.timeutil import US_PER_S
from stagewatch.traces import TraceRules

__all__ = ["LearnBaselines", "baseline_stage_of"]


def baseline_stage_of(m: dict[str, Any], rules: TraceRules) -> str:
    if m["measure"] == "end_to_end":
        return END_TO_END
    names = rules.latency_names if m["measure"] == "latency" else rules.names
    return names[m["stage_i"]]


class _CountBins(beam.CombineFn):
    """{(tenant or None, bin): count} for one baseline stage in one interval."""

    def create_accumulator(self) -> dict[tuple[str | None, int], float]:
        return {}

    def add_input(self, acc: dict[tuple[str | None, int], float], item: tuple[str | None, float]) -> Any:
        tenant, value = item
        b = bin_of(value)
        acc[(None, b)] = acc.get((None, b), 0.0) + 1.0
        if tenant is not None:
            acc[(tenant, b)] = acc.get((tenant, b), 0.0) + 1.0
        return acc

    def merge_accumulators(self, accs: Any) -> dict[tuple[str | None, int], float]:
        out: dict[tuple[str | None, int], float] = {}
        for acc in accs:
            for k, v in acc.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def extract_output(self, acc: dict[tuple[str | None, int], float]) -> dict[tuple[str | None, int], float]:
        return acc


class _WithInterval(beam.DoFn):
    def __init__(self, interval_us: int) -> None:
        self._interval_us = interval_us

    def process(self, kv: tuple[str, Any], w: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
        stage, counts = kv
        k = int(w.start.micros) // self._interval_us
        yield TimestampedValue((stage, (k, counts)), w.start.micros / US_PER_S)


class _RollFn(beam.DoFn):
    """Per baseline stage: the interval counts, folded ``grace`` after each interval's end.

    Counts arrive as accumulating panes (an on-time pane, then late panes that include it); the largest pane
    of an interval is kept. The fold waits ``grace`` past the interval's end for the late panes: measurements
    emitted by a timer can reach the combine after the watermark passed their window (the in-process runner
    does not hold a stateful step's output watermark for its timers), and a fold must not miss them.
    """

    STORE = ReadModifyWriteStateSpec("store", PickleCoder())
    PENDING = ReadModifyWriteStateSpec("pending", PickleCoder())
    NEXT = ReadModifyWriteStateSpec("next_fire_us", VarIntCoder())
    LAST_DATA = ReadModifyWriteStateSpec("last_data_step", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def __init__(self, cfg: BaselineConfig, quiet_steps: int, grace_us: int) -> None:
        self._cfg = cfg
        self._quiet_steps = quiet_steps
        self._grace_us = grace_us

    def process(
        self,
        kv: tuple[str, tuple[int, dict[tuple[str | None, int], float]]],
        pending: Any = beam.DoFn.StateParam(PENDING),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> None:
        k, counts = kv[1]
        by_step: dict[int, dict[tuple[str | None, int], float]] = pending.read() or {}
        held = by_step.get(k)
        if held is None or sum(counts.values()) > sum(held.values()):
            by_step[k] = counts
            pending.write(by_step)
        fire_no_later_than(next_fire, fire, (k + 1) * self._cfg.interval_us + self._grace_us)

    @on_timer(FIRE)
    def _fire(
        self,
        key: Any = beam.DoFn.KeyParam,
        ts: Any = beam.DoFn.TimestampParam,
        store_state: Any = beam.DoFn.StateParam(STORE),
        pending: Any = beam.DoFn.StateParam(PENDING),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        last_data: Any = beam.DoFn.StateParam(LAST_DATA),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        interval = self._cfg.interval_us
        now_step = (int(ts.micros) - self._grace_us) // interval  # the interval that started `grace` ago
        store: BaselineStore = store_state.read() or BaselineStore(self._cfg)
        by_step: dict[int, dict[tuple[str | None, int], float]] = pending.read() or {}
        due = sorted(k for k in by_step if k < now_step)
        # Same steps as the in-process store: learn during interval k, fold as of k + 1.
        for k in due:
            by_key: dict[tuple[str, str | None], dict[int, float]] = {}
            for (tenant, b), n in by_step.pop(k).items():
                bucket = by_key.setdefault((key, tenant), {})
                bucket[b] = bucket.get(b, 0.0) + n
            store.fold_interval(k, by_key)
            last_data.write(k)
        pending.write(by_step)
        store.advance(now_step * interval)
        store_state.write(store)
        for k2, snap in store.snaps.items():
            yield TimestampedValue((k2, snap), now_step * interval / US_PER_S)
        quiet_since = last_data.read()
        looping = by_step or (quiet_since is not None and now_step - quiet_since < self._quiet_steps)
        steps = [now_step + 1] + [k + 1 for k in by_step] if looping else []
        fire_at(next_fire, fire, [step * interval + self._grace_us for step in steps])


class LearnBaselines(beam.PTransform):
    """Measurements (timestamped when they were made) → per-interval snapshots of every baseline key.

    ``grace_s``: how long after an interval's end its late counts are still taken (default half an
    interval); a local run's watermark must move in steps shorter than ``interval - grace`` (see
    ``pipeline._file_stream``).
    """

    def __init__(self, rules: TraceRules, cfg: BaselineConfig | None = None, grace_s: float | None = None) -> None:
        super().__init__()
        self._rules = rules
        self._cfg = cfg or BaselineConfig()
        self._grace_s = self._cfg.interval_s / 2 if grace_s is None else grace_s

    def expand(self, measurements: beam.PCollection) -> beam.PCollection:
        rules, cfg = self._rules, self._cfg
        quiet = max(1, int(rules.ttl_us // cfg.interval_us))
        return (
            measurements
            | "KeyByBaseline" >> beam.Map(lambda m: (baseline_stage_of(m, rules), (m["tenant"], m["value_ms"])))
            | "IntervalWindows" >> beam.WindowInto(
                FixedWindows(cfg.interval_s),
                trigger=AfterWatermark(late=AfterCount(1)),
                allowed_lateness=Duration(seconds=self._grace_s),
                accumulation_mode=AccumulationMode.ACCUMULATING,
            )
            | "CountBins" >> beam.CombinePerKey(_CountBins())
            | "TagInterval" >> beam.ParDo(_WithInterval(cfg.interval_us))
            | "Rewindow" >> beam.WindowInto(GlobalWindows())
            | "Typed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, Any])
            | "RollPerStage" >> beam.ParDo(_RollFn(cfg, quiet, int(self._grace_s * US_PER_S)))
        )
