"""Where a slow file's time went: the stages that added most over what they usually take.

A ``slow_trace`` verdict says a file took too long end to end; the person reading it next asks "where?". Each
of the file's measured stages (its waits, and the latencies its log lines reported) is set against its own
baseline's median *at the moment the file completed* -- the same snapshots in both drivers: the backtest's
current interval, the streaming job's side input for the interval of the completion -- and the stages that
account for most of the excess are named, largest first.

Measured on DeLag (``docs/detection.md``): combining how far each stage is over its own median into a second
verdict did not separate Train-Ticket's "several calls a little slow" requests from normal ones -- normal
requests there slow many calls at once -- so the excess names stages; it does not decide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stagewatch.core.baselines import Snapshot
from stagewatch.core.measurements import Part
from stagewatch.core.traces import TraceRules

__all__ = ["MAX_NAMED", "contributors"]

MAX_NAMED = 3  # a page names at most this many stages
_COVER = 0.8  # ... enough of them, largest first, to cover this share of the file's excess
_MIN_SHARE = 0.1  # ... and none that adds less than this share of it


def contributors(
    parts: Sequence[Part], lookup: Callable[[str], tuple[Snapshot | None, bool]], rules: TraceRules
) -> tuple[tuple[str, float], ...]:
    """(stage, ms over its usual) of the stages that made the file slow, largest first. ``parts``: the file's
    measurements as (measure, stage index, ms, the stage a wait was measured from); ``lookup``: the snapshot
    judging a baseline for this file.
    A stage measured twice (its wait and its reported latency) is named once, by the larger excess; a stage
    whose baseline is still cold is not named."""
    best: dict[str, float] = {}
    for part in parts:
        measure, i, value_ms = part[:3]
        after_i = part[3] if len(part) > 3 else -1  # three in records made before it was kept
        name = rules.latency_names[i] if measure == "latency" else rules.wait_name(after_i, i)
        snap, _ = lookup(name)
        if snap is None and measure == "wait":  # cold: the first warm one of the stage's other paths
            snap = next((found for key in rules.wait_keys[i] if (found := lookup(key)[0]) is not None), None)
        if snap is None:
            continue
        excess = value_ms - snap.median_ms
        stage = rules.names[i]
        if excess > 0 and excess > best.get(stage, 0.0):
            best[stage] = excess
    total = sum(best.values())
    named: list[tuple[str, float]] = []
    covered = 0.0
    for stage, excess in sorted(best.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(named) == MAX_NAMED or covered >= _COVER * total or excess < _MIN_SHARE * total:
            break
        named.append((stage, excess))
        covered += excess
    return tuple(named)
