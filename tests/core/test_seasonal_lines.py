"""A tail line follows its key's recent level down (``lines.level_moved``): the load's daily curve moves a stage
within the hours its histogram remembers, and past the busy hours that histogram's tail is the busy hours'."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.judged_by import lookup
from stagewatch.core.lines import TAIL_PS, level_moved
from stagewatch.core.sketch import LEVEL_ALPHA

pytestmark = pytest.mark.unit

TAIL = BaselineConfig(line="tail")
HOUR = 12  # intervals of five minutes


def _season(hour: float, amplitude: float) -> float:
    """The zoo's daily curve: quiet at 04:00, busiest at 16:00."""
    return 1 + amplitude * (1 - math.cos(2 * math.pi * (hour - 4.0) / 24)) / 2


def _day_lines(per_interval: int, amplitude: float) -> tuple[dict[int, list[float]], int]:
    """Two days of a gamma stage (shape 2, median 20 s) under a daily curve: each hour of the second day's line over
    that hour's true p99.9, and how many normal values (under that p99.9) the line flagged."""
    rng = np.random.default_rng(5)
    p999 = float(np.quantile(rng.gamma(2.0, 0.5, 2_000_000), 0.999)) * 20_000
    store = BaselineStore(TAIL)
    ratios: dict[int, list[float]] = {}
    false_alerts = 0
    for k in range(48 * HOUR):
        scale = _season(k / HOUR, amplitude)
        values = rng.gamma(2.0, 0.5, per_interval) * 20_000 * scale
        snap, _ = lookup(store, "call", None)
        if k >= 24 * HOUR and snap is not None:
            ratios.setdefault(k // HOUR - 24, []).append(snap.threshold_ms / (p999 * scale))
            false_alerts += int(((values > snap.threshold_ms) & (values < p999 * scale)).sum())
        store.advance(k * TAIL.interval_us)
        store.learning("call", None).extend(values.tolist())
        store.advance((k + 1) * TAIL.interval_us)
    return ratios, false_alerts


def test_a_tail_line_follows_the_daily_curve_down() -> None:
    # Past the busy hours (a curve of 1.2: 2.2x the load at 16:00 as at 04:00) the histogram's tail is theirs: the
    # line sat at 1.99-2.26x the hour's p99.9 from midnight to 06:00 (1.35x is what it is drawn at). Following the
    # level, 1.63-1.86x there; never under the hour's p99.9 as the load rises.
    ratios, false_alerts = _day_lines(600, 1.2)
    night = float(np.median([r for hour in range(7) for r in ratios[hour]]))
    assert night < 1.9, night
    assert min(min(r) for r in ratios.values()) > 1.1
    assert false_alerts == 0


def test_a_steady_key_keeps_its_line() -> None:
    # No curve: the level wanders within its own noise, and the line stays where the histogram puts it.
    ratios, false_alerts = _day_lines(600, 0.0)
    assert all(1.25 < r < 1.45 for hour in ratios.values() for r in hour)
    assert false_alerts == 0


def _quantiles(median: float, sigma: float) -> np.ndarray:
    z = np.array([-0.6744898, 0.0, 0.6744898] + [0.0] * (len(TAIL_PS) - 3))
    return (median * np.exp(sigma * z))[None, :]


def test_a_level_within_its_own_noise_moves_nothing() -> None:
    most = math.log(1.25)
    q = _quantiles(20_000.0, 0.6)
    # Twenty values an interval: their median wanders ~0.17 in log, the level two fifths of that; 0.1 is within it.
    assert level_moved(np.array([math.log(20_000.0) - 0.1]), q, np.array([20.0]), LEVEL_ALPHA, most)[0] == 0.0
    # Six hundred: 0.1 is past it, less twice that noise -- down, never up, and no farther than ``most``.
    below = level_moved(np.array([math.log(20_000.0) - 0.1]), q, np.array([600.0]), LEVEL_ALPHA, most)[0]
    assert -0.1 < below < -0.06
    assert level_moved(np.array([math.log(20_000.0) + 0.1]), q, np.array([600.0]), LEVEL_ALPHA, most)[0] == 0.0
    assert level_moved(np.array([math.log(20_000.0) - 1.0]), q, np.array([600.0]), LEVEL_ALPHA, most)[0] == -most
    # A 3 ms call logged in whole milliseconds: its median is off by up to a third on its own.
    fast = _quantiles(3.0, 0.3)
    assert level_moved(np.array([math.log(3.0) - 0.2]), fast, np.array([600.0]), LEVEL_ALPHA, most)[0] == 0.0
    # No level known yet: nothing.
    assert level_moved(np.array([np.nan]), q, np.array([600.0]), LEVEL_ALPHA, most)[0] == 0.0
