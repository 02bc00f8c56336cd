"""Rolling latency baselines per stage, per tenant and end to end, learned from the stream itself.

Semantics both drivers reproduce exactly (the backtest in-process, the Beam job with a combine per interval):

* Time is cut into intervals of ``interval_s`` of event time. Verdicts made during interval ``k`` use the
  *snapshot* taken at the start of ``k``: everything learned in intervals ``< k``, decayed to ``k``.
  Learning within an interval is a sum of bin counts, so its order does not matter.
* Score first, then learn. Under the ``body`` line a value above the key's threshold (above its bin)
  is learned at a tenth of the weight (``anomaly_weight``). That is why an incident stays flagged: when a stage
  turns 8x slower for 30 minutes, the baseline has seen those values as a couple of percent of its mass, and
  its quantiles barely move (clipped at the threshold at full weight, they raised it 2x within the 30 minutes). A
  lasting change is still adopted: with a 3 h half-life the slow values reach half of the mass after about ten
  hours, then they are normal. The ``tail`` line (the default) learns nothing over it nor from a disturbed interval.
* The line (``stagewatch.core.lines``): the tail rule's estimated p99.9 (the default) or the body rule's multiple of
  the lower half's spread over the median.
* A key is warm while its decayed sample count is at least ``warmup_n`` (the tail rule: enough to read its
  ``tail_from`` quantile, 100 samples); a cold key makes no verdict (the visible warm-up). A tenant's key is used
  when warm, else the stage-wide key, moved or withheld for it (``stagewatch.core.judged_by``). A key under
  ``keep_n`` forgets more slowly (``stagewatch.core.forgetting``): a stage of a few files an hour is judged.
* The busy hours of the day: the baseline's half-life (3 h) is short next to a day, so it follows the daily load
  curve; the ``at this hour`` in messages is that rolling median.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

import numpy as np

from stagewatch.core.bins import N_BINS, bin_of, bins_of
from stagewatch.core.forgetting import holds_until
from stagewatch.core.lines import BODY_PS, DEFAULT_LINE, LINE_RULES, TAIL_PS, body_line, level_moved, tail_line
from stagewatch.core.sketch import HistogramBank

__all__ = ["END_TO_END", "BaselineConfig", "BaselineKey", "BaselineStore", "Snapshot", "make_snapshots"]


END_TO_END = "end_to_end"  # the pseudo-stage under which end-to-end durations are learned and reported

BaselineKey = tuple[str, str | None]  # (stage or END_TO_END, tenant or None for stage-wide)


@dataclass(frozen=True)
class BaselineConfig:
    interval_s: int = 300
    half_life_s: float = 3 * 3600.0
    longest_half_life_s: float = 7 * 24 * 3600.0  # a key's under ``keep_n`` (``core.forgetting``)
    warmup_n: float = 30.0
    line: str = DEFAULT_LINE  # how the alert line is read: "tail" or "body" (``stagewatch.core.lines``)
    # The body rule: median x exp(k x the lower half's spread), at least min_ratio x the 70th percentile.
    k: float = 4.0
    min_ratio: float = 1.65  # the line is at least this x the 70th percentile (1 - max_anomaly_share)
    # Either line is at least this far above the median: a 2 ms call taking 6 ms is not what anyone gets paged for.
    min_excess_ms: float = 5.0
    anomaly_weight: float = 0.1  # body rule: what a value over the line weighs when learned
    chronic_n: float = 5.0
    prior_n: float = 50.0
    max_anomaly_share: float = 0.3
    # The tail rule: the estimated p99.9 times ``margin`` (labels and people call a duration clearly slow at
    # about 1.5x its p99.9; a lognormal stage's normal durations cross 1.35x its p99.9 about once in 4,000).
    margin: float = 1.35
    tail_support: float = 10.0  # samples above a quantile before the tail rule reads it
    # The lowest quantile the tail rule goes on from: a key with fewer than ``tail_support`` samples above it is
    # still warming up. From the median, the extrapolation follows the body's slope, and a two-mode stage's
    # upper mode is not seen yet: the zoo's young mixture stages paged at 1.0-1.9x such lines.
    tail_from: float = 0.9
    young_widen: float = 0.25  # how much wider a line read from few samples is (``lines.tail_line``)
    # Under the tail rule a key judges once it has been watched for ``watch_for`` x its alert line, and from then on:
    # before that, the slowest of the files it has seen enter are still in the stage, and the durations it learned
    # are the fast ones (zoo 20020: a one-minute stage's line at 0.6x its p99.9 eight minutes after the start, 17
    # false alerts). Not the body rule's: drawn at about 2x the p99.9, it was over it from the first interval.
    watch_for: float = 2.0
    # The tail rule reads the history, so it keeps it clean. What its line or the body line flags is not learned unless
    # the key usually flags ``mode_share`` of what it sees (a second mode, not a slow share: the one knob between the
    # two). A key of ``establish_n`` samples learns nothing from a disturbed interval (flagging ``disturbed_share`` of
    # its values, ``disturbed_ratio`` x its usual share, ``disturbed_min`` values; its median ``shift_ratio`` x its
    # recent level) until it lasts ``adopt_after_s`` with ``mode_share`` flagged; one of ``hold_n`` nothing from the
    # calm interval before either, and learns a calm one up to its line if usual for it (``HistogramBank.fold``).
    establish_n: float = 200.0
    hold_n: float = 1000.0
    mode_share: float = 0.15
    disturbed_share: float = 0.01
    disturbed_ratio: float = 3.0
    disturbed_min: float = 3.0
    adopt_after_s: float = 6 * 3600.0
    # An interval whose whole body moved up is disturbed however little it flags -- for this long of intervals,
    # decayed as the counts are (``HistogramBank.fold``).
    lift_for_s: float = 3600.0
    shift_ratio: float = 1.25
    tenant_baselines: bool = True
    max_tenants: int = 5000

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or min(self.half_life_s, self.longest_half_life_s) <= 0:
            raise ValueError("baseline interval and half-lives must be positive")
        if self.warmup_n < 1 or self.k <= 0 or self.min_ratio < 1:
            raise ValueError("warmup_n >= 1, k > 0 and min_ratio >= 1 are required")
        if not 0 <= self.anomaly_weight <= 1:
            raise ValueError("anomaly_weight must be between 0 and 1")
        if self.line not in LINE_RULES:
            raise ValueError(f"line must be one of {', '.join(LINE_RULES)}, not {self.line!r}")
        if min(self.margin, self.tail_support, self.shift_ratio) < 1 or self.young_widen < 0 or self.adopt_after_s <= 0:
            raise ValueError("margin, tail_support, shift_ratio >= 1, young_widen >= 0, adopt_after_s > 0 required")
        if self.watch_for < 0 or not 0 <= self.tail_from < 0.999:
            raise ValueError("watch_for must be at least 0, tail_from at least 0 and below 0.999")

    @property
    def interval_us(self) -> int:
        return self.interval_s * 1_000_000

    @property
    def warm_n(self) -> float:
        """The decayed sample count from which a key judges: the tail rule needs its ``tail_from`` quantile."""
        tail_n = round(self.tail_support / (1.0 - self.tail_from), 6)  # 10 / 0.1: 100
        return max(self.warmup_n, tail_n) if self.line == "tail" else self.warmup_n

    @property
    def decay_per_interval(self) -> float:
        return 0.5 ** (self.interval_s / self.half_life_s)

    @property
    def keep_n(self) -> float:  # the count under which a key forgets slowly (``core.forgetting``): 1.5x warm_n
        return 1.5 * self.warm_n

    @property
    def keep(self) -> tuple[float, float]:  # ``keep_n`` and the decay an interval under it
        return self.keep_n, 0.5 ** (self.interval_s / max(self.half_life_s, self.longest_half_life_s))

    @property
    def adopt_steps(self) -> int:
        return max(1, round(self.adopt_after_s / self.interval_s))


class Snapshot(NamedTuple):
    """What a key knows at the start of an interval."""

    median_ms: float
    threshold_ms: float
    n: float  # decayed sample count
    spread: float  # the body rule's robust sigma of log-durations (a young tenant borrows it)
    warm_until: int  # last interval in which n stays >= warmup_n without new data; -1 if cold
    flagged_share: float  # decayed share of recent samples that were over the line
    # The tail rule's log of its line over the median (NaN under the body rule); a young tenant borrows it.
    # Last, with a default: snapshots pickled in a running job's state before it existed still load.
    reach: float = math.nan
    # The line over which values are held out of learning, when not the alert line (NaN): the tail rule holds
    # out what the body line flags too.
    learn_ms: float = math.nan
    # Under the tail rule, a customer's cold key: the last interval it holds ``warmup_n`` (``judged_by._as_its_own``).
    young_until: int = -1


def make_snapshots(
    bank: HistogramBank, rows: np.ndarray, step: int, cfg: BaselineConfig, prior: np.ndarray,
    prior_q: np.ndarray | None = None, cut_short_us: int = 0,
) -> tuple[list[Snapshot], np.ndarray | None]:
    """Median, spread and alert line of each row, and under the tail rule each row's quantiles at ``TAIL_PS``.
    ``prior`` holds (spread, reach) of the stage-wide key for a tenant's key (a young tenant borrows them), NaN for
    a stage-wide key; ``prior_q`` the stage-wide key's quantiles at ``TAIL_PS`` (NaN rows for none), which fit the
    borrowed reach to the tenant; ``cut_short_us``, how much of the last interval had not happened yet (an early
    snapshot's: ``core.early``). Under the tail rule the snapshot also carries the line over which values are held
    out of learning: the lower of the two lines."""
    tail = cfg.line == "tail"
    # One pass over the rows for both rules' quantiles: the rolls are much of a backtest's time.
    n, q_all = bank.quantiles(rows, BODY_PS + TAIL_PS if tail else BODY_PS)
    q = q_all[:, : len(BODY_PS)]
    spread, threshold = body_line(n, q, prior[:, 0], cfg)
    reach = learn = np.full(len(n), np.nan)
    q_tail = None
    if tail:
        q_tail = q_all[:, len(BODY_PS):]
        reach, tail_threshold = tail_line(n, q_tail, prior[:, 1], cfg, prior_q)
        # Down with the key's levels of the last hour (``lines.level_moved``), not within min_excess_ms of the median;
        # the learning cut is the unlowered line's (lowered, a fast share wore a tail to 0.90x its p99.9: a review's).
        fresh = (bank.level_at[rows] >= step - round(3600 / cfg.interval_s))[:, None]  # a level of the last hour
        levels = np.where(fresh, np.stack([bank.level25[rows], bank.level[rows], bank.level75[rows]], 1), np.nan)
        down = level_moved(levels, q_tail, bank.seen[rows], cfg)
        lowered = np.maximum(tail_threshold * np.exp(down), q_tail[:, 1] + cfg.min_excess_ms)
        # What the body line flags is held out of learning too: a slow share (DeLag: a tenth of the calls at
        # 2.3x the median, where the normal p99.9 is 1.7x) sits just under a tail line read with it, and once
        # learned it is the tail -- the line rose 3x within hours and never flagged it again.
        learn = np.minimum(threshold, tail_threshold)
        threshold = lowered
    warm_n = cfg.warm_n
    warm = n >= warm_n
    if tail:
        warm &= bank.watched(rows, step, threshold * cfg.watch_for * 1000.0, cfg.interval_us, cut_short_us)
    warm_until = np.where(warm, holds_until(n, warm_n, step, cfg.decay_per_interval, cfg.keep), -1)
    if tail:  # a stage-wide key in a run stays warm: no line stands in for its own
        warm_until = np.maximum(warm_until, bank.run_warm_until(rows, n, step, cfg.adopt_steps, np.isnan(prior[:, 1])))
    young = ~np.isnan(prior[:, 1]) & (warm_until < step) & (n >= cfg.warmup_n)  # a reach to borrow: the tail rule's
    young_until = np.where(young, holds_until(n, cfg.warmup_n, step, cfg.decay_per_interval, cfg.keep), -1)
    seen = bank.seen[rows]
    share = np.where(seen > 0, bank.flagged[rows] / np.maximum(seen, 1e-300), 0.0)
    return [
        Snapshot(*values)
        for values in zip(
            q[:, 1].tolist(), threshold.tolist(), n.tolist(), spread.tolist(),
            warm_until.astype(np.int64).tolist(), share.tolist(), reach.tolist(), learn.tolist(),
            young_until.astype(np.int64).tolist(), strict=True,
        )
    ], q_tail


class BaselineStore:
    """All baselines of one stream, for the in-process driver. The Beam driver keeps the same per-key state."""

    def __init__(self, cfg: BaselineConfig | None = None) -> None:
        self.cfg = cfg or BaselineConfig()
        self.step = -1  # current interval index; -1 before the first event
        self.next_boundary_us = -1  # event time at which the next interval starts (drivers test it inline)
        self.bank = HistogramBank()
        self.snaps: dict[BaselineKey, Snapshot] = {}
        self.pending: dict[BaselineKey, dict[int, float]] = {}
        # What ``learn`` heard this interval, by (stage, tenant), binned into ``pending`` when the interval is
        # folded: an append per measurement instead of two bin lookups and two dictionary updates.
        self.values: dict[BaselineKey, list[float]] = {}
        # Changes whenever the interval or the snapshots do: callers may cache lookups while it stays put.
        self.epoch = 0
        self.admitted: dict[str, set[str]] = {}  # per baseline stage, the tenants with their own baselines
        self.tenants_over_limit = 0  # values not learned for their tenant: no place left for it
        # How much of the interval just folded had not happened yet: an early snapshot's store (``core.early``).
        self.cut_short_us = 0

    def __setstate__(self, state: dict[str, object]) -> None:
        # A store pickled in a running job's state before these fields existed (``--update``). One from before
        # ``admitted`` may hold any number of tenants (the stream had no limit): the first by name keep theirs.
        self.__dict__.update({"values": {}, "epoch": 0, "cut_short_us": 0, **state})
        if "admitted" not in state:
            self.admitted, _ = {}, self.__dict__.pop("tenants", None)
            for stage in {key[0] for key in self.snaps}:
                self.admit(stage, [key[1] for key in self.snaps if key[0] == stage])
            self.snaps = {k: v for k, v in self.snaps.items() if k[1] is None or k[1] in self.admitted[k[0]]}

    def advance(self, t_us: int) -> None:
        """Move to the interval holding ``t_us``. What was learned in the interval just left is folded in as of
        the end of *that* interval, whenever the next event comes: the snapshots do not depend on the gap to
        it, which is what a streaming driver folding at each interval's end also computes."""
        step = t_us // self.cfg.interval_us
        if step > self.step:
            if self.values:
                self._count_values()
            if self.pending:
                self.fold_interval(self.step, self.pending)
            self.step = step
            self.next_boundary_us = (step + 1) * self.cfg.interval_us
            self.epoch += 1

    def fold_interval(self, step: int, counts: dict[BaselineKey, dict[int, float]]) -> None:
        """Fold the raw bin counts learned during interval ``step`` as of its end; the store is then at the
        next interval. The streaming job's per-stage roll calls this with one interval's combined counts."""
        self.step, self.pending = step, counts
        self._roll(step + 1)
        self.step = step + 1
        self.next_boundary_us = (step + 2) * self.cfg.interval_us
        self.epoch += 1

    def _roll(self, step: int) -> None:
        """Fold ``pending`` (learned during ``self.step``) into the histograms as of ``step``; new snapshots."""
        if self.pending:
            # What was learned during the interval that ends now was judged against the lines in force during it. Body
            # rule: values over a warm key's line weigh ``anomaly_weight`` -- unless the key already flags more than
            # ``max_anomaly_share`` of what it sees: then they are how the stage behaves now (the way out of a baseline
            # that learned one mode of two at its start) and count in full. Tail rule: ``BaselineConfig``.
            cfg, old, size = self.cfg, self.step, len(self.pending)
            tail = cfg.line == "tail"
            over_bin, over_weight = np.full(size, 1 << 30, dtype=np.int64), np.ones(size)
            line_bin = over_bin.copy()  # the alert line's bin, where the learning cut is the body line's
            disturbed, hold = (np.full(size, np.inf) if tail else None), np.zeros(size, dtype=bool)
            median = np.full(size, np.nan)  # the log of each warm key's learned median
            for k, (key, counts) in enumerate(self.pending.items()):
                snap = self.snaps.get(key)
                # A key in a run holds it out though cold (learned raw, a review's case: a line 27-80x).
                if snap is None or (snap.warm_until < old and not self.bank.in_a_run(key)):
                    continue
                over_bin[k] = bin_of(snap.threshold_ms if math.isnan(snap.learn_ms) else snap.learn_ms)
                if not tail:
                    if snap.flagged_share < cfg.max_anomaly_share:
                        over_weight[k] = cfg.anomaly_weight
                    continue
                line_bin[k] = bin_of(snap.threshold_ms)
                median[k] = math.log(max(snap.median_ms, 1e-3))
                # Held out unless the key usually flags a common share: a second mode, not a slow share.
                if snap.flagged_share < cfg.mode_share:
                    over_weight[k] = 0.0
                # And one whose count decayed under ``establish_n`` in a run, until it ends: learning nothing, a
                # tenant's fell to 176 and it learned the rest of a 4.3x slowdown (zoo 20006, held out).
                if snap.n >= cfg.establish_n or self.bank.in_a_run(key):
                    # An interval flagging far more than the key usually does: its values under the line are
                    # slow too (an 8x slowdown leaves 40 % of a gamma stage's files under it), and learning them
                    # lifted the tail the line is read from within minutes (zoo 10002: the line rose 5x).
                    assert disturbed is not None
                    share = max(cfg.disturbed_share, cfg.disturbed_ratio * snap.flagged_share)
                    disturbed[k] = max(cfg.disturbed_min, sum(counts.values()) * share)
                    hold[k] = snap.n >= cfg.hold_n
            rows = self.bank.fold(
                self.pending, step, cfg.decay_per_interval, over_bin, over_weight,  # type: ignore[arg-type]
                disturbed, cfg.adopt_steps, cfg.mode_share, hold,
                math.log(cfg.shift_ratio), line_bin, cfg.lift_for_s / cfg.interval_s,
                self._parents() if tail else None, median, cfg.disturbed_ratio * hold, cfg.keep)
            keys = list(self.pending)
            stage_q: dict[str, np.ndarray] = {}  # a stage-wide key's quantiles, for its tenants' fit
            # Stage-wide keys first: a tenant's snapshot borrows the spread and reach of its stage's new one.
            stage_wide = np.array([k[1] is None for k in keys])
            for part in (stage_wide, ~stage_wide):
                if not part.any():
                    continue
                part_keys = [k for k, p in zip(keys, part.tolist(), strict=True) if p]
                nothing = (np.nan, np.nan)
                prior = np.array([nothing if k[1] is None or (k[0], None) not in self.snaps
                                  else (self.snaps[(k[0], None)].spread, self.snaps[(k[0], None)].reach)
                                  for k in part_keys], dtype=np.float64).reshape(len(part_keys), 2)
                prior_q = None
                if tail:  # the body rule fits nothing
                    none = np.full(len(TAIL_PS), np.nan)
                    prior_q = np.array([stage_q.get(k[0], none) if k[1] else none for k in part_keys]).reshape(
                        len(part_keys), len(TAIL_PS))
                snaps, q_tail = make_snapshots(self.bank, rows[part], step, self.cfg, prior, prior_q, self.cut_short_us)
                for k, (key, snap) in enumerate(zip(part_keys, snaps, strict=True)):
                    self.snaps[key] = snap
                    if q_tail is not None and key[1] is None:
                        stage_q[key[0]] = q_tail[k]
        self.pending.clear()

    def _parents(self) -> np.ndarray:
        """Each pending key's stage-wide key's index in ``pending`` (-1 for a stage-wide key, or none pending)."""
        at = {key[0]: k for k, key in enumerate(self.pending) if key[1] is None}
        return np.array([at.get(key[0], -1) if key[1] is not None else -1 for key in self.pending], dtype=np.int64)

    def admit(self, stage: str, tenants: Iterable[str | None]) -> set[str]:
        """The tenants of ``stage`` with their own baselines, once those heard in an interval are let in: new
        ones in name order while the stage has fewer than ``max_tenants``. Per stage and by name, not by
        arrival: the streaming job's per-stage roll keeps no arrival order, and admits the same ones (made-up
        tenant names cannot grow either driver's state without bound)."""
        have = self.admitted.setdefault(stage, set())
        if self.cfg.tenant_baselines and len(have) < self.cfg.max_tenants:
            have.update(heapq.nsmallest(self.cfg.max_tenants - len(have), {t for t in tenants if t and t not in have}))
        return have

    def learn(self, stage: str, tenant: str | None, value_ms: float) -> None:
        """Count one observation for the stage-wide key and the tenant's; how much it weighs is decided when
        the interval is folded in, against the line in force during the interval (see ``_roll``)."""
        self.learning(stage, tenant).append(value_ms)

    def learning(self, stage: str, tenant: str | None) -> list[float]:
        """The list that ``learn(stage, tenant, v)`` appends to, for callers that hold on to it while
        ``epoch`` stays put (it is binned and replaced when the interval is folded)."""
        values = self.values.get((stage, tenant))
        if values is None:
            values = self.values[(stage, tenant)] = []
        return values

    def _count_values(self) -> None:
        """Bin what ``learn`` heard into ``pending``: every value for its stage-wide key, and for its tenant's
        key when the tenant has (or gets: ``admit``) one of the stage's ``max_tenants`` places. One
        numpy pass over the whole interval: per list, the bookkeeping cost more than the values."""
        heard, self.values = self.values, {}
        targets: dict[BaselineKey, int] = {}
        stage_wide: list[int] = []
        own: list[int] = []
        by_stage: dict[str, list[str | None]] = {}
        for stage, tenant in heard:
            by_stage.setdefault(stage, []).append(tenant)
        admitted = {stage: self.admit(stage, tenants) for stage, tenants in by_stage.items()}
        for (stage, tenant), values in heard.items():
            stage_wide.append(targets.setdefault((stage, None), len(targets)))
            if tenant is not None and tenant in admitted[stage]:
                own.append(targets.setdefault((stage, tenant), len(targets)))
            else:
                self.tenants_over_limit += len(values) if tenant and self.cfg.tenant_baselines else 0
                own.append(-1)
        sizes = np.fromiter(map(len, heard.values()), dtype=np.int64, count=len(heard))
        bins = bins_of(np.fromiter(chain.from_iterable(heard.values()), dtype=np.float64, count=int(sizes.sum())))
        to_stage = np.repeat(np.asarray(stage_wide, dtype=np.int64), sizes)
        to_own = np.repeat(np.asarray(own, dtype=np.int64), sizes)
        codes, counts = np.unique(
            np.concatenate([to_stage * N_BINS + bins, (to_own * N_BINS + bins)[to_own >= 0]]), return_counts=True
        )
        target_of = codes // N_BINS
        bounds = np.searchsorted(target_of, np.arange(len(targets) + 1)).tolist()
        bin_list, count_list = (codes % N_BINS).tolist(), counts.astype(np.float64).tolist()
        pending = self.pending
        for k, key in enumerate(targets):
            lo, hi = bounds[k], bounds[k + 1]
            into = pending.get(key)
            if into is None:
                pending[key] = dict(zip(bin_list[lo:hi], count_list[lo:hi], strict=True))
            else:
                for b, n in zip(bin_list[lo:hi], count_list[lo:hi], strict=True):
                    into[b] = into.get(b, 0.0) + n
