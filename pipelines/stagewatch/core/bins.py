"""The sketch's log-spaced bins: which bin a duration falls in, and the value a bin stands for.

A bin is ``GAMMA`` wide relative to its value, so every quantile read from bin counts is within about ±2 % of the
true one (the guarantee DDSketch gives); the bins span ``MIN_MS`` to ``MAX_MS`` in ``N_BINS`` of them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "BIN_VALUES", "GAMMA", "LAST_BIN", "MAX_MS", "MIN_MS", "N_BINS", "bin_of", "bins_of", "quartiles_of", "value_of",
]

GAMMA = 1.04  # relative bin width: quantiles are exact to about ±2 %
MIN_MS = 0.1  # values below (including clamped zero gaps) share bin 0
MAX_MS = 30 * 24 * 3600 * 1000.0  # 30 days; longer values share the last bin
_LOG_GAMMA = math.log(GAMMA)
_INV_LOG_GAMMA = 1.0 / _LOG_GAMMA
_LOG_MIN = math.log(MIN_MS)
N_BINS = math.ceil((math.log(MAX_MS) - _LOG_MIN) * _INV_LOG_GAMMA) + 2
LAST_BIN = N_BINS - 1
# Representative value of each bin: its geometric middle; bin 0 stands for "at most MIN_MS".
BIN_VALUES = np.concatenate(([MIN_MS], MIN_MS * np.exp((np.arange(1, N_BINS) - 0.5) * _LOG_GAMMA)))


def bin_of(value_ms: float) -> int:
    """The bin of a duration in milliseconds."""
    if value_ms <= MIN_MS:
        return 0
    b = int((math.log(value_ms) - _LOG_MIN) * _INV_LOG_GAMMA) + 1
    return b if b < LAST_BIN else LAST_BIN


def bins_of(values: np.ndarray) -> np.ndarray:
    """``bin_of`` of each value, vectorised, bin for bin the same. numpy's log may differ from ``math.log`` in
    the last bit, which moves a value across a border only when it lies within a hair of one: those few are
    binned again by ``bin_of`` itself."""
    above = values > MIN_MS
    x = (np.log(np.where(above, values, MIN_MS)) - _LOG_MIN) * _INV_LOG_GAMMA
    bins = np.where(above, np.minimum(x.astype(np.int64) + 1, LAST_BIN), 0)
    hair = np.flatnonzero(above & (np.abs(x - np.rint(x)) < 1e-6))
    for i in hair.tolist():
        bins[i] = bin_of(float(values[i]))
    return bins


def value_of(b: int) -> float:
    return float(BIN_VALUES[b])


def quartiles_of(kk: np.ndarray, bb: np.ndarray, cc: np.ndarray, total: np.ndarray) -> np.ndarray:
    """The log of each row's quartiles (3 x rows) in one interval's counts (entry ``kk`` of row, bin ``bb``, count
    ``cc``; the lower value at a tie, as ``HistogramBank.quantiles``). A row with no counts gets its neighbour's,
    which its total of 0 keeps from being read."""
    if not len(cc):
        return np.zeros((3, len(total)))
    order = np.lexsort((bb, kk))
    cum = np.cumsum(cc[order])
    starts = np.searchsorted(kk[order], np.arange(len(total)))
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0)
    targets = before[None, :] + np.array([[0.25], [0.5], [0.75]]) * total[None, :]
    at = np.minimum(np.searchsorted(cum, targets), len(cum) - 1)
    return np.log(BIN_VALUES[bb[order][at]])
