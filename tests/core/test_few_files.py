"""Keys of a few files an interval through a long slowdown, under the tail line: what they hold out of their
history while it lasts. Each interval tells little on its own -- two of three files may be under the line -- and
learning nothing for hours decays a key's count, so neither may let the slowdown in (zoo 20006, held out); nor
may another customer's slowdown freeze a customer it does not touch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.judged_by import lookup

pytestmark = pytest.mark.unit

TAIL = BaselineConfig(line="tail")
MEDIAN_MS, SIGMA, SLOWER = 60_000.0, 0.3, 4.3  # a one-minute stage 4.3x slower: two thirds of its files over its line
PER_HOUR = 3600 // TAIL.interval_s
CALM_HOURS = 20


@dataclass
class Course:
    """Per key, each interval from the slowdown's start: the line its files are judged by over its own line before
    it (NaN: none, cold), whether that line is its own (not its stage's), whether the key is in a run of disturbed
    intervals, and the line its own history gives, warm or not, over the one before."""

    ratio: dict[str | None, list[float]] = field(default_factory=dict)
    own: dict[str | None, list[bool]] = field(default_factory=dict)
    in_run: dict[str | None, list[bool]] = field(default_factory=dict)
    history: dict[str | None, list[float]] = field(default_factory=dict)  # its own line, warm or not, over before


def _draw(rng: np.random.Generator, n: int, factor: float = 1.0, second: float = 0.0) -> list[float]:
    """``n`` durations ``factor`` x slower, a ``second`` share of them in a mode 5x slower."""
    values = rng.lognormal(np.log(MEDIAN_MS), SIGMA, n) * factor
    return (values * np.where(rng.random(n) < second, 5.0, 1.0)).tolist()


def _course(seed: int, small: float, busy: float = 0.0, slow_hours: float = 3, after_hours: float = 0,
            small_slowed: bool = True, second: float = 0.0) -> Course:
    """A stage of a small customer (``small`` files an interval, Poisson; ``second``: the share in a second mode of
    its own) and a busy one (``busy``; none: the small one's files are the stage's, under no tenant), learned for
    twenty hours, then everyone -- or only the busy customer, unless ``small_slowed`` -- 4.3x slower for
    ``slow_hours``, then ``after_hours`` as before."""
    rng = np.random.default_rng(seed)
    store = BaselineStore(TAIL)
    name: str | None = "small" if busy else None
    keys: list[str | None] = [None, "small"] if busy else [None]
    before: dict[str | None, float] = {}
    out = Course({k: [] for k in keys}, {k: [] for k in keys}, {k: [] for k in keys}, {k: [] for k in keys})
    start, end = CALM_HOURS * PER_HOUR, int((CALM_HOURS + slow_hours) * PER_HOUR)
    for k in range(int((CALM_HOURS + slow_hours + after_hours) * PER_HOUR)):
        slow = start <= k < end
        store.advance(k * TAIL.interval_us)
        n = int(rng.poisson(small))
        store.learning("call", name).extend(_draw(rng, n, SLOWER if slow and small_slowed else 1.0, second))
        if busy:
            store.learning("call", "busy").extend(_draw(rng, int(rng.poisson(busy)), SLOWER if slow else 1.0))
        store.advance((k + 1) * TAIL.interval_us)
        if k < start - 1:
            continue
        for key in keys:
            snap, own = lookup(store, "call", key)  # the line its files are judged by; None: no line, cold
            if k == start - 1:
                assert snap is not None and (own or key is None)
                before[key] = snap.threshold_ms
                continue
            out.ratio[key].append(math.nan if snap is None else snap.threshold_ms / before[key])
            out.own[key].append(own)
            out.in_run[key].append(store.bank.in_a_run(("call", key)))
            out.history[key].append(store.snaps[("call", key)].threshold_ms / before[key])
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("small", [2, 4])
def test_a_small_customer_holds_out_a_slowdown_its_stage_holds_out(seed: int, small: int) -> None:
    # Four files an interval: a 4.3x slowdown puts two of three over the small customer's line, and some
    # intervals none of two. Judged on its own, such an interval is calm and learned: its line rose to 13-20x
    # what it was (zoo 20006: to 20x its p99.9, 148 clearly slow files unflagged). The stage, which sees the busy
    # customer's files too, is disturbed in every interval: the customer goes along with it when it flags at least
    # half the stage's share and its median rose, and its own run goes on through an interval of a few files that
    # flags any. Two files an interval: too young to be judged on its own, and never ten in an interval to know
    # its median's level by -- its median rose over its learned one (7-25x without that).
    # Learning nothing, it may go cold and be judged by its stage's line meanwhile; it still holds the slowdown out
    # of its history, through the slowdown and the two hours after it.
    course = _course(seed, small=small, busy=14, after_hours=2)
    during = 3 * PER_HOUR - 1
    assert max(course.ratio[None][:during]) < 1.3, max(course.ratio[None][:during])
    assert max(course.ratio["small"][:during]) < 1.3, max(course.ratio["small"][:during])
    assert max(course.history["small"]) < 2.0, max(course.history["small"])  # it widens as its count falls


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stage_of_a_few_files_an_interval_holds_out_a_long_slowdown_and_then_learns_again(seed: int) -> None:
    # Five files an interval: about 260 samples held, over the 200 a key needs to be judged disturbed at all, and
    # under 200 within the first hour of learning nothing. It stays judged until its run of disturbed intervals
    # ends; an interval of a few files, one of them over the line, does not end it, nor does one with none. After
    # the slowdown the run ends and the key learns again (the slowdown's last files, under the line as the first
    # calm interval is learned, lift it a little: the leak at a slowdown's end, docs/detection.md).
    course = _course(seed, small=5, slow_hours=3, after_hours=3)
    during, after = 3 * PER_HOUR - 1, 3 * PER_HOUR - 1 + PER_HOUR
    assert max(course.ratio[None][:during]) < 1.3, max(course.ratio[None][:during])
    assert not any(course.in_run[None][after:])
    assert max(course.ratio[None][after:]) < 1.5, max(course.ratio[None][after:])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_key_of_a_few_files_stays_warm_through_a_slowdown_until_it_is_adopted(seed: int) -> None:
    # Learning nothing for seven hours, such a key's count falls under the 100 samples a key needs to judge after
    # about four: cold, it learned the rest of the slowdown raw, its line 27-80x what it was (a review's case). It
    # stays warm while in its run -- decay alone moves none of its quantiles; its line widens a little as its count
    # falls -- and after six hours with two thirds of its files over its line the slowdown is how the stage
    # behaves now: adopted, its line rises.
    ratios = np.array(_course(seed, small=5, slow_hours=7).ratio[None])
    assert not np.isnan(ratios[: 6 * PER_HOUR]).any()  # a line all along until then
    assert ratios[: 6 * PER_HOUR].max() < 1.5, ratios[: 6 * PER_HOUR].max()
    assert ratios[~np.isnan(ratios)][-1] > 2.0


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_another_customers_slowdown_does_not_freeze_a_customer_with_a_second_mode_of_its_own(seed: int) -> None:
    # A busy customer 4.3x slower for five hours disturbs the stage throughout. A small customer with a fifth of its
    # files in a mode 5x slower of its own, untouched by it, goes on learning as it does when nothing is slow: its
    # young line sits under its own mode at times and flags as much as the stage (a review's case: pulled into the
    # stage's run on what it flagged, it was held out 19-49 of 60 intervals), but its median did not rise with it.
    slowed = _course(seed, small=5, busy=30, slow_hours=5, small_slowed=False, second=0.2)
    assert sum(slowed.in_run[None]) == len(slowed.in_run[None])  # the stage is disturbed throughout
    assert sum(slowed.in_run["small"]) <= 6, sum(slowed.in_run["small"])
    assert all(slowed.own["small"])
