"""Where a stream's time is, and which event times are too far from it to be believed.

An event time is what a log line *says*. One line dated 2099 among a day of lines dated today would, if
believed, move the watermark to 2099: every other line late, every open file stalled. So an event is judged
against the time the logs *arrive* at, not against the newest time a line claimed:

- further ahead of the arrival time than ``TimeBounds.max_ahead_s`` (default 10 minutes: clock skew between the
  writers, not a pipeline's latency) it is ``future``;
- further behind it than ``TimeBounds.max_age_s`` (default 7 days: Pub/Sub's default retention, so that a
  job catching up on a week's backlog loses nothing) it is ``too_old``.

Either way it is dead-lettered with that reason and never reaches a watermark, a dedup set or a timer.

The arrival time is, in the streaming job from Pub/Sub, the processing time (the wall clock when the line
is parsed). A log file has no arrival times, so both drivers reading a file (the backtest, the streaming
job's local file source) give it the same robust clock, ``BlockClock``: the events in file order, in blocks
of ``BLOCK``; a block's clock is the median event time of the ``BEFORE`` blocks before it, itself and the
``AFTER`` blocks after it (272 events). A median, not the newest time: however far off, fewer than half the
lines of a window cannot move it. More blocks after than before, so that at a real pause in the logs (a
quiet night) the first lines after it are not taken for the future: whichever block the pause falls in, more
than half its window comes after it. The last blocks of a file are judged against as many blocks before
them as after them, and at least one: a lone last line cannot vouch for itself. What it costs: a file that
ends less than a block after a pause longer than ``max_ahead_s`` can lose those last lines as ``future``; a
pause longer than ``max_age_s`` inside one file can cost the ``AFTER`` blocks before it, as ``too_old``.

Timeline (blocks of 4 for the picture; one before and one after)::

    events    12:00 12:00 12:01 12:01 | 12:01 12:02 2099 12:02 | 12:02 12:03 12:03 12:03
    clock                               median of the 12 = 12:02
    verdicts                            ok    ok    future ok
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate, chain, islice
from typing import Generic, TypeVar

from stagewatch.core.timeutil import US_PER_S, format_rfc3339

__all__ = ["AFTER", "BEFORE", "BLOCK", "FUTURE", "PULL_LINES", "TIME_REASONS", "TOO_OLD", "BlockClock", "Held", "Pull",
           "TimeBounds"]

FUTURE = "future"
TOO_OLD = "too_old"
TIME_REASONS = (FUTURE, TOO_OLD)
BLOCK = 16  # events per block of a file's robust clock: its resolution
BEFORE = 7  # blocks behind a block, and
AFTER = 9  # blocks ahead of it, whose median is its clock: ahead of half the window, so that a pause does not
# make the lines after it look like the future
PULL_LINES = 4  # lines that must have reached a time before a file's watermark follows it: ``Pull``
END_PAUSE_US = 24 * 3600 * US_PER_S  # at the end of a file, the longest pause a run of lines is believed after

T = TypeVar("T")


@dataclass(frozen=True)
class TimeBounds:
    """How far an event time may be from the arrival time: ``max_ahead_s`` ahead, ``max_age_s`` behind."""

    max_ahead_s: float = 600.0
    max_age_s: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if not (0 < self.max_ahead_s <= 366 * 24 * 3600):
            raise ValueError(f"max_ahead_s (replay: --max-ahead) must be > 0 and at most a year of seconds, e.g. "
                             f"600; got {self.max_ahead_s:g}")
        if not (0 < self.max_age_s <= 100 * 366 * 24 * 3600):
            raise ValueError(f"max_age_s (replay: --max-age) must be > 0 and at most 100 years of seconds, e.g. "
                             f"604800; got {self.max_age_s:g}")

    def window(self, arrival_us: int) -> tuple[int, int]:
        """The event times believed at ``arrival_us``, both ends included: a block's test in two comparisons."""
        return arrival_us - int(self.max_age_s * US_PER_S), arrival_us + int(self.max_ahead_s * US_PER_S)

    def verdict(self, t_us: int, arrival_us: int) -> str | None:
        """``FUTURE``, ``TOO_OLD`` or None (believed)."""
        lo, hi = self.window(arrival_us)
        if t_us > hi:
            return FUTURE
        if t_us < lo:
            return TOO_OLD
        return None

    def detail(self, reason: str, t_us: int, arrival_us: int) -> str:
        if reason == FUTURE:
            return (f"event time {format_rfc3339(t_us)} is {(t_us - arrival_us) / US_PER_S:.0f} s ahead of the "
                    f"time the logs are at ({format_rfc3339(arrival_us)}; at most {self.max_ahead_s:.0f} s)")
        return (f"event time {format_rfc3339(t_us)} is {(arrival_us - t_us) / US_PER_S:.0f} s behind the time "
                f"the logs are at ({format_rfc3339(arrival_us)}; at most {self.max_age_s:.0f} s)")


