"""Synthetic stage-event streams for tests: small, seeded, with exactly the behaviour a test asks for."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from stagewatch.backtest.engine import Detector, DetectorConfig
from stagewatch.core.events import StageEvent
from stagewatch.core.records import Anomaly, TraceSummary
from stagewatch.core.stages import StageOrder
from stagewatch.core.traces import TraceRules

T0 = 1_780_000_000_000_000  # 2026-05-28T20:26:40Z, in microseconds
S = 1_000_000


@dataclass
class Pipeline:
    """Stage names with (median seconds, log sigma) of the wait before each stage after the first."""

    stages: tuple[str, ...]
    medians: dict[str, float]
    sigma: float = 0.25
    tenants: tuple[str, ...] = ("t1", "t2", "t3")
    extra: dict[str, float] = field(default_factory=dict)


def file_events(
    pipe: Pipeline,
    uid: str,
    start_us: int,
    rng: random.Random,
    factor: Callable[[str, int], float] = lambda stage, t: 1.0,
    drop_from: str | None = None,
    tenant: str | None = None,
) -> list[StageEvent]:
    """One file's events; ``factor(stage, t_us)`` scales a stage's wait; ``drop_from`` cuts the journey."""
    tenant = tenant or rng.choice(pipe.tenants)
    t = start_us
    out = [StageEvent(uid, pipe.stages[0], t, tenant, "lot-1", f"{uid}-0", False, None)]
    for i, stage in enumerate(pipe.stages[1:], 1):
        if stage == drop_from:
            break
        wait = pipe.medians[stage] * rng.lognormvariate(0, pipe.sigma) * factor(stage, t)
        t += int(wait * S)
        out.append(StageEvent(uid, stage, t, tenant, "lot-1", f"{uid}-{i}", False, wait * 1000))
    return out


def mixed_stream(pick: Callable[[int], Pipeline], n: int, every_s: float, rng: random.Random) -> list[StageEvent]:
    """``n`` files ``every_s`` apart from T0, the k-th along ``pick(k)``'s stages (files of one pipeline taking
    different paths: some skip an optional stage)."""
    events: list[StageEvent] = []
    for k in range(n):
        events += file_events(pick(k), f"f{k:05d}", T0 + int(k * every_s * S), rng)
    return events


def steady_stream(
    pipe: Pipeline,
    hours: float,
    every_s: float,
    seed: int = 0,
    factor: Callable[[str, int], float] = lambda stage, t: 1.0,
    drops: dict[str, str] | None = None,
) -> list[StageEvent]:
    """Files arriving every ``every_s`` seconds (jittered) for ``hours``, events sorted by event time."""
    rng = random.Random(seed)
    events: list[StageEvent] = []
    n = int(hours * 3600 / every_s)
    for k in range(n):
        uid = f"u{k:06d}"
        start = T0 + int((k * every_s + rng.uniform(0, every_s / 2)) * S)
        events.extend(file_events(pipe, uid, start, rng, factor, (drops or {}).get(uid)))
    events.sort(key=lambda e: e.t_us)
    return events


def burst(n: int = 2000, every_s: float = 0.25, slow_from: int = 200, slow_to: int = 260,
          ) -> tuple[Pipeline, list[StageEvent], int]:
    """Files ``every_s`` apart from the start of a baseline interval (returned); files ``slow_from`` to
    ``slow_to`` (in the first interval, before any baseline has a snapshot) 10x slower in "b"."""
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 1.0})
    rng = random.Random(8)
    start = T0 - T0 % (300 * S)

    def slow(k: int) -> Callable[[str, int], float]:
        return lambda stage, t: 10.0 if stage == "b" and slow_from <= k < slow_to else 1.0

    events = [e for k in range(n) for e in file_events(pipe, f"f{k:05d}", start + int(k * every_s * S), rng, slow(k))]
    events.sort(key=lambda e: e.t_us)
    return pipe, events, start


def diurnal(amplitude: float, period_h: float = 24.0) -> Callable[[str, int], float]:
    """Every stage slower in busy hours: 1x at the quietest, (1 + amplitude)x at the peak, smoothly."""

    def f(stage: str, t: int) -> float:
        phase = ((t - T0) / S / 3600) % period_h / period_h
        return 1.0 + amplitude * 0.5 * (1 - math.cos(2 * math.pi * phase))

    return f


def run(
    events: Iterable[StageEvent],
    stages: tuple[str, ...],
    cfg: DetectorConfig | None = None,
    optional: frozenset[str] = frozenset(),
) -> tuple[list[Anomaly], list[TraceSummary], Detector]:
    cfg = cfg or DetectorConfig()
    rules = TraceRules(
        StageOrder(stages, optional),
        hold_s=cfg.hold_s,
        stall_factor=cfg.stall_factor,
        min_stall_s=cfg.min_stall_s,
        ttl_s=cfg.ttl_s,
    )
    det = Detector(rules, cfg)
    for ev in events:
        det.push(ev)
    det.finish()
    assert det.out.summaries is not None
    return det.out.anomalies, det.out.summaries, det


# A small three-stage pipeline for tests that need a few real records.
PIPE_FOR_TABLES = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 1.0})
