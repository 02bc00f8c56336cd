"""What a trace hands on, as typed records: its measurements, its progress, and when its next stage is overdue.

The backtest passes them between the core's parts within one process; the streaming job sends them from step to
step (``AssembleTraces`` → ``LearnBaselines`` / ``JudgeMeasurements`` → ``WatchStalls``). Each is a named tuple:
cheap to build and pickle, compared and hashed by value.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Arrival", "Deadline", "FileRef", "Measured", "Measurement", "Part", "Progress", "StallInfo", "Straggler"]


class Measurement(NamedTuple):
    """One thing a trace measured: a stage's ``wait`` or reported ``latency`` (``stage_i``), or the
    ``end_to_end`` duration (``stage_i`` -1), at event time ``t_us``. ``after_i``: for a wait measured across
    skipped optional stages, the stage it was measured from (its own baseline: ``TraceRules.wait_name``); -1
    otherwise, and in records made before it was kept."""

    measure: str
    stage_i: int
    value_ms: float
    t_us: int
    after_i: int = -1


class StallInfo(NamedTuple):
    """What a stall of the next stage would say: which stage, its usual wait, the wait allowed, the baseline's
    size, and whether the tenant's own baseline set it; and ``line_ms``, the stage's alert line (none when
    optional stages come before it): a file still waiting past it is flagged slow while in the stage (None in
    records made before it was kept)."""

    next_i: int
    median_ms: float
    allowed_ms: float
    n: int
    by_tenant: bool
    line_ms: float | None = None


class FileRef(NamedTuple):
    """Who an anomaly is about: the file, its customer and its batch."""

    uid: str
    tenant: str | None
    lot: str | None


# One of a file's stage measurements: (measure, stage index, ms, the stage a wait across skipped optional stages
# was measured from or -1). Records made before that was kept carry three.
Part = tuple[str, int, float, int]


class Measured(NamedTuple):
    """A measurement with the file that made it: ``last_stage`` is the furthest stage the file had reached, and
    ``now_us`` the event-time clock when it was made (a verdict is made, and learned, in that moment's
    baseline interval). An end-to-end measurement carries the file's stage measurements (``parts``), so that
    a slow file's verdict can name where its time went (``core.evidence``)."""

    file: FileRef
    last_stage: str | None
    m: Measurement
    now_us: int
    parts: tuple[Part, ...] = ()


class Progress(NamedTuple):
    """A file moved on: the next required stage is ``next_i``, the furthest stage seen was logged at
    ``last_t_us``; made at ``now_us``."""

    file: FileRef
    last_stage: str
    next_i: int
    last_t_us: int
    now_us: int


class Deadline(NamedTuple):
    """When the stage after ``progress`` is overdue, and what its stall would say."""

    progress: Progress
    deadline_us: int
    stall: StallInfo


class Arrival(NamedTuple):
    """A file declared stalled logged again (stage ``stage`` at ``t_us``): it arrived after all."""

    uid: str
    stage: str | None
    t_us: int


class Straggler(NamedTuple):
    """A line of a file whose trace had closed (the streaming job dead-letters it ``after_close``): the stall
    watch hears of it, for a stalled file's later line is its arrival, in the backtest too."""

    uid: str
    stage: str
    t_us: int
