"""Lots: the files that share a lot id are one batch; report the batches that did not finish or took too long.

A ``LotTracker`` is fed trace summaries (every closed file) and the passage of event time. A lot is judged
once none of its files has logged anything for ``quiet_s`` (its upload is over and every file closed):

* ``lot_incomplete`` when any of its files stalled, failed or went quiet without finishing — listed;
* ``lot_slow`` when all finished but the batch took more than ``factor`` times the usual for lots of its
  size to finish once it was all submitted (from its last file's first event to its last event: how the
  customer spread the uploads is theirs, what follows is the pipeline's) (sizes grouped by powers of two, the median
  of the last ``history`` complete lots of that size; no verdict before ``warmup`` of them). When the lot
  would have been in time without the file that finished last, the record names it (``slowed_by``): after
  its last file came in, a lot's duration is mostly that one file's end to end, and a lot slow only because
  of it is that file's story (its own verdict, its incident), not the batch's -- it opens no incident.

The end of a finite input judges nothing that is not yet quiet: a batch still in flight is not incomplete.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

from stagewatch.core.kinds import LOT_INCOMPLETE, LOT_SLOW
from stagewatch.core.records import LotFile, LotRecord, TraceSummary
from stagewatch.core.timeutil import US_PER_MS, US_PER_S, format_duration_ms, format_rfc3339, parse_rfc3339_us

__all__ = ["LotConfig", "LotJudge", "LotTracker", "add_file"]


@dataclass(frozen=True)
class LotConfig:
    # Two hours: longer than a trace's TTL (1 h), after which every file of the lot has closed and said how
    # (a stalled file's summary can come up to the TTL after its last event).
    quiet_s: float = 7200.0
    factor: float = 3.0
    warmup: int = 10
    history: int = 200

    def __post_init__(self) -> None:
        if self.quiet_s <= 0 or self.factor <= 1 or self.warmup < 1 or self.history < self.warmup:
            raise ValueError("quiet_s > 0, factor > 1 and history >= warmup >= 1 are required")


@dataclass
class Lot:
    """What is known of one batch: its files' outcomes and its span."""

    first_us: int
    last_us: int
    submitted_us: int  # the latest first event of its files: the whole batch is in from then on
    files: dict[str, LotFile] = field(default_factory=dict)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # uid -> (first, last event)

    def __setstate__(self, state: dict[str, object]) -> None:
        # A lot pickled by an older release (the streaming job's state across --update) has no spans.
        self.__dict__.update({"spans": {}, **state})

    def without_last(self) -> tuple[str | None, float | None]:
        """(the file that finished last, the lot's duration in ms had it finished with the others): None, None
        for a lot of one file, or one whose spans are unknown."""
        if self.spans.keys() != self.files.keys():  # a lot saved by an older release: spans of some files only
            return None, None
        if len(self.spans) < 2:
            return (next(iter(self.spans)) if self.spans else None), None
        last = max(self.spans, key=lambda uid: (self.spans[uid][1], uid))
        rest = [span for uid, span in self.spans.items() if uid != last]
        return last, max(0, max(e for _, e in rest) - max(f for f, _ in rest)) / US_PER_MS


def add_file(lot: Lot | None, summary: TraceSummary) -> Lot:
    """``lot`` with one more closed file (a trace summary) — a new lot when ``lot`` is None."""
    first, last = parse_rfc3339_us(summary.first_time), parse_rfc3339_us(summary.last_time)
    if lot is None:
        lot = Lot(first, last, first)
    lot.first_us, lot.last_us = min(lot.first_us, first), max(lot.last_us, last)
    lot.submitted_us = max(lot.submitted_us, first)
    stages = summary.stages
    lot.files[summary.uid] = LotFile(summary.uid, summary.status, summary.tenant,
                                     stages[-1].stage if stages else None)
    lot.spans[summary.uid] = (first, last)
    return lot


class LotJudge:
    """Judges quiet lots, in the order they went quiet, against the history of lots of their size."""

    def __init__(self, cfg: LotConfig | None = None) -> None:
        self.cfg = cfg or LotConfig()
        self._durations: dict[int, deque[float]] = {}
        self.judged = 0

    def judge(self, lot_id: str, lot: Lot) -> LotRecord | None:
        self.judged += 1
        size = len(lot.files)
        duration_ms = (lot.last_us - lot.submitted_us) / US_PER_MS
        unfinished = tuple(sorted((f for f in lot.files.values() if f.status != "complete"), key=lambda f: f.uid))
        tenants = tuple(sorted({f.tenant for f in lot.files.values() if f.tenant}))

        def record(kind: str, expected_ms: float | None, message: str, slowed_by: str | None = None) -> LotRecord:
            return LotRecord(
                lot=lot_id, tenants=tenants, files=size, started_at=format_rfc3339(lot.first_us),
                submitted_at=format_rfc3339(lot.submitted_us), finished_at=format_rfc3339(lot.last_us),
                judged_at=format_rfc3339(lot.last_us + int(self.cfg.quiet_s * US_PER_S)), duration_ms=duration_ms,
                kind=kind, expected_ms=expected_ms, unfinished=unfinished,
                message=message, slowed_by=slowed_by)

        if unfinished:
            what = ", ".join(f"{f.uid} ({f.status} after {f.last_stage})" for f in unfinished[:5])
            more = f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else ""
            return record(LOT_INCOMPLETE, None,
                          f"lot {lot_id}: {len(unfinished)} of {size} files did not finish: {what}{more}")
        bucket = self._durations.setdefault(size.bit_length(), deque(maxlen=self.cfg.history))
        expected = statistics.median(bucket) if len(bucket) >= self.cfg.warmup else None
        bucket.append(duration_ms)
        if expected is not None and duration_ms > self.cfg.factor * expected:
            last, rest_ms = lot.without_last()
            alone = rest_ms is None and len(lot.files) == 1  # a lot of one file is that file's story
            one = last if alone or (rest_ms is not None and rest_ms <= self.cfg.factor * expected) else None
            why = f"; all of it one file, {one}, which finished last" if one else ""
            return record(LOT_SLOW, expected,
                          f"lot {lot_id} ({size} files) took {format_duration_ms(duration_ms)} to finish after "
                          f"its last file came in; lots of its size usually take {format_duration_ms(expected)}"
                          f"{why}", one)
        return None


class LotTracker:
    """The backtest's lots: every closed file in, lot records out as lots go quiet."""

    def __init__(self, cfg: LotConfig | None = None) -> None:
        self.cfg = cfg or LotConfig()
        self._lots: dict[str, Lot] = {}
        self._judge = LotJudge(self.cfg)

    @property
    def judged(self) -> int:
        return self._judge.judged

    def observe(self, summary: TraceSummary) -> list[LotRecord]:
        """One closed file; returns the lot records that the time of its close made due."""
        out = self.advance(parse_rfc3339_us(summary.closed_at))
        lot_id = summary.lot
        if lot_id:
            self._lots[lot_id] = add_file(self._lots.get(lot_id), summary)
        return out

    def advance(self, t_us: int) -> list[LotRecord]:
        quiet = int(self.cfg.quiet_s * US_PER_S)
        # In the order they went quiet (then by id): the streaming job judges them in the same order.
        due = sorted((lot.last_us + quiet, lot_id) for lot_id, lot in self._lots.items() if t_us - lot.last_us >= quiet)
        records = (self._judge.judge(lot_id, self._lots.pop(lot_id)) for _, lot_id in due)
        return [r for r in records if r is not None]
