"""``ParseEvents``: raw lines or message bodies → ``StageEvent``s, and dead letters with the parser's reason.

Step names are labelled (``'VerbNoun' >> ...``) and must stay stable: a running Dataflow job can only be
updated in place (``--update``) when the new graph's names match the old one's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from stagewatch.core.clock import TIME_REASONS, TimeBounds
from stagewatch.core.events import BLANK, REJECT_REASONS, StageEvent
from stagewatch.core.parser import Parser
from stagewatch.core.privacy import payload_chars
from stagewatch.core.records import dead_letter, event_json
from stagewatch.core.timeutil import US_PER_S, format_rfc3339
from stagewatch.stream.steps.contain import ContainedStep, contained

__all__ = ["DEAD_LETTERS", "ParseEvents"]

DEAD_LETTERS = "dead_letters"


class _ParseFn(beam.DoFn):
    """Bytes in; a ``StageEvent`` stamped with its event time, or a dead letter with the reason (a blank line is
    counted, not dead-lettered). An event time too far from the time the line arrived at (``core/clock.py``)
    is a dead letter too (``future``, ``too_old``), before any step keeps it or a watermark sees it."""

    def __init__(self, parser: Parser, stamp: bool, bounds: TimeBounds) -> None:
        self._parser = parser
        self._stamp = stamp
        self._bounds = bounds
        self._keep = payload_chars(parser.payload)  # of a rejected line, in its dead letter
        self._parsed = Metrics.counter("stagewatch", "events_parsed")
        self._rejected = {r: Metrics.counter("stagewatch", f"rejected_{r}") for r in REJECT_REASONS + TIME_REASONS}
        self._blank = Metrics.counter("stagewatch", "blank_lines")
        self._latencies_dropped = Metrics.counter("stagewatch", "latencies_dropped")
        self._dropped_seen = 0  # the parser's count when last looked at (a copy of this DoFn starts both at 0)

    @contained("Parse")
    def process(self, raw: bytes | str, ts: Any = beam.DoFn.TimestampParam) -> Iterator[Any]:
        parsed = self._parser.parse(raw)
        dropped = self._parser.latencies_dropped
        if dropped != self._dropped_seen:
            self._latencies_dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
        if isinstance(parsed, StageEvent):
            arrival = self._arrival_us(ts)
            reason = None if arrival is None else self._bounds.verdict(parsed.t_us, arrival)
            if reason is not None:
                assert arrival is not None
                self._rejected[reason].inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                    reason, self._bounds.detail(reason, parsed.t_us, arrival), event_json(parsed),
                    format_rfc3339(arrival), "parse"))
                return
            self._parsed.inc()
            # A file source has no event time of its own; Pub/Sub with the timestamp attribute already does.
            yield TimestampedValue(parsed, parsed.t_us / US_PER_S) if self._stamp else parsed
            return
        if parsed.reason == BLANK:
            self._blank.inc()
            return
        self._rejected[parsed.reason].inc()
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTERS, dead_letter(parsed.reason, parsed.detail, parsed.line, _rfc3339(ts), "parse", self._keep))

    def _arrival_us(self, ts: Any) -> int | None:
        """When the line arrived: from Pub/Sub (whose element time is the event time, from the timestamp
        attribute) the processing time; from a file, the time the file source stamped it with -- its robust
        clock. An element without a time (``beam.Create``) has no arrival time to judge by."""
        if not self._stamp:
            return int(time.time() * US_PER_S)
        if ts is None or ts == MIN_TIMESTAMP:
            return None
        return int(Timestamp.of(ts).micros)


def _rfc3339(ts: Any) -> str:
    try:
        return format_rfc3339(int(Timestamp.of(ts).micros))
    except (TypeError, ValueError, OverflowError):
        return format_rfc3339(0)


class ParseEvents(ContainedStep):
    """Raw lines or message bodies → ``StageEvent`` (main) and dead letters (tagged ``DEAD_LETTERS``).

    ``stamp``: give each event its log timestamp as element time (for sources without one, like files; the
    element time they come with is then when they arrived); else the source's element time is the event time
    and the processing time is when they arrived. ``bounds``: how far from that an event time may be.
    """

    def __init__(self, parser: Parser | None = None, stamp: bool = True, bounds: TimeBounds | None = None) -> None:
        super().__init__()
        self._parser = parser or Parser()
        self._stamp = stamp
        self._bounds = bounds or TimeBounds()

    def expand(self, lines: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        fn = _ParseFn(self._parser, self._stamp, self._bounds)
        return self.pardo(lines, "ParseLogEntries", fn, outputs=(DEAD_LETTERS,), main="events")
