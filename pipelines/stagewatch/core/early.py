"""Early snapshots: a stage with no baseline yet judged from the first ticks it has its warm-up samples, not at the
end of its first interval.

A stage's first interval (a job's start, a new stage) has no snapshot to judge by: what it measures is
deferred (``verdicts.defers``). The interval is cut into ``TICKS`` ticks (30 s of a 5-minute interval). At
each of the first ``EARLY_TICKS`` tick boundaries the stage gets an *early snapshot*: what a fresh baseline
would fold from everything the stage measured before that moment (``early_snapshots``; only the stage's first
interval has no other history to fold into). A deferred measurement is judged at the first tick boundary
after it whose early snapshot can judge it -- its key warm, a customer's own key for a customer's file, as for
any deferred verdict -- as of that moment; the rest wait for the next interval's snapshots, as before. So the
first verdicts follow the data rate: a burst of a thousand files in four minutes has its warm-up samples
within the first tick, and is judged from 30 s on; a trickle is judged at the interval's end as before.

Only the first ticks: the streaming job emits a tick's early snapshots once its counts are in, a fold's grace
(half an interval) after the tick, and they must reach the judging step before its side input for the
interval is complete, at the interval's end: ``EARLY_TICKS`` ticks plus the grace stay inside the interval.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from stagewatch.core.baselines import BaselineConfig, BaselineKey, BaselineStore, Snapshot
from stagewatch.core.interval_counts import Counts, admitted_counts

__all__ = ["EARLY_TICKS", "TICKS", "EarlyKey", "EarlyView", "early_snapshots", "early_ticks_after", "tick_us"]

TICKS = 10  # ticks per baseline interval
EARLY_TICKS = 4  # tick boundaries with early snapshots: the 1st to the 4th (+ a grace of 5 ticks < 10)

EarlyKey = tuple[BaselineKey, int]  # (baseline key, the tick boundary it is as of, µs)


def tick_us(cfg: BaselineConfig) -> int:
    return cfg.interval_us // TICKS


def early_ticks_after(t_us: int, cfg: BaselineConfig) -> Iterator[int]:
    """The early tick boundaries after ``t_us`` within its interval, in order (none after the last one)."""
    tick = tick_us(cfg)
    start = t_us // cfg.interval_us * cfg.interval_us
    return iter(range((t_us // tick + 1) * tick, start + EARLY_TICKS * tick + 1, tick))


def early_snapshots(
    cfg: BaselineConfig, stage: str, step: int, counts: Counts, at_us: int
) -> dict[BaselineKey, Snapshot]:
    """What a fresh baseline of ``stage`` folds from ``counts`` (measured in interval ``step`` before tick boundary
    ``at_us``): each key's snapshot as of the next interval, as the stage's first fold would make it from these
    counts alone, but watched only until ``at_us`` (``BaselineConfig.watch_for``). The same tenants get keys of
    their own as in that fold (``BaselineStore.admit``)."""
    fresh = BaselineStore(cfg)
    fresh.cut_short_us = (step + 1) * cfg.interval_us - at_us
    fresh.fold_interval(step, admitted_counts(fresh, stage, counts))
    return fresh.snaps


class EarlyView(Mapping[BaselineKey, Snapshot]):
    """The snapshots a deferred measurement is judged by at tick boundary ``b``: the interval's, with every
    stage's early ones of ``b`` over them (a slow end to end names its stages by theirs). Read through, not
    copied: it is made for every measurement waiting, over a side input of thousands of keys."""

    def __init__(self, snaps: Mapping[Any, Snapshot], early: Mapping[Any, Snapshot], b: int) -> None:
        self._snaps, self._early, self._b = snaps, early, b

    def __getitem__(self, key: BaselineKey) -> Snapshot:
        found = self._early.get((key, self._b))
        return self._snaps[key] if found is None else found

    def __iter__(self) -> Iterator[BaselineKey]:  # (the judging reads keys, never iterates: kept simple)
        return iter({*(k for k in self._snaps if not _is_early(k)),
                     *(k[0] for k in self._early if _is_early(k) and k[1] == self._b)})

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _is_early(key: Any) -> bool:
    return isinstance(key[0], tuple)
