"""A young tail key's line (a few hundred samples, reading its 90th percentile): where it sits against its true
p99.9 on a two-mode stage, whose upper mode its lowest readable quantiles straddle, and on stages of one mode,
which the rule for the two-mode one must leave alone."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.judged_by import lookup

pytestmark = pytest.mark.unit

TAIL = BaselineConfig(line="tail")
Draw = Callable[[np.random.Generator, int], np.ndarray]


def _young_lines(draw: Draw, seeds: range, per_interval: int = 100, intervals: int = 3) -> tuple[np.ndarray, ...]:
    """Per seed: the stage's line over its true p99.9, and the share of normal calls over the line, after
    ``intervals`` five-minute intervals of ``per_interval`` calls (about 260 samples by default)."""
    truth = np.sort(draw(np.random.default_rng(999), 400_000))
    p999 = float(np.quantile(truth, 0.999))
    ratios, false_alerts = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        store = BaselineStore(TAIL)
        for k in range(intervals):
            store.advance(k * store.cfg.interval_us)
            store.learning("call", None).extend(draw(rng, per_interval).tolist())
            store.advance((k + 1) * store.cfg.interval_us)
        snap, _ = lookup(store, "call", None)
        assert snap is not None  # warm: it judges
        ratios.append(snap.threshold_ms / p999)
        false_alerts.append(1 - np.searchsorted(truth, snap.threshold_ms, side="right") / len(truth))
    return np.array(ratios), np.array(false_alerts)


def _two_mode(rng: np.random.Generator, n: int) -> np.ndarray:
    """The zoo's two-mode stage: a quarter of the calls 4.4x slower, each mode lognormal (zoo 20001's loquafen)."""
    return rng.lognormal(0, 0.2, n) * np.where(rng.random(n) < 0.25, 4.4, 1.0) * 1000


def test_a_young_two_mode_stage_line_is_not_read_across_the_gap_between_its_modes() -> None:
    # The slope between the 75th and 90th percentiles spans the gap below the upper mode: extrapolated at it, the
    # line sat at 13.6x the true p99.9 in the median (up to 51x), and a 2.7x slowdown of such a stage went
    # unflagged (zoo 20004, held out: 15 of 19 clearly slow files). Where the slope between the next two
    # quantiles up, and the body's, are each less than two thirds of it, the line is extrapolated at the former.
    ratios, _ = _young_lines(_two_mode, range(30))
    assert np.median(ratios) <= 2.0, np.median(ratios)  # 1.28 now
    assert ratios.max() <= 12.0, ratios.max()  # 10.0 now


@pytest.mark.parametrize("sigma", [0.6, 0.9])
def test_a_young_wide_lognormal_stage_line_is_left_as_it_was(sigma: float) -> None:
    # The rule may not pull down the line of a stage with one wide mode. From a hundred samples its slopes are
    # noisy, and the pair above the third quartile less than two thirds as steep as the one below it by chance
    # (sigma 0.9: 1 normal call in 900 paged, 1 in 2,300 before); a gap is steeper than the body too (1 in 1,900).
    def wide(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(0, sigma, n) * 1000

    for per_interval, intervals in ((100, 1), (100, 3)):
        ratios, false_alerts = _young_lines(wide, range(100), per_interval, intervals)
        assert false_alerts.mean() <= 1 / 1500, (per_interval, intervals, false_alerts.mean())
        assert np.median(ratios) >= 1.4, np.median(ratios)


def test_a_whole_millisecond_stage_line_is_not_read_at_the_pair_above_once_it_reads_higher() -> None:
    # Whole-millisecond quantiles step from bin to bin, so from the 97th percentile up a pair can be far steeper
    # than the next: taken for a gap there, the lines of such a stage came out lower (median 1.06x its p99.9, 1 in
    # 1,350 normal calls paged, 1 in 1,700 before; zoo 10011: 2 -> 39 false alerts). Only a key reading no higher
    # than its 90th percentile has the gap rule.
    def whole_ms(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(np.round(rng.lognormal(0, 0.5, n) * 5), 1.0)

    ratios, false_alerts = _young_lines(whole_ms, range(30), per_interval=100, intervals=20)
    assert np.median(ratios) >= 1.15, np.median(ratios)  # 1.21
    assert false_alerts.mean() <= 1 / 1500, false_alerts.mean()  # 0.00058


@pytest.mark.parametrize(("share", "whole_ms"), [(0.2, True), (0.2, False), (0.09, True)])
def test_a_line_is_not_read_across_the_gap_below_a_narrow_upper_mode(share: float, whole_ms: bool) -> None:
    # A 3 ms call whose cache misses take 85 ms: once a readable quantile sits in that narrow mode and the one below
    # it does not, the slope between them is a gap. Extrapolated at it, such lines came out at up to 67,000x the
    # true p99.9 (DeLag's E-Shopper 011: 312,145,453 ms, then 144,369 ms for an hour while warm): blind to any
    # slowdown, a stall deadline days away. The line goes on at the larger of the mode's width and the body's:
    # at most 4.7x now, and at 1.3-1.9x in the median where the mode is learned.
    def cache_miss(rng: np.random.Generator, n: int) -> np.ndarray:
        hit = rng.lognormal(0, 0.25, n) * 3
        values = np.where(rng.random(n) < share, rng.lognormal(0, 0.01, n) * 85, hit)
        return np.maximum(np.round(values), 1.0) if whole_ms else values

    # At 9 %, under ``mode_share``, the mode is a slow share to the tail rule: once the line is read below it
    # (0.12-0.17x the p99.9 in the median from the 8th interval), it is held out and paged -- 9 % of the calls --
    # until the key pages it steadily enough to learn it (``STEADY_MIN``, session 24: 1.40-1.5x on all twenty seeds
    # by the 100th interval; for good before). Here this test pins only that no line is absurd.
    for intervals in (4, 8, 15, 30):
        ratios, _ = _young_lines(cache_miss, range(20), per_interval=30, intervals=intervals)
        assert ratios.max() <= 6.0, (intervals, ratios.max())
        if share > TAIL.mode_share:  # the mode is learned as the stage's normal: the line sits above it
            assert np.median(ratios) <= 2.0, (intervals, np.median(ratios))


def test_a_line_is_not_read_across_a_gap_a_few_times_wide_either() -> None:
    # A whole-millisecond 1.7 ms stage with 19 % of its calls at 5.9x (a review's case): the pair of quantiles
    # across its gap rises 2.4-2.7 per unit of z, and the pair above it, in one bin, not at all. At 3 the rule let
    # it through: lines of 43-150x the true p99.9 in the median, for hours. A Pareto tail rises less than 2 up to
    # the 99.7th percentile unless alpha is under 1.43, and steepens above, which the rule never takes for a gap.
    def whole_ms_two_mode(rng: np.random.Generator, n: int) -> np.ndarray:
        values = rng.lognormal(0, 0.073, n)
        values = np.where(rng.random(n) < 0.19, rng.lognormal(0, 0.035, n) * 5.86, values) * 1.675
        return np.maximum(np.round(values), 1.0)

    for intervals in (3, 6, 9, 13):
        ratios, _ = _young_lines(whole_ms_two_mode, range(10), per_interval=82, intervals=intervals)
        assert ratios.max() <= 3.0, (intervals, ratios.max())  # 1.6 now
