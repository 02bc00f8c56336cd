"""The one-timer pattern the job's stateful steps share: a bag of items waiting for event time, and a single
event-time timer kept at the earliest moment anything is due (its time also kept in state, because Beam
cannot read a timer back).

Assemble, incidents, lots and the baseline roll all buffer what arrives and act on it in event-time order
when the watermark passes it; these three helpers are that bookkeeping, once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from apache_beam.utils.timestamp import Timestamp

__all__ = ["fire_at", "fire_no_later_than", "take_due"]

T = TypeVar("T")


def fire_no_later_than(next_fire: Any, fire: Any, t_us: int) -> None:
    """Move the timer to ``t_us`` if that is earlier than where it is (or it is not set)."""
    pending = next_fire.read()
    if pending is None or t_us < pending:
        next_fire.write(t_us)
        fire.set(Timestamp(micros=t_us))


def fire_at(next_fire: Any, fire: Any, times: Iterable[int]) -> None:
    """Set the timer at the earliest of ``times``; with none, forget it."""
    earliest = min(times, default=None)
    if earliest is None:
        next_fire.clear()
    else:
        next_fire.write(earliest)
        fire.set(Timestamp(micros=earliest))


def take_due(
    buffer: Any, now_us: int, time_of: Callable[[T], int], order: Callable[[T], Any]
) -> tuple[list[T], list[T]]:
    """(due, rest) of the bag, each sorted by ``order`` (which must sort by ``time_of`` first): the items due by
    ``now_us`` are taken out of the bag, the rest stay."""
    items = sorted(buffer.read(), key=order)
    n_due = sum(1 for item in items if time_of(item) <= now_us)
    due, rest = items[:n_due], items[n_due:]
    if due:
        buffer.clear()
        for item in rest:
            buffer.add(item)
    return due, rest