def _median(blocks: Iterable[list[int]]) -> int:
    ordered = sorted(chain.from_iterable(blocks))
    return ordered[(len(ordered) - 1) // 2] // 1000 * 1000  # whole ms: exact through a Beam timestamp


class BlockClock(Generic[T]):
    """The robust clock of a file's events, in file order: ``push`` each event (any item, with its event
    time); it returns, ``AFTER`` blocks later, the items of a completed block with the clock they are judged
    against; ``end`` returns the rest. ``now``: the clock of the last block returned (-1 before the first),
    the time to file what has no event time of its own at (a rejected line).

    Holding blocks back costs ``(BEFORE + AFTER + 1) * BLOCK`` event times of memory, and delays nothing a
    watermark would not have delayed (the end of input releases everything)."""

    def __init__(self) -> None:
        self.now = -1
        self._block: list[T] = []
        self._block_t: list[int] = []
        self._waiting: deque[tuple[list[T], list[int]]] = deque()  # full blocks, not judged yet
        self._before: deque[list[int]] = deque(maxlen=BEFORE)  # the times of the blocks judged last

    def push(self, item: T, t_us: int) -> tuple[list[T], int] | None:
        self._block.append(item)
        self._block_t.append(t_us)
        if len(self._block) < BLOCK:
            return None
        self._waiting.append((self._block, self._block_t))
        self._block, self._block_t = [], []
        if len(self._waiting) <= AFTER:
            return None
        return self._judge(len(self._before))

    def _judge(self, before: int) -> tuple[list[T], int]:
        items, times = self._waiting[0]
        after = [t for _, t in islice(self._waiting, 1, AFTER + 1)]
        self.now = _median([*islice(self._before, len(self._before) - before, None), times, *after])
        self._waiting.popleft()
        self._before.append(times)
        return items, self.now

    def end(self, bounds: TimeBounds | None = None) -> list[tuple[list[T], int]]:
        """What is still held. Without ``AFTER`` blocks to look ahead to, a block is judged against as many
        blocks before it as there are after it (at least one): the last lines of a file cannot vouch for
        themselves alone. Such a window is centred on its block, so in a sparse log (a line every minute or
        more) the later lines of the last blocks would be more than ``max_ahead_s`` ahead of it: with
        ``bounds``, each held line is returned on its own, and one that its block's clock would call future is
        judged against the newest line believed before it instead, when that is near enough -- a steady tail
        goes through, a lone far line after it does not -- or else, when ``BLOCK`` lines or more follow it and it is
        within ``END_PAUSE_US`` of that newest line, against the earliest of all the lines after it: in a log of a
        few files an hour each file's first line comes more than ``max_ahead_s`` after the line before it, and the
        last 18 files of a simulated quiet pipeline were lost as future (now its last two at most). Against the
        median of the lines after it instead, ten far lines anywhere in the last 160 were believed, and moved the
        watermark (a review's case); now a run of far lines is believed only if no line after it is more than
        ``max_ahead_s`` behind it, ``BLOCK`` of them at least, and never a day or more past the lines before it."""
        if self._block:
            self._waiting.append((self._block, self._block_t))
            self._block, self._block_t = [], []
        last = -1
        if bounds is not None and self._before:
            last = max((t for t in self._before[-1] if bounds.verdict(t, self.now) is None), default=-1)
        out: list[tuple[list[T], int]] = []
        held = [t for _, times in self._waiting for t in times]  # every line's time still held, in file order
        earliest_after = list(accumulate(reversed([*held[1:], 1 << 62]), min))[::-1]  # k: of the lines after line k
        judged = 0
        while self._waiting:
            times = self._waiting[0][1]
            items, at = self._judge(min(len(self._before), max(1, len(self._waiting) - 1)))
            if bounds is None:
                out.append((items, at))
                continue
            for item, t in zip(items, times, strict=True):
                judged += 1
                clock = at
                if bounds.verdict(t, at) == FUTURE and last >= 0 and bounds.verdict(t, last) is None:
                    clock = max(at, last)
                elif (bounds.verdict(t, at) == FUTURE and len(held) - judged >= BLOCK and last >= 0
                      and t - last < END_PAUSE_US):
                    clock = max(at, min(t, earliest_after[judged - 1]))
                if bounds.verdict(t, clock) is None:
                    last = max(last, t)
                out.append(([item], clock))
        return out


class Held(Generic[T]):
    """Rejected lines read before a file's clock knows any time: kept back to be filed at its first time, as
    both drivers file a rejected line at the clock. At most ``at_most`` lines and ``chars_at_most`` of their
    characters (whole lines are up to 256 KiB each): a long run of junk before the first event is let go
    sooner, to be filed at the epoch -- the same lines in both drivers, so they file them alike."""

    def __init__(self, at_most: int = 4096, chars_at_most: int = 16 << 20) -> None:
        self.at_most, self.chars_at_most = at_most, chars_at_most
        self._items: list[T] = []
        self._chars = 0

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, item: T, chars: int) -> bool:
        """Keep ``item`` (``chars`` long); whether the bound is reached: ``take`` them now, for the epoch."""
        self._items.append(item)
        self._chars += chars
        return len(self._items) >= self.at_most or self._chars >= self.chars_at_most

    def take(self) -> list[T]:
        items, self._items, self._chars = self._items, [], 0
        return items


