"""``TrackLots``: trace summaries → ``lot_incomplete`` and ``lot_slow`` records, as ``replay --lots`` makes.

Per lot (keyed by lot id, so no key sees more than one batch's files): the closed files gather in state and
an event-time timer fires ``quiet_s`` after the lot's last event — pushed back by every later file. Then
the lot, closed, goes to one key that judges lots in the order they went quiet against the history of lots
of their size (``lots.LotJudge``; lots are few, a record each).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core.lots import Lot, LotConfig, LotJudge, add_file
from stagewatch.core.records import LotRecord, TraceSummary
from stagewatch.core.timeutil import US_PER_S
from stagewatch.stream.steps.contain import ContainedStep, contained
from stagewatch.stream.steps.timers import fire_at, fire_no_later_than, take_due

__all__ = ["TrackLots"]


class _GatherLotFn(beam.DoFn):
    LOT = ReadModifyWriteStateSpec("lot", PickleCoder())
    QUIET = TimerSpec("quiet", TimeDomain.WATERMARK)

    def __init__(self, quiet_us: int, end_us: int | None) -> None:
        self._quiet_us = quiet_us
        self._end_us = end_us

    @contained("Lots")
    def process(
        self,
        kv: tuple[str, TraceSummary],
        lot_state: Any = beam.DoFn.StateParam(LOT),
        quiet: Any = beam.DoFn.TimerParam(QUIET),
    ) -> None:
        lot = add_file(lot_state.read(), kv[1])
        lot_state.write(lot)
        quiet.set(Timestamp(micros=lot.last_us + self._quiet_us))

    @on_timer(QUIET)
    @contained("Lots")
    def _quiet(
        self, key: Any = beam.DoFn.KeyParam, lot_state: Any = beam.DoFn.StateParam(LOT)
    ) -> Iterator[tuple[str, tuple[int, str, Lot]]]:
        lot: Lot | None = lot_state.read()
        lot_state.clear()
        if lot is None:
            return
        due = lot.last_us + self._quiet_us
        if self._end_us is None or due <= self._end_us:  # a finite input's end is not the passage of time
            yield "lots", (due, key, lot)


class _JudgeLotsFn(beam.DoFn):
    JUDGE = ReadModifyWriteStateSpec("judge", PickleCoder())
    BUFFER = BagStateSpec("buffer", PickleCoder())
    NEXT = ReadModifyWriteStateSpec("next_fire_us", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def __init__(self, cfg: LotConfig) -> None:
        self._cfg = cfg

    @contained("Lots")
    def process(
        self,
        kv: tuple[str, tuple[int, str, Lot]],
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> None:
        buffer.add(kv[1])
        fire_no_later_than(next_fire, fire, kv[1][0])

    @on_timer(FIRE)
    @contained("Lots")
    def _fire(
        self,
        ts: Any = beam.DoFn.TimestampParam,
        judge_state: Any = beam.DoFn.StateParam(JUDGE),
        buffer: Any = beam.DoFn.StateParam(BUFFER),
        next_fire: Any = beam.DoFn.StateParam(NEXT),
        fire: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[LotRecord]:
        now = int(ts.micros)
        due: list[tuple[int, str, Lot]]
        due, rest = take_due(buffer, now, lambda item: item[0], lambda item: (item[0], item[1]))
        judge: LotJudge = judge_state.read() or LotJudge(self._cfg)
        for _, lot_id, lot in due:
            record = judge.judge(lot_id, lot)
            if record is not None:
                yield record
        judge_state.write(judge)
        fire_at(next_fire, fire, [item[0] for item in rest[:1]])


class TrackLots(ContainedStep):
    """Trace summaries → lot records (``lot_incomplete``, ``lot_slow``)."""

    def __init__(self, cfg: LotConfig | None = None, end_us: int | None = None) -> None:
        super().__init__()
        self._cfg = cfg or LotConfig()
        self._end_us = end_us

    def expand(self, summaries: beam.PCollection) -> beam.PCollection:
        keyed = summaries | "KeyByLot" >> beam.FlatMap(lambda s: [(s.lot, s)] if s.lot else []).with_output_types(
            tuple[str, Any])
        gathered = self.pardo(keyed, "GatherLot", _GatherLotFn(int(self._cfg.quiet_s * US_PER_S), self._end_us)).main
        typed = gathered | "TypedLots" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, Any])
        return self.pardo(typed, "JudgeLots", _JudgeLotsFn(self._cfg)).main
