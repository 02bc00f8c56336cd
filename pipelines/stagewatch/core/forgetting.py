"""How fast a baseline forgets: the decay of a key's counts from one fold to the next, and how long they stay over a
count without new data -- one law for both, so that a snapshot's ``warm_until`` says what the next fold will do.

A key's counts halve every ``half_life_s`` down to ``keep_n``, and under it every ``longest_half_life_s`` (a week).
Why: the tail line judges from 100 samples, and at the three hours' half-life a key of under ~23 files an hour never
held them -- a stage that quiet made no slow verdict and set no stall deadline, ever (NAB's series, 12 values an
hour: score 0.0), and a customer that quiet was never known by its own files (its slow clock paged as slowness). So a
quiet key holds its last ``keep_n`` files however long they took to come (ten files an hour: fifteen hours' worth); a
busy key holds far more and forgets as it did. A key gone silent falls to ``keep_n`` at the half-life, then slowly:
a busy stage's line stays about five days, its stall deadlines too, and then it is cold.

The law is one of time alone -- how many intervals above ``keep_n``, how many under -- so a key folded every interval
and one folded once after a silence hold the same count (a key silent for a month is not judged by its old line).
"""

from __future__ import annotations

import numpy as np

__all__ = ["decay_factors", "holds_until"]


def decay_factors(weights: np.ndarray, rows: np.ndarray, gaps: np.ndarray, per_step: float,
                  keep: tuple[float, float] | None = None) -> np.ndarray:
    """What the counts of ``rows`` (of ``weights``) are multiplied by over ``gaps`` intervals: ``per_step`` an
    interval; with ``keep`` (a count and the slowest decay an interval), that slowest decay once under the count."""
    if keep is None:
        return per_step ** gaps
    count, slowest = keep
    n = weights[rows].sum(axis=1)
    above = _steps_above(n, count, per_step, gaps)
    return per_step ** above * slowest ** (gaps - above)


def holds_until(n: np.ndarray, count: float, step: int, per_step: float, keep: tuple[float, float]) -> np.ndarray:
    """The last interval from ``step`` in which counts ``n`` (of at least ``count``, at most ``keep``'s count) stay
    ``count`` or more, decaying as ``decay_factors`` does."""
    n = np.maximum(n, count)
    kept, slowest = keep
    above = _steps_above(n, kept, per_step, np.full(len(n), np.inf))
    return step + np.floor(above + np.log(count / np.minimum(n, kept)) / np.log(slowest))


def _steps_above(n: np.ndarray, count: float, per_step: float, gaps: np.ndarray) -> np.ndarray:
    """How many of ``gaps`` intervals counts ``n`` spend over ``count``, decaying ``per_step`` an interval."""
    over = np.log(np.maximum(n, count) / count) / -np.log(per_step)
    return np.minimum(over, gaps)