class Pull:
    """What a file's watermark follows (both drivers reading a file: ``Ingest``, the local file source): the
    ``PULL_LINES``-th newest event time of the lines taken (a repeat is not: ``core.dedup``), not the newest. A
    line within ``max_ahead_s`` is believed -- a writer's clock may run fast -- but alone it would pull the
    watermark as far ahead as it is, up to the allowed lateness (beyond, ``cap_lead`` stops it): a line 57 s
    ahead, under 60 s of lateness, made a straggler 2 s behind its own file's next line late, one baseline sample
    fewer, and every in-progress verdict of that stage moved (the streaming job's fuzz test). Now up to three
    lines ahead of the rest move it no further than the rest's own third newest time; four of them, within a
    lateness of each other, pull it as one did before (a writer whose clock runs 55 s fast and logs four lines a
    minute). In a log in order, what it costs is the time of three lines: the watermark trails the newest event
    by that and the allowed lateness."""

    __slots__ = ("_newest",)

    def __init__(self, lines: int = PULL_LINES) -> None:
        self._newest = [-1] * lines  # a min-heap of the newest times: its root is the one followed

    @property
    def time(self) -> int:
        """The time the watermark follows (-1 before ``PULL_LINES`` times)."""
        return self._newest[0]

    def push(self, t_us: int) -> int:
        """Take an event time; return the time followed now."""
        newest = self._newest
        if t_us > newest[0]:
            heapq.heapreplace(newest, t_us)
        return newest[0]
