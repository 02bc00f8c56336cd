"""``ParseEvents``: raw lines or message bodies → ``StageEvent``s, and dead letters with the parser's reason.

Step names are labelled (``'VerbNoun' >> ...``) and must stay stable: a running Dataflow job can only be
updated in place (``--update``) when the new graph's names match the old one's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core.events import BLANK, REJECT_REASONS, StageEvent
from stagewatch.core.parser import Parser
from stagewatch.core.records import dead_letter
from stagewatch.core.timeutil import US_PER_S, format_rfc3339
from stagewatch.stream.steps.contain import ContainedStep, contained

__all__ = ["DEAD_LETTERS", "ParseEvents"]

DEAD_LETTERS = "dead_letters"


class _ParseFn(beam.DoFn):
    """Bytes in; a ``StageEvent`` stamped with its event time, or a dead letter with the reason (a blank line is
    counted, not dead-lettered)."""

    def __init__(self, parser: Parser, stamp: bool) -> None:
        self._parser = parser
        self._stamp = stamp
        self._parsed = Metrics.counter("stagewatch", "events_parsed")
        self._rejected = {r: Metrics.counter("stagewatch", f"rejected_{r}") for r in REJECT_REASONS}
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
            self._parsed.inc()
            # A file source has no event time of its own; Pub/Sub with the timestamp attribute already does.
            yield TimestampedValue(parsed, parsed.t_us / US_PER_S) if self._stamp else parsed
            return
        if parsed.reason == BLANK:
            self._blank.inc()
            return
        self._rejected[parsed.reason].inc()
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTERS, dead_letter(parsed.reason, parsed.detail, parsed.line, _rfc3339(ts), "parse"))


def _rfc3339(ts: Any) -> str:
    try:
        return format_rfc3339(int(Timestamp.of(ts).micros))
    except (TypeError, ValueError, OverflowError):
        return format_rfc3339(0)


class ParseEvents(ContainedStep):
    """Raw lines or message bodies → ``StageEvent`` (main) and dead letters (tagged ``DEAD_LETTERS``).

    ``stamp``: give each event its log timestamp as element time (for sources without one, like files).
    """

    def __init__(self, parser: Parser | None = None, stamp: bool = True) -> None:
        super().__init__()
        self._parser = parser or Parser()
        self._stamp = stamp

    def expand(self, lines: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return self.pardo(lines, "ParseLogEntries", _ParseFn(self._parser, self._stamp), outputs=(DEAD_LETTERS,),
                          main="events")
