"""A key's first minutes: the durations it has learned are those of the files that finished, and the slowest of
the files it saw enter are still in the stage. Under the tail line it judges once it has been watched for
``watch_for`` x its line, and from then on."""

from __future__ import annotations

import numpy as np
import pytest

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.bins import bin_of
from stagewatch.core.early import early_snapshots
from stagewatch.core.interval_counts import bin_counts
from stagewatch.core.judged_by import lookup
from stagewatch.core.sketch import HistogramBank

pytestmark = pytest.mark.unit

MEDIAN_MS, SIGMA = 60_000.0, 0.7  # a one-minute stage, wide (zoo 20020's: 58 s, 0.68)
RATE = 10
P999_MS = MEDIAN_MS * float(np.exp(3.0902 * SIGMA))


def _from_the_start(line: str, watch_for: float | None = None, seed: int = 7) -> list[tuple[float, float | None]]:
    """(minutes since the first file entered, the key's line over the true p99.9 or None while cold), each
    interval of the first two hours, for files entering at RATE a second from time 0 and learned as they finish."""
    rng = np.random.default_rng(seed)
    cfg = BaselineConfig(line=line) if watch_for is None else BaselineConfig(line=line, watch_for=watch_for)
    store = BaselineStore(cfg)
    interval_s = cfg.interval_s
    entered = np.sort(rng.uniform(0, 2 * 3600, RATE * 2 * 3600))
    done = entered + rng.lognormal(np.log(MEDIAN_MS / 1000), SIGMA, len(entered))
    out = []
    for k in range(2 * 3600 // interval_s):
        store.advance(k * store.cfg.interval_us)
        finished = (done >= k * interval_s) & (done < (k + 1) * interval_s)
        store.learning("stage", None).extend(((done - entered)[finished] * 1000).tolist())
        store.advance((k + 1) * store.cfg.interval_us)
        snap, _ = lookup(store, "stage", None)
        out.append(((k + 1) * interval_s / 60, None if snap is None else snap.threshold_ms / P999_MS))
    return out


@pytest.mark.parametrize("seed", [1, 4, 7, 10])
def test_a_tail_key_judges_once_it_has_watched_long_enough_to_have_seen_its_slow_files_finish(seed: int) -> None:
    lines = _from_the_start("tail", seed=seed)
    judged = [(minute, ratio) for minute, ratio in lines if ratio is not None]
    assert judged, "never judged"
    # Its line, from the first interval it judges: over the true p99.9, where no normal file pages.
    assert min(ratio for _, ratio in judged) >= 1.0, judged[:4]
    # And not an hour late: its p99.9 is 8.6 minutes, and twice its line is watched (20-25 minutes).
    assert judged[0][0] <= 25, judged[0]
    # And from then on.
    assert len(judged) == len(lines) - lines.index(judged[0]), lines
    # Judged from the first interval with enough samples, its line was read from the files that finished fast.
    unwatched = [ratio for _, ratio in _from_the_start("tail", watch_for=0.0, seed=seed) if ratio is not None]
    assert min(unwatched) < 0.95, min(unwatched)


def test_the_body_line_is_not_held_back_by_the_watch() -> None:
    # Drawn at about 2x the p99.9, it is over it from its first interval (1.43x here): the watch would only
    # have kept the stage blind, stalls included, for 35 minutes (a review).
    lines = _from_the_start("body")
    assert lines[0][1] is not None and min(r for _, r in lines if r is not None) >= 1.0, lines[:3]


def test_a_key_once_watched_long_enough_stays_so_though_its_line_rises() -> None:
    bank = HistogramBank()
    rows = bank.fold({"k": {bin_of(60_000.0): 100.0}}, 10, 0.98, np.array([1 << 30]), np.ones(1))
    minute = 60 * 1_000_000
    assert not bank.watched(rows, 10, np.array([10.0 * minute]), 5 * minute)[0]  # 5 minutes watched
    assert bank.watched(rows, 11, np.array([10.0 * minute]), 5 * minute)[0]  # 10
    assert bank.watched(rows, 11, np.array([60.0 * minute]), 5 * minute)[0]  # a line six times as high: still


def test_an_early_snapshot_counts_only_the_part_of_the_interval_before_its_tick() -> None:
    # A one-minute stage's first 2,000 values (a burst): at the interval's end (5 minutes watched) its tail key
    # has been watched long enough, 30 s into it not -- the slowest files that entered then are still in it.
    cfg = BaselineConfig(line="tail", watch_for=2.0)
    rng = np.random.default_rng(3)
    counts = bin_counts([(None, float(v)) for v in rng.lognormal(np.log(20_000.0), 0.2, 2_000)])
    step = 1_000
    start = step * cfg.interval_us
    at_end = early_snapshots(cfg, "b", step, counts, start + cfg.interval_us)
    at_tick = early_snapshots(cfg, "b", step, counts, start + cfg.interval_us // 10)
    assert at_end[("b", None)].warm_until >= step + 1
    assert at_tick[("b", None)].warm_until < step + 1
