"""A customer shaped unlike its stage -- an upper mode the stage lacks, a heavy tail: its young line, its stage's
reach fitted to its spread, is taken neither far beyond what its own tail says nor down to it."""

from __future__ import annotations

import numpy as np
import pytest

from stagewatch.core.baselines import BaselineStore
from stagewatch.core.judged_by import lookup
from tests.core.test_young_lines import TAIL, _two_mode  # a quarter of the calls 4.4x slower

pytestmark = pytest.mark.unit


def _one_mode(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.lognormal(0, 0.2, n) * 1000


def _pareto(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.pareto(1.5, n) + 1) * 1000


def pareto_customer_paged(seeds: int, intervals: int, judged_from: int = 0) -> tuple[float, int]:
    """A Pareto customer (alpha 1.5, 60 calls an interval) beside four narrow customers of 100 (lognormal sigma
    0.1): its normal calls expected over its line from interval ``judged_from`` on, summed over ``seeds``, and how
    many of its calls were judged then."""
    truth = np.sort(_pareto(np.random.default_rng(999), 400_000))
    paged, judged = 0.0, 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        store = BaselineStore(TAIL)
        for k in range(intervals):
            store.advance(k * store.cfg.interval_us)
            snap, _ = lookup(store, "call", "t")
            if snap is not None and k >= judged_from:
                paged += 60 * (1 - np.searchsorted(truth, snap.threshold_ms, side="right") / len(truth))
                judged += 60
            store.learning("call", "t").extend(_pareto(rng, 60).tolist())
            for j in range(4):
                store.learning("call", f"o{j}").extend((rng.lognormal(0, 0.1, 100) * 1000).tolist())
    return paged, judged


def _customer(seed: int, mine: int, intervals: int) -> list[tuple[float, bool] | None]:
    """Each interval: how the two-mode customer (``mine`` calls an interval, beside four one-mode customers of a
    hundred) is judged -- its line over its true p99.9, and whether by its own key -- or None when it is not."""
    p999 = float(np.quantile(_two_mode(np.random.default_rng(999), 400_000), 0.999))
    rng = np.random.default_rng(seed)
    store = BaselineStore(TAIL)
    out: list[tuple[float, bool] | None] = []
    for k in range(intervals):
        store.advance(k * store.cfg.interval_us)
        snap, own = lookup(store, "call", "t")
        out.append(None if snap is None else (snap.threshold_ms / p999, own))
        store.learning("call", "t").extend(_two_mode(rng, mine).tolist())
        for j in range(4):
            store.learning("call", f"o{j}").extend(_one_mode(rng, 100).tolist())
    return out


def test_a_young_customers_line_is_not_fitted_far_beyond_its_own_tail() -> None:
    # Its 90th percentile sits in its upper mode, its stage's in the one mode: read there, the customer looked 6x
    # wider than its stage, and the stage's reach so fitted put its young line, at its highest in its first two
    # hours, at 82,000x its p99.9 at worst over twenty seeds (its stall deadline: months). The fit goes no further
    # than 8x the larger of its own line and its stage's as borrowed: 118x at worst; 17x in the median, as before.
    worst = []
    for seed in range(20):
        ratios = [j[0] for j in _customer(seed, 40, 24) if j is not None and j[1]]
        assert ratios, seed
        worst.append(max(ratios))
    assert max(worst) < 200, sorted(worst)[-3:]


def test_a_heavy_tailed_customers_line_is_not_held_to_its_own_young_reading() -> None:
    # A Pareto customer (alpha 1.5) of a narrow stage: its own line, read at a lognormal slope from its 90th
    # percentile, is the low one, and the fit held to it put the line under its p99.9 -- what is over the line is
    # not learned, and it went on down: 16.5 of its normal calls paged per seed over three hours, 7.0 with the fit
    # unbounded, 7.7 held to 8x (a review's case).
    paged, _ = pareto_customer_paged(20, 36)
    assert paged / 20 < 10, paged / 20


def _small_beside_others(small: float, sigma: float, intervals: int = 96, seed: int = 21
                         ) -> list[tuple[float, object, bool, float]]:
    """A customer of one file an interval (``small`` x the others' median, lognormal ``sigma``) beside others making
    sixty calls an interval (lognormal 0.4): each interval once the stage's key is warm, (its key's count, the
    snapshot judging it, whether as its own, the stage-wide line)."""
    rng = np.random.default_rng(seed)
    store = BaselineStore(TAIL)
    out: list[tuple[float, object, bool, float]] = []
    for k in range(intervals):
        store.advance(k * store.cfg.interval_us)
        store.learning("call", "small").extend((rng.lognormal(0, sigma, 1) * 100 * small).tolist())
        store.learning("call", None).extend((rng.lognormal(0, 0.4, 60) * 100).tolist())
        store.advance((k + 1) * store.cfg.interval_us)
        snap, own = lookup(store, "call", "small")
        stage, _ = lookup(store, "call", None)
        mine = store.snaps.get(("call", "small"))
        if stage is None:
            continue
        out.append((0.0 if mine is None else mine.n, snap, own, stage.threshold_ms))
    return out


def test_a_small_customer_like_its_stage_is_judged_by_the_stages_line_as_its_own() -> None:
    # One file an interval: in its first eight hours it holds fewer than the 100 samples its tail key judges from
    # (at three hours' half-life it never held more than about 52). From its 30th its verdicts are its own (they
    # count towards its incident, ``bar.Bar.tenant_met``), by the line a cold customer is judged by -- the stage's,
    # moved by its median when it is slower -- with its own median and count: its young line agrees with that line.
    from stagewatch.core.verdicts import deferred_snapshot

    for slower in (1.0, 4.0):
        course = _small_beside_others(slower, 0.4)
        assert len(course) > 80 and all(n < 100 for n, *_ in course)
        for n, snap, own, stage_line in course:
            assert snap is not None
            assert own == (n >= 30), (slower, n, own)
            if own:
                assert snap.n == n and snap.median_ms == pytest.approx(100 * slower, rel=0.5)  # type: ignore[attr-defined]
                line = snap.threshold_ms  # type: ignore[attr-defined]
                assert line == stage_line if slower == 1.0 else 2.5 * stage_line < line <= 4 * stage_line, slower
    # A measurement judged late (its stage was cold then) is still judged only by a customer's warm key of its own.
    rng = np.random.default_rng(3)
    store = BaselineStore(TAIL)
    for k in range(60):
        store.advance(k * store.cfg.interval_us)
        store.learning("call", "small").extend((rng.lognormal(0, 0.4, 1) * 100).tolist())
        store.learning("call", None).extend((rng.lognormal(0, 0.4, 60) * 100).tolist())
        store.advance((k + 1) * store.cfg.interval_us)
    assert lookup(store, "call", "small")[1]
    assert deferred_snapshot(store.snaps, store.step, "call", "small", store.cfg.chronic_n) == (None, False)


def test_a_small_customer_much_wider_than_its_stage_keeps_the_stages_verdicts() -> None:
    # Its young line is over 1.5x the stage's: what the stage's line flags of it may be its normal (the stage's line
    # pages 2.7 % of a lognormal of sigma 1.0 where the stage's is 0.4), so those verdicts stay the stage's and open
    # no incident of its own. Read from 30-100 samples, its young line now and then comes out narrow: over twenty
    # seeds, 5.1 % of the intervals it is judged in count as its own (8.4 % forgetting at three hours' half-life, when
    # seed 21 alone, this test's before, had none); half the seeds none.
    owns = []
    for seed in range(21, 41):
        judged = [own for n, _, own, _ in _small_beside_others(1.0, 1.0, seed=seed) if n >= 30]
        assert judged, seed
        owns.append(sum(judged) / len(judged))
    assert float(np.mean(owns)) <= 0.07 and float(np.median(owns)) == 0.0, owns


@pytest.mark.parametrize("line", ["tail", "body"])
@pytest.mark.parametrize("kept", [True, False])
def test_a_customer_gone_quiet_is_not_counted_on_the_samples_it_no_longer_holds(line: str, kept: bool) -> None:
    # Four files an interval for 20 intervals, then none while the others go on: its snapshot keeps the count it had
    # at its last fold, its decayed count falls under 30 -- within hours at three hours' half-life, within days as a
    # key under ``keep_n`` forgets (``core.forgetting``). From then on the stage's line judges it as the stage's (a
    # review's case: marked its own two hours on, its count long decayed). Under the body line a customer's key of
    # 30 is warm, and the stage's line never judges it as its own.
    from stagewatch.core.baselines import BaselineConfig

    rng = np.random.default_rng(4)
    cfg = BaselineConfig(line=line)
    store = BaselineStore(cfg if kept else BaselineConfig(line=line, longest_half_life_s=cfg.half_life_s))
    marked = []
    for k in range(140):
        store.advance(k * store.cfg.interval_us)
        if k < 20:
            store.learning("call", "quiet").extend((rng.lognormal(0, 0.4, 4) * 100).tolist())
        store.learning("call", None).extend((rng.lognormal(0, 0.4, 60) * 100).tolist())
        store.advance((k + 1) * store.cfg.interval_us)
        _, own = lookup(store, "call", "quiet")
        mine = store.snaps[("call", "quiet")] if k >= 19 else None
        if mine is not None and mine.warm_until < store.step and own:
            marked.append(k)
    if line == "body":
        assert marked == []
    else:  # judged by the stage's line as its own only while it still holds 30 (decayed)
        from stagewatch.core.forgetting import holds_until

        n20 = store.snaps[("call", "quiet")].n
        last = int(holds_until(np.array([n20]), 30, 20, store.cfg.decay_per_interval, store.cfg.keep)[0])
        assert marked and max(marked) <= last, (marked[-3:], last)
        assert (last < 139) != kept, last  # hours; days as a quiet key forgets
        assert kept == (max(marked) == 139)
