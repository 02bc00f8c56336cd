"""The backtest driver: log files in, anomalies / trace summaries / dead letters out, a closing summary.

Reads plain, ``.gz`` or ``-`` (stdin) inputs line by line. The front half -- parsing, the stage order
inferred from the first ``INFER_SAMPLE`` events when none is given, dedup, lateness and release in event-time
order -- is ``front``; here is the back half (``_Back``: the ``Detector``'s traces, timers and baselines, and
the callbacks) and the entry points: ``replay`` over lines in this process, ``replay_files`` over files,
with the front in a second process for large inputs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stagewatch.backtest.engine import Detector, DetectorConfig
from stagewatch.backtest.front import FrontSettings, FrontStats, run_front, run_front_in_child
from stagewatch.core.events import StageEvent
from stagewatch.core.kinds import KINDS
from stagewatch.core.measurements import Arrival
from stagewatch.core.parser import Parser
from stagewatch.core.records import Anomaly, DeadLetter, TraceSummary
from stagewatch.core.stages import INFER_SAMPLE, StageOrder
from stagewatch.core.timeutil import parse_rfc3339_us
from stagewatch.core.traces import TraceRules
from stagewatch.logfiles import Damage, iter_lines

__all__ = ["ReplayStats", "replay", "replay_files", "summary_text"]


@dataclass
class ReplayStats:
    """What a replay read and made. Every line is an event, a line the parser rejected (``rejected``, by reason;
    ``late`` there too, for the dead letters, though late lines are events) or a blank line:
    ``lines == events + sum(rejected) - late + blank``."""

    lines: int = 0
    events: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    blank: int = 0
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
            "blank": self.blank,
            "duplicates": self.counts.get("duplicates", 0),
            "late": self.counts.get("late", 0),
            "traces": self.traces,
            "anomalies": dict(self.anomalies),
            "counts": dict(sorted(self.counts.items())),
            "stage_order": str(self.order) if self.order else None,
            "stage_order_inferred": self.order_inferred,
            "seconds": round(self.seconds, 3),
        }


def _closed_time(s: TraceSummary) -> int:
    return parse_rfc3339_us(s.closed_at)


class _Back:
    """The back half of a backtest (see ``front``): the ``Detector``'s traces, timers and baselines over the
    released events, and the records they make handed to the callbacks."""

    def __init__(
        self,
        cfg: DetectorConfig,
        on_anomaly: Callable[[Anomaly], None] | None,
        on_summary: Callable[[TraceSummary], None] | None,
        on_dead_letter: Callable[[DeadLetter], None] | None,
        on_arrival: Callable[[Arrival], None] | None,
    ) -> None:
        self.cfg = cfg
        self.on_anomaly, self.on_summary, self.on_arrival = on_anomaly, on_summary, on_arrival
        self.on_dead_letter = on_dead_letter
        self.dead_letter = on_dead_letter or (lambda row: None)
        self.stats = ReplayStats()
        self.detector: Detector | None = None

    def front_settings(self, parser: Parser | None, order: StageOrder | None, infer_sample: int) -> FrontSettings:
        """What the front needs to drive this back: dead letters are made only when someone takes them."""
        return FrontSettings(parser or Parser(), self.cfg, order, self.on_dead_letter is not None, infer_sample)

    def finish(self, started: float) -> ReplayStats:
        self.stats.seconds = time.perf_counter() - started
        return self.stats

    def start(self, order: StageOrder | None, inferred: bool) -> None:
        self.stats.order, self.stats.order_inferred = order, inferred
        if order is None:  # no event in the whole input: nothing to trace
            return
        cfg = self.cfg
        rules = TraceRules(
            order, hold_s=cfg.hold_s, stall_factor=cfg.stall_factor, min_stall_s=cfg.min_stall_s, ttl_s=cfg.ttl_s
        )
        self.detector = Detector(rules, cfg, keep_summaries=self.on_summary is not None)

    def release(self, events: list[StageEvent], watermark: int) -> None:
        assert self.detector is not None, "events released before the stage order was known"
        self.detector.release(events, watermark)

    def drain(self) -> None:
        if self.detector is None:
            return
        out, stats, on_arrival, on_summary = self.detector.out, self.stats, self.on_arrival, self.on_summary
        # Closed files and stalled files' arrivals in time order among the anomalies, as the streaming job's
        # incident step hears them: a batch of released events can span many minutes, and the tracker's traffic
        # must not come after the anomalies it is the denominator of, nor a close move its clock past an
        # arrival not yet told. At one instant a close comes first, an arrival after the anomalies.
        side: list[tuple[int, int, TraceSummary | Arrival]] = []
        if on_summary is not None and out.summaries:
            side += [(_closed_time(s), 0, s) for s in out.summaries]
        if on_arrival is not None:
            side += [(a.t_us, 2, a) for a in out.arrivals]
        side.sort(key=lambda item: (item[0], item[1]))
        out.arrivals.clear()
        if out.summaries:
            out.summaries.clear()

        def tell(item: TraceSummary | Arrival) -> None:
            if isinstance(item, Arrival):
                on_arrival(item)  # type: ignore[misc]
            else:
                on_summary(item)  # type: ignore[misc]

        i = 0
        for a in out.anomalies:
            stats.anomalies[a.kind] = stats.anomalies.get(a.kind, 0) + 1
            detected = parse_rfc3339_us(a.detected_at)
            while i < len(side) and (side[i][0], side[i][1]) < (detected, 1):
                tell(side[i][2])
                i += 1
            if self.on_anomaly is not None:
                self.on_anomaly(a)
        out.anomalies.clear()
        for _, _, item in side[i:]:
            tell(item)

    def end_of_input(self) -> None:
        if self.detector is not None:
            self.detector.close_open()

    def end(self, front: FrontStats) -> None:
        stats = self.stats
        stats.lines, stats.events, stats.rejected, stats.blank = front.lines, front.events, front.rejected, front.blank
        stats.counts = dict(self.detector.out.counts) if self.detector is not None else {}
        for name, n in front.counts.items():
            stats.counts[name] = stats.counts.get(name, 0) + n
        if stats.counts.get("late"):
            stats.rejected["late"] = stats.counts["late"]


def replay(
    lines: Iterable[bytes],
    *,
    order: StageOrder | None = None,
    parser: Parser | None = None,
    cfg: DetectorConfig | None = None,
    on_anomaly: Callable[[Anomaly], None] | None = None,
    on_summary: Callable[[TraceSummary], None] | None = None,
    on_dead_letter: Callable[[DeadLetter], None] | None = None,
    on_arrival: Callable[[Arrival], None] | None = None,
    infer_sample: int = INFER_SAMPLE,
) -> ReplayStats:
    """Run the core over ``lines``. Callbacks receive records as they are made; ``on_arrival`` hears of a stalled
    file that logged again, in time order with the anomalies."""
    started = time.perf_counter()
    back = _Back(cfg or DetectorConfig(), on_anomaly, on_summary, on_dead_letter, on_arrival)
    run_front(lines, back.front_settings(parser, order, infer_sample), back)
    return back.finish(started)


def replay_files(
    paths: list[str],
    *,
    processes: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
    order: StageOrder | None = None,
    parser: Parser | None = None,
    cfg: DetectorConfig | None = None,
    on_anomaly: Callable[[Anomaly], None] | None = None,
    on_summary: Callable[[TraceSummary], None] | None = None,
    on_dead_letter: Callable[[DeadLetter], None] | None = None,
    on_arrival: Callable[[Arrival], None] | None = None,
    infer_sample: int = INFER_SAMPLE,
) -> ReplayStats:
    """``replay`` over files (``-`` for stdin). With ``processes=2`` the files are read, parsed and ordered
    in a second process while this one runs traces and baselines: the same records, in the same order, in
    about 60 % of the time on a machine with a core to spare. ``None`` picks 2 for inputs of
    ``TWO_PROCESSES_FROM`` bytes or more on a machine with two cores or more (not for stdin), else 1.
    ``on_bytes(n)`` hears of the bytes read, for a progress bar."""
    if processes is None:
        processes = default_processes(paths)
    if processes not in (1, 2):
        raise ValueError(f"processes must be 1 or 2, not {processes}")
    if processes == 2 and "-" in paths:
        raise ValueError("standard input (-) is read in this process: use processes=1")
    started = time.perf_counter()
    back = _Back(cfg or DetectorConfig(), on_anomaly, on_summary, on_dead_letter, on_arrival)
    settings = back.front_settings(parser, order, infer_sample)
    if processes == 1:
        damaged: list[Damage] = []
        run_front(iter_lines(paths, on_bytes, damaged), settings, back, damaged)
    else:
        run_front_in_child(paths, settings, back, on_bytes)
    return back.finish(started)


# Below this much input, starting a second interpreter (~0.3 s) costs more than it saves.
TWO_PROCESSES_FROM = 16 << 20


def default_processes(paths: list[str]) -> int:
    if "-" in paths or (os.cpu_count() or 1) < 2:
        return 1
    size = sum(os.path.getsize(p) * (8 if p.endswith(".gz") else 1) for p in paths)  # .gz: ~8x as read
    return 2 if size >= TWO_PROCESSES_FROM else 1


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
        f"  rejected   {sum(stats.rejected.values()):,}: {join(dict(sorted(stats.rejected.items())))}"
        + (f" · {stats.blank:,} blank lines" if stats.blank else ""),
        f"  traces     {sum(stats.traces.values()):,}: {join(stats.traces)}",
        f"  anomalies  {sum(stats.anomalies.values()):,}: {join(stats.anomalies)}",
        f"  stages     {stats.order} ({how})" if stats.order is not None else "  stages     none: no event",
    ]
    extras = {
        "clock-skew gaps clamped": c.get("negative_gaps", 0),
        "verdicts skipped in warm-up": c.get("verdicts_warmup", 0),
        "events after their file closed": sum(v for k, v in c.items() if k.startswith("after_")),
        "repeated stages": c.get("repeated_stage", 0),
        "unknown stages": c.get("unknown_stage", 0),
        "reported latencies unusable (dropped)": c.get("latencies_dropped", 0),
        "inputs truncated or corrupt (read up to the break)": c.get("truncated_input", 0),
        "traces evicted (TTL)": c.get("traces_evicted", 0),
    }
    notes = [f"{v:,} {k}" for k, v in extras.items() if v]
    if notes:
        lines.append("  notes      " + " · ".join(notes))
    return "\n".join(lines)
