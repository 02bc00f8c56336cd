"""A mature tail key's line (thousands of samples, reading its p99.9) on a two-mode stage whose upper mode its body
line cuts: what is over the body line and under the alert line is that mode, and it is learned."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from stagewatch.core.baselines import BaselineStore
from stagewatch.core.judged_by import lookup
from tests.core.test_customer_shapes import pareto_customer_paged
from tests.core.test_young_lines import TAIL, Draw

pytestmark = pytest.mark.unit


def _two_mode(factor: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(0, 0.2, n) * np.where(rng.random(n) < 0.25, factor, 1.0) * 1000

    return draw


def _truth(factor: float) -> np.ndarray:
    """The two-mode stage's normal distribution: 400,000 sorted draws."""
    return np.sort(_two_mode(factor)(np.random.default_rng(999), 400_000))


def _two_mode_lines(factor: float, seed: int, calls: int, intervals: int, judged_from: int) -> np.ndarray:
    """A key of a two-mode stage (a quarter of its ``calls`` an interval ``factor`` x slower): its lines from interval
    ``judged_from`` on."""
    return _lines(_two_mode(factor), seed, calls, intervals, judged_from)


def _lines(draw: Draw, seed: int, calls: int, intervals: int, judged_from: int) -> np.ndarray:
    """A key of ``calls`` calls an interval drawn by ``draw``: its lines from interval ``judged_from`` on."""
    rng = np.random.default_rng(seed)
    store = BaselineStore(TAIL)
    lines = []
    for k in range(intervals):
        store.advance(k * store.cfg.interval_us)
        snap, _ = lookup(store, "call", None)
        if k >= judged_from and snap is not None:
            lines.append(snap.threshold_ms)
        store.learning("call", None).extend(draw(rng, calls).tolist())
    return np.array(lines)


def _paged(truth: np.ndarray, lines: np.ndarray) -> float:
    """The mean share of normal calls over the lines."""
    return float((1 - np.searchsorted(truth, lines, side="right") / len(truth)).mean())


@pytest.mark.parametrize("factor", [2.2, 2.5, 2.85])
def test_a_two_mode_stage_line_stays_over_its_upper_mode(factor: float) -> None:
    # A quarter of the calls 2.2-2.85x slower: the body line (about 3x the median) cuts that mode, so the key flags
    # 3-15 % of what it sees -- under ``mode_share``, a slow share, not a mode. What it flagged was held out of
    # learning, the tail was learned without the top of the mode, and the line sank under the p99.9 and stayed: at
    # 2.5x, 0.86x the p99.9 and 0.66 % of normal calls paged in its second day (zoo 30022: 197 false alerts at
    # 2.85x). A key of a day's history learns a calm interval up to its alert line when it flags what it always has.
    truth = _truth(factor)
    p999 = float(np.quantile(truth, 0.999))
    for seed in range(2):
        # a day and a half of five-minute intervals, 300 calls each, judged in the second day
        lines = _two_mode_lines(factor, seed, 300, 432, 288)
        paged = _paged(truth, lines)
        assert paged <= 1 / 2000, (seed, paged, min(lines) / p999)
        assert min(lines) >= 1.1 * p999, (seed, min(lines) / p999)


@pytest.mark.parametrize("calls", [60, 300])
def test_a_young_two_mode_keys_line_stays_over_its_upper_mode(calls: int) -> None:
    # The same stage (upper mode at 2.5x) in a key's first eight hours, before it has a day's long run: it flags that
    # mode from its first judged values, and learns it up to its line once it has ``hold_n`` samples. Held out until
    # half a day in, its line sank to 0.90x the p99.9 within hours and paged 0.10-0.25 % of normal calls (zoo 30007:
    # 20 false alerts in its first three hours, 19 of them on such a stage's customers).
    truth = _truth(2.5)
    for seed in range(3):
        paged = _paged(truth, _two_mode_lines(2.5, seed, calls, 96, 12))
        assert paged <= 1 / 2000, (seed, paged)


