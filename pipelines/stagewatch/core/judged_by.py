"""Which snapshot judges a file's value: its customer's own baseline when warm, else the stage-wide one -- moved
for a customer clearly slower than the stage, withheld for one whose normal is beyond the stage's line.

A tenant's key is used when warm, else the stage-wide key: one customer's chronically slow network gets its own
normal instead of alerting all day, and a slowdown of the stage still exceeds every tenant's own line. While a
tenant is cold but has ``chronic_n`` samples whose median is already above the stage-wide alert line, it is that
tenant's normal showing, not an incident: no verdict yet; a median ``SLOWER_TENANT`` x the stage's or more moves the
stage's line by as much for it (at most ``MAX_TENANT_MOVE`` x, never above its own young line). Under the tail line,
the verdicts of a cold customer's key of ``warmup_n`` samples or more whose own young line is at most
``AGREES_WITHIN`` x the line that judges it count as the customer's own (``_as_its_own``).
"""

from __future__ import annotations

from collections.abc import Mapping

from stagewatch.core.baselines import BaselineKey, BaselineStore, Snapshot
from stagewatch.core.lines import FLOOR_MS

__all__ = ["AGREES_WITHIN", "MAX_TENANT_MOVE", "SLOWER_TENANT", "judge", "lookup", "seen_n"]

#: A cold tenant whose median is this much above its stage's is judged by the stage's line moved by its median.
SLOWER_TENANT = 1.5
#: ... by at most this factor (a chronically slow network is a few times slower, not hundreds).
MAX_TENANT_MOVE = 4.0
#: A young customer's line at most this x the line judging it: what that line flags is slow for it too.
AGREES_WITHIN = 1.5


def judge(
    snaps: Mapping[BaselineKey, Snapshot], step: int, stage: str, tenant: str | None, chronic_n: float,
    base: str | None = None,
) -> tuple[Snapshot | None, bool]:
    """The snapshot that judges a value: the tenant's when warm, else the stage-wide one, else None.

    The flag says whether the tenant's own baseline was used. ``base``: for the baseline of a wait across skipped
    optional stages (``TraceRules.path_stage``), the stage's own -- whose key of the tenant tells a chronically
    slow customer while the path's has too few of its samples to (below).
    """
    own = snaps.get((stage, tenant)) if tenant is not None else None
    if own is not None and own.warm_until >= step:
        return own, True
    snap = snaps.get((stage, None))
    if snap is None or snap.warm_until < step:
        return None, False
    # How slow the customer is, read where it has the samples: a path's share of a small customer's files (its
    # key of the path: 3 samples) told nothing, and the path's stage-wide line judged a customer 2.9x slower than
    # the rest (zoo 20013, not one the zoo was tuned on: 96 false alerts, in the stage and at its end).
    # So read, it moves the path's line (below) and never withholds it: a customer slower by a fixed delay is slow
    # beyond the stage's line there, and not on a path 30x longer (a review's case: its files missed).
    mine: Snapshot | None = own
    theirs: Snapshot | None = snap
    proxy = False
    if base is not None and tenant is not None and (own is None or own.n < chronic_n):
        mine, theirs, proxy = snaps.get((base, tenant)), snaps.get((base, None)), True
    if mine is None or theirs is None or mine.n < chronic_n or theirs.warm_until < step:
        return snap, False
    if not proxy and mine.median_ms > theirs.threshold_ms:
        return None, False  # a cold tenant whose normal is beyond the stage's line: still warming up
    if mine.median_ms > SLOWER_TENANT * max(theirs.median_ms, FLOOR_MS):
        # A cold tenant clearly slower than its stage, not yet beyond the stage's line: the stage's line moved by
        # its median (judged by the stage's own, its normal paged: zoo 10001, 61 false alerts on one customer),
        # by at most MAX_TENANT_MOVE and never above its own young line: the stage's line already holds the
        # slower customers' tails (a stage whose median one fast customer set moved a newcomer's line 577x,
        # its stall deadline to hours). Its median decides, not its young line, which a few lines move (the
        # young line alone flipped a verdict two hours later in the hostile-line fuzz test).
        ratio = min(mine.median_ms / max(theirs.median_ms, FLOOR_MS), MAX_TENANT_MOVE)
        # Its young line; on a path's baseline, the stage's young line of it, moved as the path's line is.
        young = mine.threshold_ms if mine is own else mine.threshold_ms * snap.threshold_ms / theirs.threshold_ms
        snap = snap._replace(threshold_ms=max(snap.threshold_ms, min(snap.threshold_ms * ratio, young)))
    return _as_its_own(snap, own, step)


def _as_its_own(snap: Snapshot, own: Snapshot | None, step: int) -> tuple[Snapshot, bool]:
    """The stage's line ``snap`` judging a cold customer, as the customer's own verdicts -- its median and count in
    place of the stage's -- when, under the tail line, its own key holds ``warmup_n`` samples in interval ``step``
    (``Snapshot.young_until``: a silent key's count decays, its snapshot's does not) and its young line is no more
    than ``AGREES_WITHIN`` x that line; else as the stage's.

    Why: only a customer's own verdicts count towards its incident (``bar.Bar.tenant_met``: against everyone's line,
    a customer's normal can look slow), and under the tail line a key judges from 100 samples: a customer of a few
    files an hour has that many only after hours or days (``core.forgetting``), and the quickstart's customer whose
    uploads were 30x slow, 40 files in, opened no incident of its own. Its young line alone is no line to judge by:
    read from few samples it runs wide (judged by it, a mild slowdown's files went unflagged: zoo 30007, slow_stage
    F1 0.71 -> 0.50), and judged by
    the lower of the two, customers narrower than their stage below and as wide above were paged at 0.8x their
    p99.9 (a review's case). Where it is much higher -- a customer wider than its stage, or with a second mode --
    what the stage's line flags may be its normal, and stays the stage's (such a customer's normal files, 1-2 % of
    them flagged, would have opened its incident: a review's case). The verdicts are the stage's line's either way."""
    if own is not None and own.young_until >= step and own.threshold_ms <= AGREES_WITHIN * snap.threshold_ms:
        return snap._replace(median_ms=own.median_ms, n=own.n), True
    return snap, False


def lookup(
    store: BaselineStore, stage: str, tenant: str | None, base: str | None = None
) -> tuple[Snapshot | None, bool]:
    """``judge`` in the store's current interval."""
    return judge(store.snaps, store.step, stage, tenant, store.cfg.chronic_n, base)


def seen_n(snaps: Mapping[BaselineKey, Snapshot], stage: str) -> float:
    """How many samples (decayed) a stage's stage-wide baseline holds; 0 before its first fold."""
    snap = snaps.get((stage, None))
    return 0.0 if snap is None else snap.n
