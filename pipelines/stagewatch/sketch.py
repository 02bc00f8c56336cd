"""A fixed-size, exponentially decayed quantile sketch over log-spaced bins.

Why not a library sketch (DDSketch, t-digest, KLL)? A rolling baseline must forget: yesterday's traffic must
weigh less than the last hour's. Those sketches only grow; decaying them means rebuilding. Log-spaced bins with
a relative width ``GAMMA`` give the same guarantee as DDSketch (every quantile within ±2 % of the true value),
and decay is one vector multiply. Memory is fixed: ``N_BINS`` float64 (~3 KiB) per sketch whatever the traffic.

Counts arrive as sparse ``{bin: count}`` dictionaries (one interval's learning) and are merged with
``add_counts``; merging is commutative, which lets a distributed driver combine partial counts in any order.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FLAGGED", "GAMMA", "MAX_MS", "MIN_MS", "N_BINS", "SEEN", "DecayedHistogram", "bin_of", "value_of"]

# Pseudo-bins in a counts dictionary: how many samples were seen, and how many of them were over the line
# (both at weight 1, whatever weight their value was learned with).
SEEN = -1
FLAGGED = -2

GAMMA = 1.04  # relative bin width: quantiles are exact to about ±2 %
MIN_MS = 0.1  # values below (including clamped zero gaps) share bin 0
MAX_MS = 30 * 24 * 3600 * 1000.0  # 30 days; longer values share the last bin
_LOG_GAMMA = math.log(GAMMA)
_INV_LOG_GAMMA = 1.0 / _LOG_GAMMA
_LOG_MIN = math.log(MIN_MS)
N_BINS = math.ceil((math.log(MAX_MS) - _LOG_MIN) * _INV_LOG_GAMMA) + 2
_LAST = N_BINS - 1
# Representative value of each bin: its geometric middle; bin 0 stands for "at most MIN_MS".
_VALUES = np.concatenate(([MIN_MS], MIN_MS * np.exp((np.arange(1, N_BINS) - 0.5) * _LOG_GAMMA)))


def bin_of(value_ms: float) -> int:
    """The bin of a duration in milliseconds."""
    if value_ms <= MIN_MS:
        return 0
    b = int((math.log(value_ms) - _LOG_MIN) * _INV_LOG_GAMMA) + 1
    return b if b < _LAST else _LAST


def value_of(b: int) -> float:
    return float(_VALUES[b])


class DecayedHistogram:
    """Weights per log bin, decayed by ``decay`` per elapsed step. Small and picklable."""

    __slots__ = ("flagged", "seen", "step", "weights")

    def __init__(self) -> None:
        self.weights = np.zeros(N_BINS, dtype=np.float64)
        self.step = 0  # the step the weights are decayed to
        self.seen = 0.0  # decayed count of samples
        self.flagged = 0.0  # decayed count of samples that were over the line when learned

    def decay_to(self, step: int, factor_per_step: float) -> None:
        if step > self.step:
            f = factor_per_step ** (step - self.step)
            self.weights *= f
            self.seen *= f
            self.flagged *= f
            self.step = step

    def add_counts(self, counts: dict[int, float]) -> None:
        w = self.weights
        for b, c in counts.items():
            if b >= 0:
                w[b] += c
            elif b == SEEN:
                self.seen += c
            else:
                self.flagged += c

    @property
    def flagged_share(self) -> float:
        return self.flagged / self.seen if self.seen > 0 else 0.0

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    def quantiles(self, qs: tuple[float, ...]) -> list[float]:
        """Values at the given quantiles (bin representatives); raises if empty."""
        cum = np.cumsum(self.weights)
        total = cum[-1]
        if total <= 0:
            raise ValueError("empty histogram")
        idx = np.searchsorted(cum, np.asarray(qs) * total, side="left")
        return [float(_VALUES[min(int(i), _LAST)]) for i in idx]

    def __getstate__(self) -> tuple[bytes, int, float, float]:
        return (self.weights.tobytes(), self.step, self.seen, self.flagged)

    def __setstate__(self, state: tuple[bytes, int, float, float]) -> None:
        self.weights = np.frombuffer(state[0], dtype=np.float64).copy()
        self.step, self.seen, self.flagged = state[1], state[2], state[3]
