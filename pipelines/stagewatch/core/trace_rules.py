"""What a trace is judged by, fixed for a job: the stage order, the hold and stall allowances, the time to live,
and the names of the baselines its measurements go to (a stage's wait, its reported latency, a wait across
skipped optional stages)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stagewatch.core.baselines import END_TO_END
from stagewatch.core.stages import StageOrder
from stagewatch.core.timeutil import US_PER_S

__all__ = ["MAX_SKIPPED", "SESSION_GAP_S", "TraceRules"]

MAX_SKIPPED = 3  # a wait across more skipped optional stages has no path baseline: its stage's judges it
SESSION_GAP_S = 3600.0  # both drivers' default (--session_gap_s, ttl_s): a file's state lasts this long


@dataclass(frozen=True)
class TraceRules:
    order: StageOrder
    hold_s: float = 30.0
    stall_factor: float = 8.0
    # Never declare a stall sooner than this: clocks of different hosts disagree by seconds.
    min_stall_s: float = 10.0
    ttl_s: float = SESSION_GAP_S  # a file silent this long is let go (a stall deadline comes before it)

    def __post_init__(self) -> None:
        if self.hold_s < 0 or self.stall_factor < 1 or self.ttl_s <= 0 or self.min_stall_s < 0:
            raise ValueError("hold_s >= 0, stall_factor >= 1, min_stall_s >= 0 and ttl_s > 0 are required")
        # Derived lookups, computed once (frozen, so via object.__setattr__).
        object.__setattr__(self, "index", self.order.index)
        object.__setattr__(self, "names", self.order.stages)
        # Reported latencies are learned under their own key: "upload" waits and "upload" RPC times differ.
        # The keys named here clash with no stage's nor end to end's, whatever the stages are called (a stage named
        # "end_to_end" in an order given is still its own, as before) -- and an inferred order's stray stages
        # (optional, with no paths: ``StageOrder.paths``) yield theirs: a line naming its stage "c (reported)" or
        # "c (after a)" had moved that baseline, every file's on it, to a cold "... #2"; sharing it instead, the
        # stray stage lent the real key's line to the stall deadline of every file that might be in it (a review's
        # case: 44 verdicts of other files changed). Its waits are learned under "c (reported) #2".
        names = self.order.stages
        object.__setattr__(self, "optional", opt := tuple(s in self.order.optional for s in names))
        common = self.order.with_paths
        stray = tuple(o and s not in common for s, o in zip(names, opt, strict=True))
        taken = {*(s for s, x in zip(names, stray, strict=True) if not x), END_TO_END}
        object.__setattr__(self, "latency_names", tuple(_unique(f"{s} (reported)", taken) for s in names))
        # A wait measured across skipped optional stages has a baseline of its own: it spans another path (zoo
        # 10018: with the optional stage skipped, the stage before is on another service, and two customers'
        # skewed clocks there put 0.9 s and 2.9 s on a 4 ms wait -- a second mode a quarter of the files take).
        # Across at most MAX_SKIPPED of them, and at least one: stray stages count for nothing, a path neither
        # starts nor ends at one, and a stray line's stage neither adds a path to another stage nor takes one
        # away (an order inferred from the data may hold hundreds some stray lines named).
        object.__setattr__(self, "skip_names", {
            (j, i): _unique(f"{names[i]} (after {names[j]})", taken) for i, j in _paths(opt, stray)})
        # Per stage, the baseline of its waits from the stage before: its name, but for a stray stage whose name
        # another key has (above).
        object.__setattr__(self, "keys", tuple(
            _unique(s, taken) if x else s for s, x in zip(names, stray, strict=True)))
        # Per path baseline, its stage's own: what tells a chronically slow customer (``core.judged_by``).
        object.__setattr__(self, "path_stage", {name: self.keys[i] for (_, i), name in self.skip_names.items()})
        # Per stage, the baselines of its waits (its own first): a cold one is judged by a warm one of these.
        object.__setattr__(self, "wait_keys", tuple(
            (self.keys[i], *(name for (j, k), name in self.skip_names.items() if k == i)) for i in range(len(names))))
        object.__setattr__(self, "terminal_i", self.order.index[self.order.terminal])
        object.__setattr__(self, "hold_us", int(self.hold_s * US_PER_S))
        object.__setattr__(self, "ttl_us", int(self.ttl_s * US_PER_S))
        object.__setattr__(self, "min_stall_ms", self.min_stall_s * 1000.0)

    def wait_name(self, after_i: int, i: int) -> str:
        """The baseline of stage ``i``'s wait from ``after_i``: the path's across skipped optional stages, or the
        stage's own (-1: from the stage before it, or across a lost line of a required one)."""
        return self.keys[i] if after_i < 0 else self.skip_names.get((after_i, i), self.keys[i])

    index: dict[str, int] = field(init=False, repr=False, compare=False)
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    latency_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    optional: tuple[bool, ...] = field(init=False, repr=False, compare=False)
    skip_names: dict[tuple[int, int], str] = field(init=False, repr=False, compare=False)
    path_stage: dict[str, str] = field(init=False, repr=False, compare=False)
    wait_keys: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    terminal_i: int = field(init=False, repr=False, compare=False)
    hold_us: int = field(init=False, repr=False, compare=False)
    ttl_us: int = field(init=False, repr=False, compare=False)
    min_stall_ms: float = field(init=False, repr=False, compare=False)


def _paths(optional: tuple[bool, ...], stray: tuple[bool, ...]) -> list[tuple[int, int]]:
    """(i, j) for each path: from stage ``j`` to stage ``i`` across 1 to ``MAX_SKIPPED`` optional stages that are not
    stray (and any stray ones), none required; ``i`` ascending, then ``j``."""
    out: list[tuple[int, int]] = []
    for i in range(len(optional)):
        if stray[i]:
            continue
        starts: list[int] = []
        skipped = 0
        for j in range(i - 1, 0, -1):  # j: the stage skipped; j - 1, the candidate start
            if not optional[j]:
                break
            skipped += not stray[j]
            if skipped > MAX_SKIPPED:
                break
            if skipped and not stray[j - 1]:
                starts.append(j - 1)
        out.extend((i, j) for j in reversed(starts))
    return out


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name #2``, ``#3``... if a stage or another key already has it; taken then."""
    k, out = 1, name
    while out in taken:
        k += 1
        out = f"{name} #{k}"
    taken.add(out)
    return out
