"""Alert lines: where a key's normal durations end, read from its decayed histogram by one of two rules.

* ``body``: ``median * exp(k * s)`` with ``s`` the spread of the *lower half* of log-durations,
  and never below ``min_ratio`` x the 70th percentile. Slowness only adds mass above the median, so the lower half
  barely moves while an incident is learned (in a simulated 30-minute 8x slowdown the interquartile range grew 50 %,
  the lower half about 10 %). It assumes that up to 30 % of what a stage does may be
  anomalous, so a slow subpopulation present from the first minute (DeLag's requests: 20 % slowed 1.3-4x from
  the start) is still caught. Its cost: a stage whose normal tail is not lognormal-like pages on it -- a second
  mode under 30 % of the files, a gamma or a wide lognormal stage (the pipeline zoo: 1.9 % of normal stage
  measurements flagged).
* ``tail`` (the default, ``DEFAULT_LINE``): the estimated p99.9 of the key's own normal distribution times
  ``margin``, read from the highest quantile the key has enough samples for and extrapolated at the tail's local
  slope. It bounds false alerts per normal file whatever the family (``benchmarks/lines.md``), but it trusts the
  history it learned: what was there from the start is normal to it. The store keeps that history clean
  (``BaselineConfig``).

Both are pure functions of quantiles, so both drivers compute the same lines.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from stagewatch.core.sketch import LEVEL_ALPHA

if TYPE_CHECKING:
    from stagewatch.core.baselines import BaselineConfig

__all__ = ["BODY_PS", "DEFAULT_LINE", "FLOOR_MS", "LINE_RULES", "TAIL_PS", "body_line", "level_moved", "tail_line"]

LINE_RULES = ("body", "tail")
#: The rule a user gets who names none (``docs/detection.md``, "Which line").
DEFAULT_LINE = "tail"
FLOOR_MS = 1.0  # below a millisecond, log spreads are clock resolution, not behaviour

# Distance from the first quartile to the median of a standard normal: turns it into a sigma.
_HALF_IQR_TO_SIGMA = 0.6744898

#: Quantiles the body rule reads: the quartiles, and the 70th percentile (1 - the anomalous share it allows).
BODY_PS = (0.25, 0.5, 0.7, 0.75)

#: Quantiles the tail rule reads, and the standard normal's quantile at each: the tail's slope is measured in
#: log-duration per unit of z, which a lognormal stage keeps constant.
TAIL_PS = (0.25, 0.5, 0.75, 0.9, 0.97, 0.99, 0.997, 0.999)
_PS = np.array(TAIL_PS)
_Z = np.array([NormalDist().inv_cdf(p) for p in TAIL_PS])
_Z_TARGET = NormalDist().inv_cdf(0.999)
# How far a young tenant's spread may widen its stage's reach that it borrows (``_fitted_prior``), less what its
# few samples make that ratio wander by (as such, it widened young customers' end-to-end lines on the simulated days
# by a few percent, and 15 slow files of 2,962 went unflagged).
_MAX_FIT, _FIT_NOISE = 8.0, 0.25
# A tenant's line reading below its ``_READS_OWN`` quantile is at most ``_MAX_OVER`` x its stage's so fitted, and
# that fit at most ``_OWN_FIT`` x the larger of its own line and its stage's as borrowed.
_READS_OWN, _MAX_OVER, _OWN_FIT = 0.99, 2.0, 8.0
# A key reading no higher than its 90th percentile (``_P90``), whose slope is over ``_GAP`` x the pair's above and
# the body's, goes on at the pair's above.
_P90, _GAP = TAIL_PS.index(0.9), 1.5
# Log-duration per unit of z over which a pair is a gap, not a tail: Pareto's tail rises 2.86 / alpha between the
# 99th and 99.7th percentiles, under 2 for alpha over 1.43 (and it steepens above, which no gap does).
_STEEP = 2.0


def body_line(
    n: np.ndarray, q: np.ndarray, prior_spread: np.ndarray, cfg: BaselineConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(spread, threshold) of each row from its quantiles at ``BODY_PS`` (``q`` unfloored). ``prior_spread`` is
    NaN for a stage-wide key and the stage-wide key's spread for a tenant's key (a young tenant borrows it)."""
    q25, q50, q_upper, q75 = (np.maximum(q[:, j], FLOOR_MS) for j in range(4))
    spread = (np.log(q50) - np.log(q25)) / _HALF_IQR_TO_SIGMA
    # The lower half sits in one bin: durations logged in whole milliseconds (a 2 ms call is 2 ms a quarter
    # of the time and half of the time). Its spread is not measurable there; the third quartile's is, and
    # stays clear of anomalies while they are under a quarter of the samples (q90 did not: an anomaly type
    # slowing 10 % of requests sat right on it).
    spread = np.where(q[:, 0] == q[:, 1], (np.log(q75) - np.log(q50)) / _HALF_IQR_TO_SIGMA, spread)
    # A young tenant's quartiles are noisy (with 40 samples the spread came out at half its true value and
    # the line at 2x the median); it borrows the stage-wide spread, as much as ``prior_n`` samples.
    has_prior = ~np.isnan(prior_spread)
    prior = np.where(has_prior, prior_spread, 0.0)
    spread = np.where(has_prior, (n * spread + cfg.prior_n * prior) / (n + cfg.prior_n), spread)
    weight = np.where(has_prior, n + cfg.prior_n, n)
    # A quartile estimated from few samples is noisy (relative error ~1/sqrt(n)); widen the line accordingly
    # so that a young baseline errs towards silence rather than towards false alarms.
    spread = spread * (1.0 + 2.0 / np.sqrt(np.maximum(weight, 1.0)))
    # Never below min_ratio x the 70th percentile: a stage's own history cannot be more than 30 % anomalous;
    # a second mode that common (a cache miss, another code path) is its normal, not an incident. And never
    # within min_excess_ms of the median.
    threshold = np.maximum.reduce(
        [q50 * np.exp(cfg.k * spread), q_upper * cfg.min_ratio, q[:, 1] + cfg.min_excess_ms]
    )
    return spread, threshold


