"""Stage order: given (``--stages``, a config file) or inferred from the data.

Inference asks, for every pair of stages seen together in a trace, which one usually comes first, and ranks
stages by how many of the common ones (``PATH_FROM`` as many files as the most common stage) they usually precede
(a Copeland count, ties broken by mean position): a stage of a few stray lines neither wins nor loses a place. A
majority vote, so clock skew that swaps two adjacent stages in a minority of traces does not change the order. The
terminal stage is the last one that at least ``OPTIONAL_BELOW`` as many files reach as the most common stage.
Among the files that reached it, a stage fewer than ``OPTIONAL_BELOW`` of them have is optional (a trace that skips
it is not waiting for it); and so is one that more than one in ten of them skip (``REQUIRED_FROM``), counted among
those first seen before its place -- a file already in flight when the sample began lost the stages before its
first, which it did not skip -- that reached the end before half the sample's events are dated, so that a
service whose lines arrive late has half the sample to catch up in; when those are at least ``MIN_PAST`` files and
half the files that reached the end then (a few files starting at a made-up stage are not the evidence).

Why one in ten, not one in two: a stage that a fifth to a half of the files skip (a scan only some customers
need), taken for required, had every file that skipped it flagged as slow "still in" it and then stalled there
-- the pipeline zoo's optional stages skip 20-60 % of the files, and with the order inferred one of its
pipelines paged 47,898 times in three hours, 15 times with the order given. A required stage misses its line
where a log line was lost, or came later than half the sample's time (then it is taken for optional: give the
order).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

__all__ = ["INFER_SAMPLE", "MIN_PAST", "OPTIONAL_BELOW", "PATH_FROM", "REQUIRED_FROM", "StageOrder",
           "infer_from_events", "infer_stage_order"]

OPTIONAL_BELOW = 0.5  # of the files: fewer reach a candidate terminal stage, it is not the terminal one
REQUIRED_FROM = 0.9  # of the files first seen before a stage's place that reached the end: fewer have it, optional
PATH_FROM = 0.05  # ... at least this many have an inferred optional stage: the waits across it have their own baselines
MIN_PAST = 20  # files that REQUIRED_FROM is read from, at least (one missing of ten is not one in ten)
# Events the order is inferred from when none is given: the first this many of the input, in its order.
INFER_SAMPLE = 20_000


@dataclass(frozen=True)
class StageOrder:
    """The stages of the pipeline in order; the last non-optional stage is the terminal one."""

    stages: tuple[str, ...]
    optional: frozenset[str] = field(default_factory=frozenset)
    # The optional stages a wait across which has a baseline of its own (``TraceRules.skip_names``), None for all:
    # in an order the user gave, all; in one inferred from the data, those at least ``PATH_FROM`` of the files
    # take -- a stray line there adds an optional stage every file then skips, and would move every file's wait
    # after it onto a new, cold baseline (the hostile-line fuzz test: half the streaming job's verdicts changed).
    paths: frozenset[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a stage order needs at least one stage")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stage names repeat in {list(self.stages)}")
        unknown = self.optional - set(self.stages)
        if unknown:
            raise ValueError(f"optional stages {sorted(unknown)} are not in the stage list")
        if all(s in self.optional for s in self.stages):
            raise ValueError("at least one stage must be required")

    @classmethod
    def parse(cls, text: str) -> StageOrder:
        """``"a,b,c?"``: comma-separated names; a trailing ``?`` marks a stage optional."""
        names = [n.strip() for n in text.split(",")]
        if not text.strip() or any(not n.rstrip("?") for n in names):
            raise ValueError(f"--stages needs a comma-separated list of stage names with none empty, e.g. "
                             f"upload,register,done; got {text!r}")
        optional = frozenset(n[:-1] for n in names if n.endswith("?"))
        return cls(tuple(n.rstrip("?") for n in names), optional)

    @property
    def with_paths(self) -> frozenset[str]:
        """The optional stages whose skips have baselines of their own (``paths``, resolved)."""
        return self.optional if self.paths is None else self.paths

    @property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.stages)}

    @property
    def terminal(self) -> str:
        return next(s for s in reversed(self.stages) if s not in self.optional)

    def __str__(self) -> str:
        return ",".join(s + ("?" if s in self.optional else "") for s in self.stages)


def infer_from_events(events: Iterable[Sequence[Any]], limit: int = INFER_SAMPLE) -> StageOrder:
    """The order inferred from the first ``limit`` events, each ``(uid, stage, t_us, ...)`` -- a ``StageEvent`` or
    a plain tuple -- grouped by file. Both drivers infer this way when no order is given."""
    by_uid: dict[str, list[tuple[int, str]]] = {}
    for uid, stage, t_us, *_ in islice(events, limit):
        by_uid.setdefault(uid, []).append((t_us, stage))
    return infer_stage_order(by_uid.values())


def infer_stage_order(traces: Iterable[Sequence[tuple[int, str]]]) -> StageOrder:
    """Infer the order from traces given as ``[(t_us, stage), ...]`` (any order within a trace)."""
    before: dict[tuple[str, str], int] = defaultdict(int)
    pos_sum: dict[str, float] = defaultdict(float)
    seen: dict[str, int] = defaultdict(int)
    firsts: list[dict[str, int]] = []  # per trace, each stage's earliest time
    for trace in traces:
        first: dict[str, int] = {}
        for t, name in sorted(trace):
            first.setdefault(name, t)
        if not first:
            continue
        firsts.append(first)
        names = list(first)  # in the order first seen
        denominator = max(len(names) - 1, 1)
        for i, a in enumerate(names):
            seen[a] += 1
            pos_sum[a] += i / denominator
            for b in names[i + 1 :]:
                before[(a, b)] += 1
    if not seen:
        raise ValueError("cannot infer the stage order: no events with a uid and a stage")
    stages = list(seen)
    # Wins count against the common stages only (``PATH_FROM`` as many files as the most common one has): a stage
    # of a few stray lines takes none from them, nor gives any -- one file [d, x1, x2] had handed d two wins, put it
    # before c and made c the terminal stage (a review's case: every stall unreported). A rare stage is placed by
    # its wins over the common ones.
    common = [b for b in stages if seen[b] >= PATH_FROM * max(seen.values())]
    wins = dict.fromkeys(stages, 0.0)
    for a in stages:
        for b in common:
            if a != b:
                ab, ba = before.get((a, b), 0), before.get((b, a), 0)
                if ab > ba:
                    wins[a] += 1
                elif ab == ba and ab > 0:
                    wins[a] += 0.5
    mean_pos = {s: pos_sum[s] / seen[s] for s in stages}
    ordered_names = sorted(stages, key=lambda s: (-wins[s], mean_pos[s], s))
    optional: set[str] = set()
    # Half the sample's events are dated before this: a file that reached the end by then has had half the
    # sample's time for a lagging service's lines to come in (the sample is in arrival order).
    times = sorted(t for first in firsts for t in first.values())
    mid_us = times[(len(times) - 1) // 2]
    # The terminal stage is the last stage that most traces reaching the end share; presence is measured
    # among traces that reached it, so files still in flight do not make late stages look optional.
    for candidate in reversed(ordered_names):
        reached = [first for first in firsts if candidate in first]
        if len(reached) >= OPTIONAL_BELOW * max(seen.values()):
            more, paths = _optional(reached, ordered_names, candidate, mid_us)
            return StageOrder(tuple(ordered_names), frozenset(optional | more), paths=frozenset(paths))
        optional.add(candidate)
    raise AssertionError("the most seen stage is reached by all the files that have it")  # pragma: no cover


def _optional(reached: list[dict[str, int]], names: list[str], terminal: str, mid_us: int) -> tuple[set[str], set[str]]:
    """(optional stages, those of them with paths) among ``names`` (ranked), from the files that reached
    ``terminal`` (each stage's earliest time). A stage fewer than ``OPTIONAL_BELOW`` of them have is optional; so is
    one that fewer than ``REQUIRED_FROM`` have of the files that were first seen before its place (one first seen
    after it was in flight already) and reached the end by ``mid_us`` -- when those are at least ``MIN_PAST`` and
    half of such files: a few files, such as a stray line's made-up first stage starts, are not the evidence."""
    rank = {s: r for r, s in enumerate(names)}
    have_all = [0] * len(names)
    first_at = [0] * len(names)  # of the files that reached the end by ``mid_us``: where each was first seen
    have = [0] * len(names)  # ... and how many have each stage, of those first seen before it
    early = 0
    for first in reached:
        ranks = [rank[s] for s in first]
        for r in ranks:
            have_all[r] += 1
        if first[terminal] > mid_us:
            continue
        early += 1
        f = min(ranks)
        first_at[f] += 1
        for r in ranks:
            have[r] += r > f
    optional: set[str] = set()
    paths: set[str] = set()
    past = 0  # the files that reached the end by ``mid_us``, first seen before rank r
    for r, s in enumerate(names):
        if s != terminal:
            if have_all[r] < OPTIONAL_BELOW * len(reached):
                optional.add(s)
                if have_all[r] >= PATH_FROM * len(reached):
                    paths.add(s)
            elif r and past >= max(MIN_PAST, OPTIONAL_BELOW * early) and have[r] < REQUIRED_FROM * past:
                optional.add(s)
                paths.add(s)  # had by at least OPTIONAL_BELOW of the files
        past += first_at[r]
    return optional, paths