def _cache_miss(share: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.where(rng.random(n) < share, rng.lognormal(0, 0.02, n) * 100, rng.lognormal(0, 0.1, n) * 10)

    return draw


@pytest.mark.parametrize(("share", "hours", "calls"), [(0.05, 3, 100), (0.01, 24, 100), (0.05, 2, 300), (0.03, 8, 300)])
def test_a_narrow_upper_mode_a_key_always_had_is_learned_however_small(share: float, hours: int, calls: int) -> None:
    # A 10 ms call with ``share`` of its calls at 100 ms from its first (a cache miss), ``calls`` calls an interval.
    # The line, read below that mode while the key is young, flags it; under ``mode_share`` it was a slow share, held
    # out of learning for good, and the key paged 5 % or 1 % of its normal calls for days (a review's case). What a key
    # pages steadily over its alert line (``STEADY_MIN``), no more than usual, is learned over it too: the line rises
    # over such a mode about 1.5 h in at 5 %, 20-23 h in at 1 % (its long run follows it; a 1 % share that comes later
    # too). At 300 calls the key has ``establish_n`` values when its line falls under the mode, took its first
    # interval paging it for a disturbed one, and was in a run from then on: nothing learned, its count decayed to 0,
    # 5 % or 3 % paged for days. Not when its own histogram holds as much over its line (``OWN_RATIO``): over a 5 %
    # mode within 45 minutes; a 3 % one is learned as session 20's calm intervals are, by 7 h.
    draw = _cache_miss(share)
    truth = np.sort(draw(np.random.default_rng(999), 400_000))
    for seed in range(2):
        paged = _paged(truth, _lines(draw, seed, calls, 12 * (hours + 9), 12 * hours))
        assert paged <= 1 / 2000, (seed, paged)


def test_a_heavy_tailed_customers_line_does_not_sink_under_its_tail_once_mature() -> None:
    # A Pareto customer (alpha 1.5, 60 calls an interval) of a narrow stage: its body line sits far under its tail,
    # so most of that tail was held out of learning as a slow share, and its line went on down as it matured: 2.9 %
    # of its normal calls paged in the twelve hours after its first day (0.36 % over its first three). Learned up
    # to its line: 0.22 %. What is over the line is still held out; that it pages at all is a limit.
    paged, judged = pareto_customer_paged(10, 432, judged_from=288)
    assert paged / judged <= 0.006, paged / judged  # 0.0022 now (0.029 before)


def _slow_share_found(calls: int, start: int, slow: Callable[[np.random.Generator], np.ndarray],
                      median_ms: float = 1000.0, lasting: int = 72) -> float:
    """The share of a slow share's clearly slow calls over the line (five seeds): a key of one mode and ``calls`` calls
    an interval and a median of ``median_ms``, from interval ``start`` on for ``lasting`` intervals (six hours) the
    calls ``slow(rng)`` marks 3x slower."""
    truth = np.sort(np.random.default_rng(999).lognormal(0, 0.2, 400_000) * median_ms)
    clear = 1.5 * float(np.quantile(truth, 0.999))
    found, slowed = 0, 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        store = BaselineStore(TAIL)
        for k in range(start + lasting):
            store.advance(k * store.cfg.interval_us)
            values = rng.lognormal(0, 0.2, calls) * median_ms
            if k >= start:
                marked = slow(rng)
                values[marked] *= 3.0
                snap, _ = lookup(store, "call", None)
                assert snap is not None
                clearly = values[marked][values[marked] > clear]
                found += int((clearly > snap.threshold_ms).sum())
                slowed += len(clearly)
            store.learning("call", None).extend(values.tolist())
    return found / slowed


@pytest.mark.parametrize(("hours", "slowed", "median_ms"),
                         [(2, 3, 1000), (24, 3, 1000), (2, 12, 1000), (24, 12, 1000), (24, 9, 1000), (24, 12, 1012),
                          (24, 12, 100)])
def test_a_slow_share_that_comes_later_is_not_learned_as_a_mode(hours: int, slowed: int, median_ms: float) -> None:
    # What a key has flagged all along is learned up to its line; a slow share that comes later is not: ``slowed``
    # of a key's 300 calls an interval (1-4 %) 3x slower for six hours, on a stage of one mode, ``hours`` after its
    # first call. Learned at once, the line rose over it within hours and half of its clearly slow calls went
    # unflagged (reviews' cases: 0.50 flagged after a day; measured against the key's share over the last day, 0.99
    # after a day but 0.61 two hours in, its day not yet had). Now as when all of it was held out (0.99).
    # From 3 %, an interval flags three times what the key usually does with its median where it was -- the way the
    # load's daily curve does -- and was learned as that curve is, up to the alert line: 0.16-0.61 flagged (a review's
    # case). Not learned at all when a quarter of what it flags is over the alert line too: 1.00. Only not learned
    # over the body line then (a first version): 1.00 at a median of 1,000 ms, 0.34 at 1,012 or 100 ms, where the
    # two lines fall in one bin and the slow calls just under them were learned.
    found = _slow_share_found(300, 12 * hours, lambda rng: np.arange(slowed), median_ms)
    assert found >= 0.85, found


@pytest.mark.parametrize("hours", [2, 6])
def test_a_long_slow_share_on_a_young_key_is_neither_its_shape_nor_adopted(hours: int) -> None:
    # A key of a few hours, 3 % of its calls 3x slower for twelve hours from its second or sixth hour: its histogram
    # holds nothing over its line, so the share is no shape of its own (``OWN_RATIO``), and flagging under
    # ``mode_share`` it is not adopted. A first fix for the 5 % mode above adopted a run of six hours that showed the
    # key as much as its long run held, whatever it flagged: 0.89 and 0.57 of the clearly slow calls flagged (1.00).
    found = _slow_share_found(300, 12 * hours, lambda rng: np.arange(9), lasting=144)
    assert found >= 0.95, found


def test_a_slow_share_that_comes_while_a_key_is_born_is_not_learned_as_a_mode() -> None:
    # A key of 60 calls an interval takes about an hour and a half to be judged on its first thousand values; a slow
    # share (3 % of its calls 3x slower) that comes half an hour in is in some of them. The least share among their
    # parts was then 0.6 %, and learned up to 3x that, intervals flagging one slow call of 60 lifted the line over
    # them: 0.89 of the clearly slow calls flagged. A share that small is not read as a mode (``BIRTH_MIN``): 0.99.
    found = _slow_share_found(60, 6, lambda rng: rng.random(60) < 0.03)
    assert found >= 0.95, found
