"""``FirstSeen``: the backtest's dedup and what the local file source leaves out of its watermark (one rule)."""

from __future__ import annotations

from stagewatch.core.dedup import LATE, REPEAT, TAKEN, FirstSeen
from stagewatch.core.events import StageEvent

HOUR_US = 3600 * 10**6


def _ev(uid: str, t_s: float, insert_id: str | None = None, stage: str = "upload") -> StageEvent:
    return StageEvent(uid, stage, int(t_s * 10**6), None, None, insert_id, False, None)


def test_a_repeat_of_a_taken_line_is_a_repeat_and_another_files_line_with_its_key_is_not() -> None:
    seen = FirstSeen(HOUR_US)
    assert seen.take(_ev("a", 10, "i1"), -1) == TAKEN
    assert seen.take(_ev("a", 99, "i1"), -1) == REPEAT  # the same insertId, whatever its time
    assert seen.take(_ev("b", 10, "i1"), -1) == TAKEN  # another file's counter: its own line
    assert seen.take(_ev("b", 11, "i1"), -1) == REPEAT
    assert seen.take(_ev("a", 20), -1) == TAKEN and seen.take(_ev("a", 20), -1) == REPEAT  # uid + stage + time
    assert seen.take(_ev("a", 20, stage="register"), -1) == TAKEN


def test_a_late_line_is_not_remembered_and_its_next_copy_is_judged_again() -> None:
    seen = FirstSeen(HOUR_US)
    assert seen.take(_ev("a", 10, "i1"), 20 * 10**6) == LATE
    assert seen.take(_ev("a", 10, "i1"), 5 * 10**6) == TAKEN


def test_keys_are_forgotten_after_two_horizons_of_event_time() -> None:
    seen = FirstSeen(HOUR_US)
    assert seen.take(_ev("a", 0, "i1"), -1) == TAKEN
    assert seen.take(_ev("b", 3600 + 1, "x"), -1) == TAKEN  # one rotation: "i1" is in the previous generation
    assert seen.take(_ev("a", 3600 + 2, "i1"), -1) == REPEAT
    assert seen.take(_ev("b", 3 * 3600 + 1, "y"), -1) == TAKEN  # two more horizons: both generations gone
    assert seen.take(_ev("a", 3 * 3600 + 2, "i1"), -1) == TAKEN
