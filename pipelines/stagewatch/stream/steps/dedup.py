"""``Dedup``: at-least-once delivery repeats lines; keep the first of each insertId (else uid + stage + time)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core.dedup import DEDUP_HORIZON_S
from stagewatch.core.events import StageEvent
from stagewatch.core.timeutil import US_PER_S
from stagewatch.stream.steps.contain import ContainedStep, contained

__all__ = ["Dedup"]


class _FirstSeenFn(beam.DoFn):
    """Per UID: pass the first event of each dedup key, count the rest; forget the UID's keys ``horizon_s``
    of event time after its newest event.

    Keyed by UID, not by dedup key: a local run's runner scans every key it has ever held each time the
    watermark moves, so a key per line made a day's run crawl; per UID the state is one small set.
    """

    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())
    NEWEST = ReadModifyWriteStateSpec("newest_us", VarIntCoder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, horizon_s: float) -> None:
        self._horizon_us = int(horizon_s * US_PER_S)
        self._duplicates = Metrics.counter("stagewatch", "duplicates")

    @contained("Dedup")
    def process(
        self,
        element: tuple[str, StageEvent],
        seen: Any = beam.DoFn.StateParam(SEEN),
        newest: Any = beam.DoFn.StateParam(NEWEST),
        expire: Any = beam.DoFn.TimerParam(EXPIRE),
    ) -> Iterator[StageEvent]:
        ev = element[1]
        key = ev.dedup_key()
        keys: set[Any] = seen.read() or set()
        if key in keys:
            self._duplicates.inc()
            return
        keys.add(key)
        seen.write(keys)
        latest = newest.read()
        if latest is None or ev.t_us > latest:
            newest.write(ev.t_us)
            expire.set(Timestamp(micros=ev.t_us + self._horizon_us))
        yield ev

    @on_timer(EXPIRE)
    @contained("Dedup")
    def _forget(self, seen: Any = beam.DoFn.StateParam(SEEN), newest: Any = beam.DoFn.StateParam(NEWEST)) -> None:
        seen.clear()
        newest.clear()


class Dedup(ContainedStep):
    """At-least-once delivery repeats lines: keep the first of each insertId (else uid + stage + time)."""

    def __init__(self, horizon_s: float = DEDUP_HORIZON_S) -> None:
        super().__init__()
        self._horizon_s = horizon_s

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        keyed = events | "KeyByUid" >> beam.Map(lambda ev: (ev.uid, ev)).with_output_types(tuple[str, Any])
        return self.pardo(keyed, "KeepFirstSeen", _FirstSeenFn(self._horizon_s)).main
