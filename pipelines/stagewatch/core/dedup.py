"""Which of a file's lines were seen before: at-least-once delivery repeats lines (the same insertId, or else the
same uid, stage and time). What the backtest's ``Ingest`` drops as ``duplicates``, and what the streaming job's
local file source leaves out of its watermark (``core.clock.Pull``), so that both drivers follow the same times:
a line delivered four times is one line, in either.

Two generations of keys, rotated every horizon of event time: O(1) per event, bounded. Per file, as the streaming
job keys its dedup (by UID): an application that sets its own insertIds (a worker's counter) repeats them across
files, and Cloud Logging keeps those lines. Each key maps to the file that first logged it; another file's line
with it is remembered as (uid, key), in ``_shared_*`` -- a tuple per line in the common case cost the backtest 4 %.
"""

from __future__ import annotations

from stagewatch.core.events import StageEvent

__all__ = ["DEDUP_HORIZON_S", "LATE", "REPEAT", "TAKEN", "FirstSeen"]

DEDUP_HORIZON_S = 3600.0  # the default: a repeat more than an hour of event time after its line is taken again


REPEAT, LATE, TAKEN = 0, 1, 2  # what ``FirstSeen.take`` made of a line


class FirstSeen:
    """``take(ev, watermark)``: ``REPEAT`` when a line with ``ev``'s key was taken for its file, else ``LATE`` when
    ``ev`` is behind ``watermark`` (not remembered: its next copy is judged again), else ``TAKEN``, remembered. One
    call, one key and one lookup per line: ``Ingest.push`` is per event."""

    __slots__ = ("_gen_end", "_horizon_us", "_seen_now", "_seen_prev", "_shared_now", "_shared_prev")

    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us
        self._seen_now: dict[object, str] = {}
        self._seen_prev: dict[object, str] = {}
        self._shared_now: set[tuple[str, object]] = set()
        self._shared_prev: set[tuple[str, object]] = set()
        self._gen_end = -1

    def take(self, ev: StageEvent, watermark: int) -> int:
        t = ev.t_us
        key = ev.insert_id if ev.insert_id is not None else (ev.uid, ev.stage, t)
        owner = self._seen_now.get(key)
        if owner is None:
            owner = self._seen_prev.get(key)
        # (Another file's line with a key, remembered as shared, outlives its first owner's entry by a
        # generation when it came a generation later: looked up whether or not the owner is still there.)
        if owner == ev.uid or ((self._shared_now or self._shared_prev)
                               and ((ev.uid, key) in self._shared_now or (ev.uid, key) in self._shared_prev)):
            return REPEAT
        if t < watermark:
            return LATE
        if t > self._gen_end:
            self._rotate(t)
        if owner is None:
            self._seen_now[key] = ev.uid
        else:
            self._shared_now.add((ev.uid, key))
        return TAKEN

    def _rotate(self, t: int) -> None:
        if self._gen_end < 0:
            self._gen_end = t + self._horizon_us
            return
        # As many rotations as horizons passed -- counted, not walked: a gap of years costs what one costs.
        turns = -(-(t - self._gen_end) // self._horizon_us)
        self._seen_prev = self._seen_now if turns == 1 else {}
        self._shared_prev = self._shared_now if turns == 1 else set()
        self._seen_now, self._shared_now = {}, set()
        self._gen_end += turns * self._horizon_us
