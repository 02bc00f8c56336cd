"""``LearnBaselines``: measurements → per-interval bin counts → one rolling ``BaselineStore`` per stage.

Scaling: measurements are counted per (baseline stage, shard) -- the shard a hash of the file's UID -- in
keyed state, so the work of counting is spread over workers and no key carries every event of a stage. When
the watermark passes an interval's end, each shard sends that interval's counts on to its stage's roll (and
sends again, as an increment, for any measurement of that interval that comes later); each stage's roll so
receives a few small dictionaries per interval -- never the events -- and sums them. A stage's roll holds
the stage-wide key and its tenants' keys together, because a young tenant's snapshot borrows its stage's
spread.

Output: at the end of each interval *k*, every key's snapshot for interval *k + 1*, as
``((stage, tenant), Snapshot)`` timestamped at the start of *k + 1* — to be windowed by interval and given to
the judging step as a side input. In a stage's first interval, also its early snapshots (``core.early``) as
``(((stage, tenant), tick boundary), Snapshot)``, timestamped at the boundary: the shards send that
interval's first ticks' counts tick by tick. A stage keeps emitting each interval while it has seen data within the
trace TTL, or a key of it is warm (``core.forgetting``: days), so a quiet interval still has its snapshots; then it
stops (and past a finite input's end, ``end_us``, it does not go on for its warm keys).

Timeline for one stage, intervals of 5 min, grace 2.5 min::

    12:03  measurements of interval 12:00 (k) counted by their shards
    12:05  watermark passes the end of k: each shard sends its counts of k; k + 1 begins
    12:06  a measurement of k arrives behind the watermark: its shard sends an increment of 1 at once
    12:07:30  the roll folds k (sums of everything it received for k), emits the snapshots of k + 1
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.early import EARLY_TICKS, early_snapshots, tick_us
from stagewatch.core.interval_counts import Counts, admitted_counts, bin_counts
from stagewatch.core.timeutil import US_PER_S
from stagewatch.core.traces import TraceRules
from stagewatch.core.verdicts import baseline_stage
from stagewatch.stream.steps.contain import ContainedStep, contained
from stagewatch.stream.steps.timers import fire_at, fire_no_later_than, take_due

__all__ = ["LearnBaselines", "adopt"]

# Shards per baseline stage. On Dataflow they bound how many workers count a stage; the in-process runner
# copies every key's state that a bundle touches, so more shards cost a local run a little each.
COUNT_SHARDS = 8


def _shard_of(uid: str) -> int:
    return zlib.crc32(uid.encode("utf-8", "surrogatepass")) % COUNT_SHARDS  # stable across processes


class _CountBinsFn(beam.DoFn):
    """Per (baseline stage, shard): the measurements of each interval, counted into bins and sent on to the
    stage's roll when the watermark passes the interval's end; what comes for an interval already sent is
    sent as an increment. In the shard's first interval -- its stage's first, but for a shard no file hashed
    to before -- the first ``EARLY_TICKS`` ticks are sent tick by tick, for the roll's early snapshots
    (``core.early``). (Kept as a bag of values until then: an append per measurement, where a running
    dictionary in state would be decoded and encoded whole for each.)"""

    VALUES = BagStateSpec("values", PickleCoder())
    NEXT = ReadModifyWriteStateSpec("next_fire_us", VarIntCoder())
    FIRST = ReadModifyWriteStateSpec("first_step", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def __init__(self, cfg: BaselineConfig) -> None:
        self._interval_us = cfg.interval_us
        self._tick_us = tick_us(cfg)

    @contained("Learn")
    def process(
        self,
        kv: tuple[tuple[str, int], Heard],
        values: Any = beam.DoFn.StateParam(VALUES),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        first: Any = beam.DoFn.StateParam(FIRST),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> None:
        first_step = first.read()
        if first_step is None or kv[1][0] < first_step:  # the earliest, not the first to arrive
            first_step = kv[1][0]
            first.write(first_step)
        values.add(kv[1])
        fire_no_later_than(next_fire, fire, self._due(kv[1], first_step)[0])

    def _due(self, v: Heard, first_step: int) -> tuple[int, int]:
        """(when ``v`` is sent, its tick in the interval or -1 for the whole interval)."""
        k, tick = v[0], (v[3] if len(v) > 3 else -1)  # 3 fields: kept in a running job's state from before ticks
        if k == first_step and 0 <= tick < EARLY_TICKS:
            return k * self._interval_us + (tick + 1) * self._tick_us, tick
        return (k + 1) * self._interval_us, -1

    @on_timer(FIRE)
    @contained("Learn")
    def _fire(
        self,
        key: Any = beam.DoFn.KeyParam,
        ts: Any = beam.DoFn.TimestampParam,
        values: Any = beam.DoFn.StateParam(VALUES),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        first: Any = beam.DoFn.StateParam(FIRST),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        first_step = first.read()
        due: list[Heard]
        rest: list[Heard]
        due, rest = take_due(values, int(ts.micros), lambda v: self._due(v, first_step)[0],
                             lambda v: self._due(v, first_step))
        by_part: dict[tuple[int, int], list[tuple[str | None, float]]] = {}
        for v in due:
            by_part.setdefault((v[0], self._due(v, first_step)[1]), []).append((v[1], v[2]))
        for k, tick in sorted(by_part):
            sent_at = self._due((k, None, 0.0, tick), first_step)[0]
            yield TimestampedValue((key[0], (k, bin_counts(by_part[(k, tick)]), tick)), sent_at / US_PER_S)
        fire_at(next_fire, fire, [self._due(rest[0], first_step)[0]] if rest else [])


Heard = tuple[int, str | None, float, int]  # (interval, tenant, value, tick within the interval)


def _add(into: Counts, counts: Counts) -> None:
    for bin_key, n in counts.items():
        into[bin_key] = into.get(bin_key, 0.0) + n


def adopt(held: BaselineStore | None, cfg: BaselineConfig) -> BaselineStore:
    """The store a stage's roll kept, under the job's settings now: an in-place update (``--update``) may have
    changed them, and the store carries those it was made with. The same store with the new settings (a new
    line rule or half-life applies from the next fold), or a new one when the interval changed: its steps,
    warm-ups and decays are counted in intervals, and read in other units they would be silently wrong --
    the stage warms up again instead, and what its roll held for the old intervals is dropped."""
    if held is None or held.cfg.interval_s != cfg.interval_s:
        return BaselineStore(cfg)
    held.cfg = cfg
    return held


class _RollFn(beam.DoFn):
    """Per baseline stage: the interval counts of every shard, summed, folded ``grace`` after each interval's
    end.

    The fold waits ``grace`` past the interval's end for increments: a measurement can reach its shard after
    the watermark passed its interval (data behind the watermark; or a runner that does not hold a step's
    output watermark for its pending timers, as Beam's in-process runner as shipped does not), and a fold
    should not miss it. Counts that come after their interval was folded anyway are counted in
    ``baseline_counts_after_fold`` and left out: the store's clock only moves forward.

    Before its first fold the roll also sums its first interval's counts tick by tick, and ``grace`` after
    each early tick boundary emits the stage's early snapshots as of it (``core.early``), keyed
    ``(baseline key, tick boundary)``, stamped at the boundary: inside the interval, whose side input they
    join before it is complete (``EARLY_TICKS`` ticks plus the grace end before the interval does).
    """

    STORE = ReadModifyWriteStateSpec("store", PickleCoder())
    PENDING = ReadModifyWriteStateSpec("pending", PickleCoder())
    EARLY = ReadModifyWriteStateSpec("early", PickleCoder())  # (first interval, {tick: counts}, next boundary)
    NEXT = ReadModifyWriteStateSpec("next_fire_us", VarIntCoder())
    LAST_DATA = ReadModifyWriteStateSpec("last_data_step", VarIntCoder())
    FOLDED = ReadModifyWriteStateSpec("folded_before_step", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def __init__(self, cfg: BaselineConfig, quiet_steps: int, grace_us: int, end_us: int | None = None) -> None:
        if grace_us + EARLY_TICKS * tick_us(cfg) >= cfg.interval_us:
            raise ValueError("the fold's grace must end an early tick's snapshots inside their interval")
        self._cfg = cfg
        self._end_us = end_us
        self._quiet_steps = quiet_steps
        self._grace_us = grace_us
        self._after_fold = Metrics.counter("stagewatch", "baseline_counts_after_fold")
        self._over_limit = Metrics.counter("stagewatch", "baseline_tenants_over_limit")
        self._restarted = Metrics.counter("stagewatch", "baselines_restarted_for_a_new_interval")

    @contained("Learn")
    def process(
        self,
        kv: tuple[str, tuple[Any, ...]],
        store_state: Any = beam.DoFn.StateParam(STORE),
        pending: Any = beam.DoFn.StateParam(PENDING),
        early: Any = beam.DoFn.StateParam(EARLY),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        folded: Any = beam.DoFn.StateParam(FOLDED),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> None:
        k, counts = kv[1][0], kv[1][1]
        tick = kv[1][2] if len(kv[1]) > 2 else -1  # 2 fields: sent by a shard from before ticks
        if k < (folded.read() or 0):
            self._after_fold.inc(int(sum(counts.values())))
            return
        by_step: dict[int, Counts] = pending.read() or {}
        _add(by_step.setdefault(k, {}), counts)
        pending.write(by_step)
        fire_no_later_than(next_fire, fire, (k + 1) * self._cfg.interval_us + self._grace_us)
        if tick < 0 or store_state.read() is not None:
            return
        start = k * self._cfg.interval_us
        first = early.read()
        if first is None or k < first[0]:  # the earliest interval heard of, not the first to arrive
            first = [k, {}, start]  # (first interval, its counts by tick, last boundary emitted)
        boundary = start + (tick + 1) * tick_us(self._cfg)
        if first[0] != k or boundary <= first[2]:  # another interval's; or a tick already emitted: the fold has it
            return
        _add(first[1].setdefault(tick, {}), counts)
        early.write(first)
        fire_no_later_than(next_fire, fire, boundary + self._grace_us)

    @on_timer(FIRE)
    @contained("Learn")
    def _fire(
        self,
        key: Any = beam.DoFn.KeyParam,
        ts: Any = beam.DoFn.TimestampParam,
        store_state: Any = beam.DoFn.StateParam(STORE),
        pending: Any = beam.DoFn.StateParam(PENDING),
        early: Any = beam.DoFn.StateParam(EARLY),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        last_data: Any = beam.DoFn.StateParam(LAST_DATA),
        folded: Any = beam.DoFn.StateParam(FOLDED),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        interval = self._cfg.interval_us
        at_us = int(ts.micros) - self._grace_us
        first = early.read()
        if at_us % interval and first is not None:  # an early tick's, not a fold's
            later: list[int] = []
            if store_state.read() is None:
                yield from self._early(key, first, at_us)
                early.write(first)
                if first[2] < first[0] * interval + EARLY_TICKS * tick_us(self._cfg):
                    later.append(first[2] + tick_us(self._cfg) + self._grace_us)
            fire_at(next_fire, fire, later + [(k + 1) * interval + self._grace_us for k in pending.read() or {}])
            return
        now_step = at_us // interval  # the interval that started `grace` ago
        early.clear()
        held: BaselineStore | None = store_state.read()
        store = adopt(held, self._cfg)
        by_step = pending.read() or {}
        if held is not None and store is not held:  # counts of intervals in the old units: dropped too
            self._restarted.inc()
            by_step = {}
        due = sorted(k for k in by_step if k < now_step)
        # Same steps as the in-process store: learn during interval k, fold as of k + 1.
        for k in due:
            # The tenants with baselines of their own, as the backtest admits them (``BaselineStore.admit``).
            over_limit = store.tenants_over_limit
            store.fold_interval(k, admitted_counts(store, key, by_step.pop(k)))
            self._over_limit.inc(store.tenants_over_limit - over_limit)
            last_data.write(k)
        pending.write(by_step)
        store.advance(now_step * interval)
        store_state.write(store)
        folded.write(now_step)
        for k2, snap in store.snaps.items():
            yield TimestampedValue((k2, snap), now_step * interval / US_PER_S)
        quiet_since = last_data.read()
        # On while a key of the stage is still warm (``core.forgetting``: days): its snapshots are what the next files,
        # and the stall deadlines of those in it, are judged by -- as the backtest's store still has them (a young
        # customer's count only with a warm stage key). Not past a finite input's end: that is not the passage of time
        # (a local run kept firing each stage's roll for the days its keys stayed warm, twice as long: a review's).
        judging = (self._end_us is None or now_step * interval <= self._end_us) and any(
            s.warm_until > now_step for s in store.snaps.values())
        looping = by_step or judging or (quiet_since is not None and now_step - quiet_since < self._quiet_steps)
        steps = [now_step + 1] + [k + 1 for k in by_step] if looping else []
        fire_at(next_fire, fire, [step * interval + self._grace_us for step in steps])

    def _early(self, stage: str, first: list[Any], at_us: int) -> Iterator[Any]:
        """The stage's early snapshots of each early tick boundary after the last emitted (``first[2]``) up to
        ``at_us``, each from the counts of the ticks before it; ``first[2]`` moves on past them."""
        cfg, tick = self._cfg, tick_us(self._cfg)
        k, by_tick = first[0], first[1]
        start = k * cfg.interval_us
        for b in range(first[2] + tick, min(at_us, start + EARLY_TICKS * tick) + 1, tick):
            counts: Counts = {}
            for j, part in by_tick.items():
                if start + (j + 1) * tick <= b:
                    _add(counts, part)
            if counts:
                for baseline_key, snap in early_snapshots(cfg, stage, k, counts, b).items():
                    yield TimestampedValue(((baseline_key, b), snap), b / US_PER_S)
            first[2] = b


class LearnBaselines(ContainedStep):
    """Measurements (timestamped when they were made) → per-interval snapshots of every baseline key.

    ``grace_s``: how long after an interval's end its late counts are still taken (default half an
    interval); a local run's watermark must move in steps shorter than ``interval - grace`` (see
    ``pipeline._file_stream``).
    """

    def __init__(self, rules: TraceRules, cfg: BaselineConfig | None = None, grace_s: float | None = None,
                 end_us: int | None = None) -> None:
        super().__init__()
        self._rules = rules
        self._cfg = cfg or BaselineConfig()
        self._grace_s = self._cfg.interval_s / 2 if grace_s is None else grace_s
        self._end_us = end_us  # a finite input's last event time: no roll goes on past it for its warm keys

    def expand(self, measurements: beam.PCollection) -> beam.PCollection:
        rules, cfg = self._rules, self._cfg
        quiet = max(1, -(-int(rules.ttl_us) // cfg.interval_us))  # up: a whole gap, however the interval divides it
        tick = tick_us(cfg)
        # Contained (unlike the other steps' keying, which read one field): it runs the rules on each measurement.
        keyed = self.map(measurements, "KeyByBaseline", lambda r: (
            (baseline_stage(r.m, rules), _shard_of(r.file.uid)),
            (r.now_us // cfg.interval_us, r.file.tenant, r.m.value_ms, r.now_us % cfg.interval_us // tick),
        ), "Learn")
        keyed = keyed | "TypedKeys" >> beam.Map(lambda kv: kv).with_output_types(tuple[tuple[str, int], Any])
        counts = self.pardo(keyed, "CountBins", _CountBinsFn(cfg)).main
        typed = counts | "Typed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, Any])
        return self.pardo(typed, "RollPerStage", _RollFn(cfg, quiet, int(self._grace_s * US_PER_S), self._end_us)).main
