"""The backtest driver: log files in, anomalies / trace summaries / dead letters out, a closing summary.

Reads plain, ``.gz`` or ``-`` (stdin) inputs line by line, parses with ``Parser``, and feeds the ``Detector``.
Without a given stage order it reads ahead ``infer_sample`` events, infers the order from them, then replays
from the first line (nothing is read twice; the sample is kept parsed in memory).
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson

from stagewatch.bigquery_tables import dead_letter_row
from stagewatch.detector import Detector, DetectorConfig
from stagewatch.events import Parser, Rejected, StageEvent
from stagewatch.records import KINDS, Anomaly, TraceSummary
from stagewatch.stages import StageOrder, infer_stage_order
from stagewatch.timeutil import format_rfc3339, parse_rfc3339_us
from stagewatch.traces import TraceRules

__all__ = ["ReplayStats", "iter_lines", "replay", "summary_text"]

INFER_SAMPLE = 20_000
_DRAIN_EVERY = 4096


@dataclass
class ReplayStats:
    lines: int = 0
    events: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    order: StageOrder | None = None
    order_inferred: bool = False
    seconds: float = 0.0

    @property
    def traces(self) -> dict[str, int]:
        return {s: self.counts.get(f"traces_{s}", 0) for s in ("complete", "stalled", "failed", "open")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "events": self.events,
            "rejected": dict(sorted(self.rejected.items())),
            "duplicates": self.counts.get("duplicates", 0),
            "late": self.counts.get("late", 0),
            "traces": self.traces,
            "anomalies": dict(self.anomalies),
            "counts": dict(sorted(self.counts.items())),
            "stage_order": str(self.order) if self.order else None,
            "stage_order_inferred": self.order_inferred,
            "seconds": round(self.seconds, 3),
        }


def _open_binary(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's loop
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def iter_lines(paths: Iterable[str], on_bytes: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """Lines of every input in turn, without line endings; empty lines skipped."""
    for path in paths:
        f = _open_binary(path)
        try:
            for line in f:
                if on_bytes is not None:
                    on_bytes(len(line))
                line = line.rstrip(b"\r\n")
                if line:
                    yield line
        finally:
            if f is not sys.stdin.buffer:
                f.close()


class _Writer:
    """JSON lines to a file (or stdout), written as they come."""

    def __init__(self, target: str | Path | None, default_stdout: bool = False) -> None:
        self._own = False
        self.f: IO[bytes] | None = None
        if target is None:
            self.f = sys.stdout.buffer if default_stdout else None
        elif str(target) == "-":
            self.f = sys.stdout.buffer
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            self.f = open(target, "wb")  # noqa: SIM115 - closed in close()
            self._own = True

    def write(self, obj: Any) -> None:
        if self.f is not None:
            self.f.write(orjson.dumps(obj))
            self.f.write(b"\n")

    def close(self) -> None:
        if self.f is not None:
            self.f.flush()
            if self._own:
                self.f.close()


def replay(
    lines: Iterable[bytes],
    *,
    order: StageOrder | None = None,
    parser: Parser | None = None,
    cfg: DetectorConfig | None = None,
    on_anomaly: Callable[[Anomaly], None] | None = None,
    on_summary: Callable[[TraceSummary], None] | None = None,
    on_dead_letter: Callable[[dict[str, Any]], None] | None = None,
    on_arrival: Callable[[str, str, int], None] | None = None,
    infer_sample: int = INFER_SAMPLE,
) -> ReplayStats:
    """Run the core over ``lines``. Callbacks receive records as they are made; ``on_arrival(uid, stage, t_us)``
    hears of a stalled file that logged again, in time order with the anomalies."""
    started = time.perf_counter()
    parser = parser or Parser()
    cfg = cfg or DetectorConfig()
    stats = ReplayStats()
    parse = parser.parse
    rejected = stats.rejected
    it = iter(lines)

    detector: Detector | None = None
    sample_newest = [-1]  # the newest event time while the sample for inference is read (no detector yet)
    held: list[Rejected] = []  # rejects before any event time is known

    def reject(r: Rejected) -> None:
        rejected[r.reason] = rejected.get(r.reason, 0) + 1
        if on_dead_letter is None:
            return
        # The shape of the dead_letters table; a line without a usable time is filed at the stream's newest
        # event time, as the streaming job files it -- held until there is one.
        seen = max(sample_newest[0], detector.max_seen if detector is not None else -1)
        if seen < 0:
            held.append(r)
            return
        flush_held(seen)
        on_dead_letter(dead_letter_row(r.reason, r.detail, r.line, format_rfc3339(seen), "parse"))

    def flush_held(t_us: int) -> None:
        if held and on_dead_letter is not None:
            for h in held:
                on_dead_letter(dead_letter_row(h.reason, h.detail, h.line, format_rfc3339(max(t_us, 0)), "parse"))
            held.clear()

    sample: list[StageEvent] = []
    if order is None:
        for raw in it:
            stats.lines += 1
            parsed = parse(raw)
            if type(parsed) is StageEvent:
                sample.append(parsed)
                sample_newest[0] = max(sample_newest[0], parsed.t_us)
                if len(sample) >= infer_sample:
                    break
            else:
                reject(parsed)  # type: ignore[arg-type]
        order = _infer(sample)
        stats.order_inferred = True
    stats.order = order
    detector = Detector(
        TraceRules(
            order, hold_s=cfg.hold_s, stall_factor=cfg.stall_factor, min_stall_s=cfg.min_stall_s, ttl_s=cfg.ttl_s
        ),
        cfg,
        keep_summaries=on_summary is not None,
    )
    out = detector.out
    push = detector.push

    def drain() -> None:
        arrivals = sorted(out.arrivals, key=itemgetter(2)) if on_arrival is not None else []
        out.arrivals.clear()
        if out.anomalies:
            for a in out.anomalies:
                stats.anomalies[a.kind] = stats.anomalies.get(a.kind, 0) + 1
                if arrivals and on_arrival is not None:
                    detected = parse_rfc3339_us(a.detected_at)
                    while arrivals and arrivals[0][2] < detected:
                        on_arrival(*arrivals.pop(0))
                if on_anomaly is not None:
                    on_anomaly(a)
            out.anomalies.clear()
        if on_arrival is not None:
            for arrival in arrivals:
                on_arrival(*arrival)
        if out.summaries:
            if on_summary is not None:
                for s in out.summaries:
                    on_summary(s)
            out.summaries.clear()
        if detector.late:
            for ev in detector.late:
                if on_dead_letter is not None:
                    on_dead_letter(_late_record(ev, detector.watermark))
            detector.late.clear()

    for ev in sample:
        push(ev)
    stats.events = len(sample)
    n_lines, n_events = stats.lines, stats.events
    for raw in it:
        n_lines += 1
        parsed = parse(raw)
        if type(parsed) is StageEvent:
            n_events += 1
            push(parsed)
            if not n_events % _DRAIN_EVERY:
                drain()
        else:
            reject(parsed)  # type: ignore[arg-type]
    detector.finish()
    flush_held(max(sample_newest[0], detector.max_seen))
    drain()
    stats.lines, stats.events = n_lines, n_events
    stats.counts = dict(out.counts)
    rejected_late = stats.counts.get("late", 0)
    if rejected_late:
        rejected["late"] = rejected_late
    stats.seconds = time.perf_counter() - started
    return stats


def _infer(sample: list[StageEvent]) -> StageOrder:
    by_uid: dict[str, list[tuple[int, str]]] = {}
    for ev in sample:
        by_uid.setdefault(ev.uid, []).append((ev.t_us, ev.stage))
    return infer_stage_order(by_uid.values())


def _late_record(ev: StageEvent, watermark: int) -> dict[str, Any]:
    behind_s = (watermark - ev.t_us) / 1e6
    return dead_letter_row(
        "late", f"event time {format_rfc3339(ev.t_us)} is {behind_s:.1f} s behind the watermark "
        f"{format_rfc3339(watermark)} (beyond the allowed lateness)", orjson.dumps(ev._asdict()).decode(),
        format_rfc3339(ev.t_us), "late")


def summary_text(stats: ReplayStats) -> str:
    """The closing summary a person reads on stderr."""

    def join(d: dict[str, int]) -> str:
        items = [f"{k} {v:,}" for k, v in d.items() if v]
        return " · ".join(items) if items else "none"

    c = stats.counts
    rate = stats.lines / stats.seconds if stats.seconds > 0 else 0.0
    how = "inferred from the data" if stats.order_inferred else "given"
    lines = [
        f"stagewatch replay: {stats.lines:,} lines in {stats.seconds:.1f} s ({rate:,.0f} lines/s)",
        f"  events     {stats.events:,} parsed · {c.get('duplicates', 0):,} duplicates · "
        f"{c.get('late', 0):,} late (dead-lettered)",
        f"  rejected   {sum(stats.rejected.values()):,}: {join(dict(sorted(stats.rejected.items())))}",
        f"  traces     {sum(stats.traces.values()):,}: {join(stats.traces)}",
        f"  anomalies  {sum(stats.anomalies.values()):,}: {join(stats.anomalies)}",
        f"  stages     {stats.order} ({how})",
    ]
    extras = {
        "clock-skew gaps clamped": c.get("negative_gaps", 0),
        "verdicts skipped in warm-up": c.get("verdicts_warmup", 0),
        "events after their file closed": sum(v for k, v in c.items() if k.startswith("after_")),
        "repeated stages": c.get("repeated_stage", 0),
        "unknown stages": c.get("unknown_stage", 0),
        "traces evicted (TTL)": c.get("traces_evicted", 0),
    }
    notes = [f"{v:,} {k}" for k, v in extras.items() if v]
    if notes:
        lines.append("  notes      " + " · ".join(notes))
    return "\n".join(lines)


def progress_reader(paths: list[str], enabled: bool) -> tuple[Iterator[bytes], Callable[[], None]]:
    """Lines with a byte-based progress bar on stderr (tqdm) when ``enabled``."""
    if not enabled:
        return iter_lines(paths), lambda: None
    from tqdm import tqdm

    total = 0
    for p in paths:
        if p == "-" or p.endswith(".gz"):
            total = 0
            break
        total += os.path.getsize(p)
    bar = tqdm(total=total or None, unit="B", unit_scale=True, desc="replay", file=sys.stderr, mininterval=0.5)
    pending = 0

    def on_bytes(n: int) -> None:
        nonlocal pending
        pending += n
        if pending >= 1 << 20:
            bar.update(pending)
            pending = 0

    def close() -> None:
        bar.update(pending)
        bar.close()

    return iter_lines(paths, on_bytes), close


def stderr_is_tty() -> bool:
    return isinstance(sys.stderr, io.TextIOBase) and sys.stderr.isatty()


def writer(target: str | Path | None, default_stdout: bool = False) -> _Writer:
    return _Writer(target, default_stdout)
