"""The robust clock a file's event times are judged by (core/clock.py): what a far-off line cannot move, what a
real pause in the logs must not cost, and the bounds themselves."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewatch.core.clock import AFTER, BEFORE, BLOCK, FUTURE, PULL_LINES, TOO_OLD, BlockClock, Pull, TimeBounds
from stagewatch.core.timeutil import US_PER_S

T0 = 1_780_000_000 * US_PER_S  # 2026-05-28
HOUR = 3600 * US_PER_S


def _judge(times: list[int], bounds: TimeBounds | None = None) -> list[str | None]:
    """The verdict for each time, in input order, through the clock as a driver uses it."""
    bounds = bounds or TimeBounds()
    clock: BlockClock[int] = BlockClock()
    verdicts: dict[int, str | None] = {}

    def judged(block: list[int], at: int) -> None:
        for k in block:
            verdicts[k] = bounds.verdict(times[k], at)

    for k, t in enumerate(times):
        if (done := clock.push(k, t)) is not None:
            judged(*done)
    for done in clock.end(bounds):
        judged(*done)
    assert sorted(verdicts) == list(range(len(times)))  # every item comes back exactly once
    return [verdicts[k] for k in range(len(times))]


def _steady(n: int, every_s: float = 1.0, start: int = T0, jitter_s: float = 20.0, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [start + int((k * every_s + rng.uniform(-jitter_s, jitter_s)) * US_PER_S) for k in range(n)]


def test_bounds_are_exclusive_and_checked() -> None:
    b = TimeBounds(max_ahead_s=600, max_age_s=3600)
    assert b.verdict(T0 + 600 * US_PER_S, T0) is None and b.verdict(T0 + 600 * US_PER_S + 1, T0) == FUTURE
    assert b.verdict(T0 - 3600 * US_PER_S, T0) is None and b.verdict(T0 - 3600 * US_PER_S - 1, T0) == TOO_OLD
    assert "ahead" in b.detail(FUTURE, T0 + HOUR, T0) and "behind" in b.detail(TOO_OLD, T0 - 2 * HOUR, T0)
    for bad in ({"max_ahead_s": 0}, {"max_age_s": -1}, {"max_ahead_s": 1e12}):
        with pytest.raises(ValueError, match="must be > 0 and at most"):
            TimeBounds(**bad)


@pytest.mark.parametrize("where", [0, 1, 15, 16, 200, 1000, 1998, 1999])
@pytest.mark.parametrize("offset_h", [1.0, 24 * 365 * 70.0, -24 * 30.0])
def test_one_far_line_is_judged_wherever_it_is_and_no_other_line_is(where: int, offset_h: float) -> None:
    times = _steady(2000)
    times.insert(where, times[where] + int(offset_h * HOUR))
    verdicts = _judge(times)
    assert verdicts[where] == (FUTURE if offset_h > 0 else TOO_OLD)
    assert verdicts[:where] + verdicts[where + 1:] == [None] * 2000


def test_a_pause_in_the_logs_costs_nothing_wherever_it_falls_in_a_block() -> None:
    """Eight quiet hours, then the logs go on: no line after the pause is taken for the future (the clock
    looks further ahead than back)."""
    for cut in range(3 * BLOCK, 4 * BLOCK + 1):
        times = _steady(cut, jitter_s=0) + _steady(1000, start=T0 + 8 * HOUR + cut * US_PER_S, jitter_s=0)
        assert _judge(times) == [None] * len(times), cut


def test_what_the_clock_holds_back_and_when_it_lets_go() -> None:
    clock: BlockClock[int] = BlockClock()
    out = [clock.push(k, T0 + k) for k in range(BLOCK * (AFTER + 1))]
    assert out[:-1] == [None] * (len(out) - 1) and out[-1] is not None
    assert out[-1][0] == list(range(BLOCK)) and clock.now == out[-1][1]
    rest = clock.end()
    assert [k for block, _ in rest for k in block] == list(range(BLOCK, BLOCK * (AFTER + 1)))
    assert clock.end() == []


def test_a_lone_last_line_cannot_vouch_for_itself() -> None:
    times = [*_steady(BLOCK * (BEFORE + AFTER + 3)), T0 + 80 * 365 * 24 * HOUR]
    assert _judge(times)[-1] == FUTURE
    assert _judge([T0, T0 + 80 * 365 * 24 * HOUR]) == [None, FUTURE]


def test_a_small_input_is_judged_against_itself() -> None:
    assert _judge([T0]) == [None]
    assert _judge([T0, T0 + HOUR, T0 + 2]) == [None, FUTURE, None]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 900),
    far=st.lists(st.tuples(st.floats(0, 1), st.sampled_from([48.0, -24.0 * 10, 24.0 * 365 * 100])), max_size=12),
    seed=st.integers(0, 10_000),
)
def test_fewer_than_a_few_far_lines_are_each_judged_and_change_nothing_else(
    n: int, far: list[tuple[float, float]], seed: int
) -> None:
    """Scattered far-off lines (at most one in 60 here; a window of 272 is moved only by half of it) are each
    dead-lettered, and every other line believed."""
    base = _steady(max(n, 60 * len(far)), seed=seed)
    times = list(base)
    marked = set()
    for frac, hours in far:
        at = int(frac * len(times))
        ref = base[min(int(frac * len(base)), len(base) - 1)]  # far from the steady lines, not from another far one
        times.insert(at, ref + int(hours * HOUR))
        marked = {m + 1 if m >= at else m for m in marked} | {at}
    verdicts = _judge(times)
    for k, v in enumerate(verdicts):
        assert (v is not None) == (k in marked), (k, v)


@pytest.mark.parametrize(("gap_s", "n"), [(90, 1000), (60, 1000), (300, 10), (100, 180)])
def test_a_sparse_steady_log_loses_nothing_at_its_end(gap_s: int, n: int) -> None:
    """The last blocks are judged against a centred window; in a log of a line a minute or more their later lines
    were more than max_ahead_s ahead of it (48 of 1,000 lines 90 s apart were future). Each is now vouched for by
    the line believed before it."""
    times = [T0 + k * gap_s * US_PER_S for k in range(n)]
    assert _judge(times) == [None] * n
    assert _judge([*times, times[-1] + 80 * 365 * 24 * HOUR]) == [None] * n + [FUTURE]  # a lone far line still is


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_quiet_log_of_bursts_loses_no_more_than_its_last_two_files_at_its_end(seed: int) -> None:
    """Eight lines a file within a minute, a file every 20-90 minutes (a pipeline of a few files an hour): the last
    blocks' centred clock lags their later lines by more than max_ahead_s, and each file's first line is further
    than that from the line believed before it -- a simulated quiet pipeline's last 18 files were dead-lettered as
    future. Such a line is believed when the BLOCK lines after it do not put it ahead of them."""
    rng = random.Random(seed)
    times: list[int] = []
    t = T0
    for _ in range(200):
        t += int(rng.uniform(20, 90) * 60 * US_PER_S)
        times += sorted(t + int(rng.uniform(0, 60) * US_PER_S) for _ in range(8))
    verdicts = _judge(times)
    assert verdicts[: -2 * 8] == [None] * (len(times) - 2 * 8)
    # Far lines among its last ones are not believed for it, however many agree with each other: ten in a row
    # anywhere in the last 160 were, vouched for by the median of the lines after them (a review's case), and
    # moved the watermark. A run at its very end only within a day of the lines before it, BLOCK lines at least.
    # (Eleven lines 15 minutes after a file, in a log whose files are 20-90 minutes apart, are a file like any.)
    for before_end in (17, 40, 100, 150):
        for far_s in (15 * 60, 80 * 365 * 24 * 3600):
            far = [times[-before_end] + (far_s + k) * US_PER_S for k in range(11)]
            at = len(times) - before_end
            verdicts = _judge(times[:at] + far + times[at:])
            if far_s > 24 * 3600:
                assert verdicts[at: at + len(far)] == [FUTURE] * len(far), before_end
            real = verdicts[:at] + verdicts[at + len(far):]
            assert real[: -2 * 8] == [None] * (len(real) - 2 * 8), (before_end, far_s)
    far = [times[-1] + 80 * 365 * 24 * HOUR + k for k in range(BLOCK - 1)]
    assert _judge(times + far)[-len(far):] == [FUTURE] * len(far)


@given(st.lists(st.integers(0, 10**12), max_size=40), st.integers(1, PULL_LINES - 1), st.integers(1, 10**9))
def test_fewer_than_pull_lines_ahead_do_not_move_what_the_watermark_follows(times: list[int], ahead: int,
                                                                              lead: int) -> None:
    """``Pull`` follows the PULL_LINES-th newest time: lines ahead of all the rest, fewer than that, move it no
    further than the newest of the rest."""
    pull = Pull()
    for t in times:
        pull.push(t)
    before = pull.time
    top = max(times, default=-1)
    for k in range(ahead):
        pull.push(top + lead + k)
    every = sorted([-1] * PULL_LINES + times + [top + lead + k for k in range(ahead)])
    assert pull.time <= max(top, before) and pull.time == every[-PULL_LINES]


def test_a_log_in_order_is_followed_a_few_lines_behind() -> None:
    pull = Pull()
    seen = [pull.push(t) for t in range(10)]
    assert seen == [-1] * (PULL_LINES - 1) + list(range(10 - PULL_LINES + 1))