def tail_line(
    n: np.ndarray, q: np.ndarray, prior_reach: np.ndarray, cfg: BaselineConfig, prior_q: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(reach, threshold) of each row from its quantiles at ``TAIL_PS`` (``q`` unfloored); ``reach`` is the log
    of the line over the median, which a young tenant borrows from its stage (``prior_reach``, NaN if none), fitted
    to the tenant's own spread by the stage's quantiles at ``TAIL_PS`` (``prior_q``, NaN rows if none).

    The estimate starts at the highest quantile the key has enough samples to read (at least
    ``cfg.tail_support`` of them above it) and goes on to p99.9 at the local slope of log-duration against the
    normal quantile there: exact for a lognormal stage, above the truth for lighter tails (gamma), and read
    where the upper mode of a two-mode stage lives once there are enough samples to see it (before, not across
    the gap below it). The fewer samples above the quantile it starts from, the further the estimate has to go
    and the wider the line is made: a young baseline errs towards silence.
    """
    q = np.maximum(q, FLOOR_MS)
    logs = np.log(q)
    support = n[:, None] * (1.0 - _PS[None, :]) >= cfg.tail_support
    # The highest readable quantile (at least the median: below twenty samples, the median and the quartile).
    top = np.maximum(np.where(support, np.arange(len(TAIL_PS))[None, :], 0).max(axis=1), 1)
    rows = np.arange(len(n))
    slopes = np.diff(logs, axis=1) / np.diff(_Z)[None, :]  # column j: between TAIL_PS[j] and TAIL_PS[j + 1]
    upper = slopes[rows, top - 1]
    # Whole-millisecond durations can put both quantiles in one bin: then the pair below tells the slope.
    slope = np.where(upper > 0, upper, slopes[rows, np.maximum(top - 2, 0)])
    # Read up to the 90th percentile, the slope comes from the third quartile, which can sit in the gap below a
    # two-mode stage's upper mode: extrapolated at it, a young key's line came out at 14x its p99.9 in the median,
    # and a 2.7x slowdown went unflagged (zoo 20004, held out: 15 of 19 clearly slow files). The slope between the
    # 90th and 97th percentiles (below them, the pair from the highest readable quantile up) is read within the
    # upper mode (a key reading p90 has at least three samples above p97); where the one below is far steeper than
    # it and than the body's (the first quartile to the median: a wide stage of one mode read from a hundred
    # samples shows such a pair by chance), it is the gap. Not higher up: there a slope that steepens is a heavy
    # tail, and read at the pair above, mature customer keys of zoo 10011, 10017 and 20019 paged at 0.8-0.95x
    # their p99.9 (10011: 2 -> 39 false alerts).
    above = slopes[rows, np.minimum(top, _P90)]
    gap = (top <= _P90) & (above > 0) & (slope > _GAP * above) & (slope > _GAP * slopes[:, 0])
    slope = np.where(gap, above, slope)
    # At any quantile, a slope steeper than a heavy tail's (``_STEEP``) and far steeper than both the pair above and
    # the body's is the gap below a narrow upper mode (a cache miss: 9 % of a 3 ms call's calls at 85 ms);
    # extrapolated at it, such lines came out at up to 67,000x their p99.9 (``tests/core/test_young_lines.py``), and
    # at 312,145,453 ms for an 87 ms call on DeLag's E-Shopper 011. The mode's width is the larger of those two.
    beyond = slopes[rows, np.minimum(top, len(TAIL_PS) - 2)]
    width = np.maximum(beyond, slopes[:, 0])
    slope = np.where((slope > _STEEP) & (slope > _GAP * width), width, slope)
    reach_z = _Z_TARGET - _Z[top]
    widen = 1.0 + cfg.young_widen * (1.0 + reach_z) / np.sqrt(np.maximum(n * (1.0 - _PS[top]), 1.0))
    reach = logs[rows, top] + slope * reach_z * widen + math.log(cfg.margin) - logs[:, 1]
    has_prior = ~np.isnan(prior_reach)
    prior = as_is = np.where(has_prior, prior_reach, 0.0)
    fitted = np.zeros(len(n), dtype=bool)
    if prior_q is not None:
        fit, fitted = _fitted_prior(prior, logs, top, prior_q, cfg)
        prior = np.where(has_prior, fit, prior)
    # A young tenant's reach is read from the few samples above its ``tail_from`` quantile (10 of 100), not from
    # all of them as the body rule's spread is: the stage's reach weighs ``prior_n`` of *those* (500 samples in
    # all at 0.9). Weighed as 50 samples, a two-mode stage's customer keys (zoo 10015, 10018: 100-300 samples)
    # swung between 0.5x and 27x the normal p99.9 within the hour, and paged at the low end. That weight only
    # widens the tenant's line; it narrows it as 50 samples: a stage's own line can be the low one (zoo 10011: a
    # whole-millisecond stage's at 0.81x its p99.9), and weighed as 500 it pulled its customers' down to 0.88x.
    prior_n = cfg.prior_n / (1.0 - cfg.tail_from)
    before = (n * reach + cfg.prior_n * prior) / (n + cfg.prior_n)
    blended = np.maximum(before, (n * reach + prior_n * prior) / (n + prior_n))
    # Nor does a tenant reading below its 99th percentile go far beyond its stage's line fitted to it: its reach
    # across the gap between a two-mode stage's modes put one of 110 samples at 12x its p99.9 (zoo 20024: its
    # stalled files were neither slow nor stalled), and others at 15-26x (``tests/core/test_lines.py``). Only where
    # the fit was read: a whole-millisecond stage's quantiles in one bin tell nothing of how much wider a customer
    # is, and capped at the stage's, a customer of 15 calls an interval and a spread of 1 paged on 10 % of them
    # (a review's case) -- a customer that small never reads its 99th percentile.
    # Nor is the fit taken far beyond the larger of the tenant's own line and its stage's as borrowed: read at a 90th
    # percentile inside an upper mode its stage lacks, a customer looked 6x as wide as its stage, and over twenty
    # seeds its line rose to 82,000x its p99.9 in its first two hours (its stall deadline months away); 118x now
    # (``tests/core/test_customer_shapes.py``). Not nearer: its own line, read at a lognormal slope, is the low one
    # for a heavy tail, and held to 2x it a Pareto customer (alpha 1.5-2) of a narrow stage was paged on up to 2.3x
    # as many of its calls (a review's case); held to 8x it alone, a few more (``benchmarks/heldout.md``).
    young = (_PS[top] < _READS_OWN) & fitted
    ceiling = np.minimum(prior, np.maximum(reach, as_is) + math.log(_OWN_FIT)) + math.log(_MAX_OVER)
    capped = np.where(young, np.minimum(blended, ceiling), blended)
    reach = np.where(has_prior, capped, reach)
    q50 = q[:, 1]
    # Never within min_excess_ms of the median: a 2 ms call taking 6 ms is not what anyone gets paged for.
    threshold = np.maximum(q50 * np.exp(reach), q50 + cfg.min_excess_ms)
    return reach, threshold


def _fitted_prior(
    prior: np.ndarray, logs: np.ndarray, top: np.ndarray, prior_q: np.ndarray, cfg: BaselineConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The stage's reach fitted to a tenant's spread, and whether the fit could be read: its distance from the
    median, beyond the margin, times how much farther from its median the tenant's highest readable quantile is
    than the stage's same quantile, less ``_FIT_NOISE``. A tenant slower by a factor keeps the stage's reach; a
    customer twice as spread (a lognormal twice as wide) gets 1.75x its reach (borrowed as is, a customer wider
    than its stage was put at 0.19x its p99.9: a review's case).
    """
    rows = np.arange(len(top))
    stage_logs = np.log(np.maximum(np.nan_to_num(prior_q, nan=FLOOR_MS), FLOOR_MS))
    own = logs[rows, top] - logs[:, 1]
    stage = stage_logs[rows, top] - stage_logs[:, 1]
    # Whole-millisecond quantiles can sit in one bin: a ratio of nothing tells nothing, the stage's reach stands.
    read = (own > 0) & (stage > 0) & ~np.isnan(prior_q[:, 1])
    ratio = np.where(read, own / np.maximum(stage, 1e-12), 1.0)
    margin = math.log(cfg.margin)
    return (prior - margin) * np.clip(ratio - _FIT_NOISE, 1.0, _MAX_FIT) + margin, read


# How far a first quartile, a median and a third quartile of n values stray, in sigma / sqrt(n) (``level_moved``).
_LEVEL_ERROR = np.array([1.3626, 1.2533, 1.3626])


def level_moved(levels: np.ndarray, q: np.ndarray, seen: np.ndarray, cfg: BaselineConfig) -> np.ndarray:
    """The log ratio (0 or less) a tail line moves down by to follow its key's recent levels (``levels``, rows x 3:
    ``HistogramBank.level25``, ``level`` and ``level75``, the logs of its calm intervals' quartiles and medians,
    followed ``LEVEL_ALPHA`` of the way an interval; NaN where unknown or gone stale) under its histogram's (``q``:
    its quantiles at ``TAIL_PS``): by the smallest of the three moves, each less twice what its level wanders by on
    its own, at most ``cfg.shift_ratio``; and only where the largest is at most twice the smallest. ``seen``: the
    key's decayed count of values (an interval brings it about ``1 - cfg.decay_per_interval`` of that).

    Why: the histogram remembers hours (a 3 h half-life), and the load's daily curve moves a stage within them. Past
    the busy hours, its tail is the busy hours' (zoo 10002: a gamma stage's customer lines at 1.79x the p99.9 of the
    hour in the median, and 697 files of an 8.9x slowdown under them). A load moves the whole body alike; what moves
    one quartile far more than another is not a load (a review's cases: two modes near half and half, whose median
    flips between them, and 40 % of calls failing fast, took such lines to 1.0-1.1x the p99.9). Down only: a mild
    slowdown that the store does not hold out (1.3-1.5x, of several stages at once) lifts the levels too, and a line
    that followed it up missed 6 of such files in zoo 10017, 20008 and 30009.
    """
    q = np.maximum(q[:, :3], FLOOR_MS)
    sigma = (np.log(q[:, 2]) - np.log(q[:, 0])) / (2 * _HALF_IQR_TO_SIGMA)
    # A median of n values is off by ~1.25 sigma / sqrt(n), a quartile by ~1.36; followed ``LEVEL_ALPHA`` (a) of the
    # way, a level keeps a / (2 - a) of that variance. And a duration logged in whole milliseconds is off by one.
    per_interval = seen * (1.0 - cfg.decay_per_interval)
    wander = np.sqrt(LEVEL_ALPHA / (2 - LEVEL_ALPHA)) * sigma / np.sqrt(np.maximum(per_interval, 1.0))
    noise = np.hypot(_LEVEL_ERROR[None, :] * wander[:, None], FLOOR_MS / q)
    moves = levels - np.log(q) + 2 * noise
    least, most_moved = moves.max(axis=1), moves.min(axis=1)  # NaN where any is: not a load
    alike = (least < 0) & (most_moved >= 2 * least)
    return np.clip(np.where(alike, least, 0.0), -math.log(cfg.shift_ratio), 0.0)
