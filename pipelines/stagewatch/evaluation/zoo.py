"""A zoo of random pipelines the detector was not tuned on, with labels from each one's true normal distribution.

``stagewatch simulate`` writes one pipeline, the eight-stage one the thresholds were first fitted to. The zoo
draws a different pipeline from every seed: its shape (3-12 stages with random names, some optional -- skipped
at no cost by some files), each stage's normal durations from one of several families (lognormal with sigma
0.1-0.9, gamma, a two-mode mixture, a heavy Pareto tail, fast stages quantised to whole milliseconds), daily and
weekly seasonality (amplitude 0-2 on any stages), tenants with different shares, one chronically slow on one
stage, one service whose host clocks are skewed per tenant, a rate of 0.05-200 files/s, and faults of random
kind, magnitude (1.5-20x; or several stages 1.3-2x at once), duration (2 min-6 h) and scope (everyone, one
tenant, one lot).

Labels come from the distribution the simulator draws from, not from what a fault did: a stage duration above
1.5x the p99.9 of its normal distribution at that hour, for that tenant, is ``slow_stage`` (between the p99.9
and 1.5x: ambiguous, neither found nor missed); so is an end-to-end time against the p99.9 of the sum, for
``slow_trace``; a file a stall fault stopped is ``stalled`` at the stage it never reached, once the input
ends at least 12x that stage's p99.9 (and 10 s) after it stopped, plus the largest clock skew (sooner, no one
can tell it from a file in flight: the stall is ambiguous, and the file is a slow stage there if held past
1.5x the p99.9 plus the skew, unless an optional stage it may still be in comes first); one a failure fault
broke is ``failed`` there. Every label and every ambiguous case is written, so that scoring can leave the
ambiguous out (``scoring.score_kinds(..., ambiguous=...)``); a slow stage's with its true duration and the p99.9 it
was labelled against (``duration_ms``, ``p999_ms``), or how long a stalled file was held (``held_s``).

Time is bounded by ``max_files``: a pipeline's span is what its rate fills with that many files (at least 3 hours,
faults after the first; at most 36 hours); above ``max_files / 3 h`` the rate is lowered to fit, and the manifest
says so (``drawn_rate_per_s``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stagewatch.core.kinds import FAILED, SLOW_STAGE, SLOW_TRACE, STALLED
from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us

__all__ = ["CLEAR", "FAMILIES", "STALL_CLEAR", "ZooPipeline", "normal_p999_s", "random_pipeline", "simulate_zoo"]

FAMILIES = ("lognormal", "gamma", "mixture", "heavy_tail", "quantised")
CLEAR = 1.5  # a duration above CLEAR x the normal p99.9 is clearly slow; between the two, ambiguous
# A file a stall fault stopped is labelled stalled once it has been held STALL_CLEAR x its stage's normal p99.9
# by the input's end (the stall allowance, 8x, over the clearly slow line). Held for less, no one can tell a
# stall yet (ambiguous); held past CLEAR x the p99.9, it is clearly slow in that stage (``slow_stage``), which a
# verdict while a file is still in its stage finds.
STALL_CLEAR = 8 * CLEAR
MIN_STALL_S = 10.0  # no stall deadline is sooner (docs/detection.md): a fast stage's stall shows after this
_SYLLABLES = ("ka", "lo", "mi", "ner", "po", "qua", "ri", "sen", "tor", "vex", "wy", "zu", "bel", "dra", "fen")
_MC = 50_000  # Monte Carlo draws for an end-to-end p99.9
_START = "2026-03-02T00:00:00Z"  # a Monday
# A pipeline runs for hours before a fault: the zoo measures detection, not a cold start (issue 16's item 4 has a
# measure of its own). At least 3 hours, faults after the first hour.
_MIN_SPAN_S = 3 * 3600.0
_WARM_S = 3600.0


@dataclass(frozen=True)
class Stage:
    name: str
    service: str
    family: str
    median_s: float
    spread: float  # lognormal sigma; gamma: 1/shape; mixture: the second mode's factor; heavy tail: 1/alpha
    skip: float  # the share of files that skip it (0: required)
    daily: float  # seasonal amplitude: durations x (1 + daily x load(hour of day))
    weekly: float  # ... x (1 + weekly x workday)


@dataclass(frozen=True)
class Tenant:
    name: str
    share: float
    slow_stage: str | None  # a stage where this tenant is chronically slower: its own normal
    slow_factor: float
    skew_s: float  # its hosts' clock offset, on the skewed service


@dataclass(frozen=True)
class Fault:
    kind: str  # slow_stage (one stage or several), stalled, failed
    stages: tuple[str, ...]
    factor: float  # slowdown factor; for stalled / failed the share of files it hits
    start_s: float
    seconds: float
    scope: str  # global, tenant, lot
    key: str | None  # the tenant or lot

    def hits(self, t_s: float, tenant: str, lot: str) -> bool:
        if not self.start_s <= t_s < self.start_s + self.seconds:
            return False
        return self.scope == "global" or self.key == (tenant if self.scope == "tenant" else lot)


@dataclass(frozen=True)
class ZooPipeline:
    seed: int
    stages: tuple[Stage, ...]
    tenants: tuple[Tenant, ...]
    skewed_service: str
    rate_per_s: float
    drawn_rate_per_s: float  # before it was lowered to fit max_files
    hours: float
    faults: tuple[Fault, ...]

    @property
    def order(self) -> str:
        """The ``--stages`` text: optional stages marked with ``?``."""
        return ",".join(s.name + ("?" if s.skip else "") for s in self.stages)


def _load(hour_of_day: np.ndarray | float) -> Any:
    """Daily load in [0, 1]: quiet at 04:00, busiest at 16:00."""
    return (1 - np.cos(2 * np.pi * (np.asarray(hour_of_day) - 4.0) / 24)) / 2


def _season(stage: Stage, t_s: np.ndarray, t0_s: float) -> np.ndarray:
    hours = (t0_s + t_s) / 3600
    hour_of_day = np.floor(hours) % 24 + 0.5  # constant within an hour: the p99.9 "at that hour"
    workday = (np.floor(hours / 24) % 7 < 5).astype(float)
    return (1 + stage.daily * _load(hour_of_day)) * (1 + stage.weekly * workday)


def _unit(stage: Stage, rng: np.random.Generator, n: int) -> np.ndarray:
    """Normal durations at no seasonal load, in seconds (the family's shape times the stage's median)."""
    f, s = stage.family, stage.spread
    if f in ("lognormal", "quantised"):
        x = rng.lognormal(0.0, s, n)
    elif f == "gamma":
        x = rng.gamma(1 / s, s, n) / (1 - s / 3)  # median of Gamma(k, 1/k) ~ 1 - 1/(3k)
    elif f == "mixture":
        second = rng.random(n) < 0.25
        x = rng.lognormal(0.0, 0.2, n) * np.where(second, s, 1.0)
    else:  # heavy_tail: a Pareto tail above a lognormal body
        x = rng.lognormal(0.0, 0.25, n) * (1 + rng.pareto(1 / s, n) * 0.1)
    return x * stage.median_s


def _quantise(stage: Stage, seconds: np.ndarray) -> np.ndarray:
    if stage.family != "quantised":
        return seconds
    return np.maximum(np.round(seconds * 1000), 1) / 1000  # whole milliseconds, as a fast service logs them


def _name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if name not in taken:
            taken.add(name)
            return name


def random_pipeline(seed: int, max_files: int = 100_000) -> ZooPipeline:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 13))
    taken: set[str] = set()
    services = [_name(rng, taken) + "-svc" for _ in range(max(1, n // 3))]
    stages = []
    for k in range(n):
        family = str(rng.choice(FAMILIES))
        spread = {"lognormal": rng.uniform(0.1, 0.9), "gamma": rng.uniform(0.05, 0.5), "mixture": rng.uniform(2, 5),
                  "heavy_tail": rng.uniform(0.25, 0.4), "quantised": rng.uniform(0.2, 0.6)}[family]
        median = 10 ** rng.uniform(-2.7, -1.7) if family == "quantised" else 10 ** rng.uniform(-1, 1.8)
        optional = 0 < k < n - 1 and rng.random() < 0.15
        stages.append(Stage(
            name=_name(rng, taken), service=services[min(k * len(services) // n, len(services) - 1)],
            family=family, median_s=float(median), spread=float(spread),
            skip=float(rng.uniform(0.2, 0.6)) if optional else 0.0,
            daily=float(rng.uniform(0, 2)) if rng.random() < 0.4 else 0.0,
            weekly=float(rng.uniform(0, 1)) if rng.random() < 0.2 else 0.0))
    n_tenants = int(rng.integers(2, 9))
    shares = rng.dirichlet(np.ones(n_tenants))
    chronic = int(rng.integers(n_tenants)) if rng.random() < 0.5 else -1
    tenants = tuple(Tenant(
        name=_name(rng, taken), share=float(shares[i]),
        slow_stage=stages[int(rng.integers(1, n))].name if i == chronic else None,
        slow_factor=float(rng.uniform(2, 4)) if i == chronic else 1.0,
        skew_s=float(rng.uniform(-3, 3)) if rng.random() < 0.5 else 0.0) for i in range(n_tenants))
    drawn = float(10 ** rng.uniform(math.log10(0.05), math.log10(200)))
    span_s = min(max(max_files / drawn, _MIN_SPAN_S), 36 * 3600.0)
    rate = min(drawn, max_files / span_s)
    faults = []
    for _ in range(int(rng.integers(1, 5))):
        kind = str(rng.choice(["slow_stage", "slow_stage", "multi_slow", STALLED, FAILED]))
        seconds = float(min(10 ** rng.uniform(math.log10(120), math.log10(6 * 3600)), span_s / 3))
        start = float(rng.uniform(max(_WARM_S, span_s * 0.3), span_s - seconds))
        scope = str(rng.choice(["global", "global", "tenant", "lot"]))
        key = None
        if scope == "tenant":
            key = tenants[int(rng.integers(n_tenants))].name
        elif scope == "lot":
            key = "pending"  # the lot in flight at the fault's start, chosen when the files are drawn
        if kind == "multi_slow":
            picked = rng.choice(n - 1, size=min(n - 1, int(rng.integers(2, 5))), replace=False) + 1
            chosen = tuple(stages[int(i)].name for i in sorted(picked))
            faults.append(Fault(SLOW_STAGE, chosen, float(rng.uniform(1.3, 2.0)), start, seconds, scope, key))
        else:
            stage = stages[int(rng.integers(1, n))].name
            factor = float(10 ** rng.uniform(math.log10(1.5), math.log10(20))) if kind == SLOW_STAGE \
                else float(rng.uniform(0.2, 0.6))
            faults.append(Fault(kind, (stage,), factor, start, seconds, scope, key))
    skewed = services[0] if len(services) > 1 else ""
    return ZooPipeline(seed, tuple(stages), tenants, skewed, rate, drawn, span_s / 3600, tuple(faults))


def _p999(samples: np.ndarray) -> float:
    return float(np.quantile(samples, 0.999))


def normal_p999_s(pipe: ZooPipeline, stage: str) -> float:
    """A stage's normal p99.9 in seconds at no seasonal load and for a tenant not slow there (the labels' is this
    times the hour's and the tenant's scale)."""
    return _Truth(pipe, 0.0, pipe.seed).unit_p999[stage]


class _Truth:
    """The p99.9 of each stage and of the end-to-end time, at each hour and for each tenant. A stage's is its
    family's p99.9 (400,000 draws) times the hour's and the tenant's scale -- a quantile scales with its
    distribution, and rounding to whole milliseconds keeps quantiles in order; the end-to-end one is drawn for
    each hour and tenant (50,000 sums, optional stages skipped as often as they are)."""

    def __init__(self, pipe: ZooPipeline, t0_s: float, seed: int) -> None:
        self.pipe, self.t0_s = pipe, t0_s
        self.rng = np.random.default_rng(seed + 1)
        self.unit_p999 = {s.name: _p999(_unit(s, self.rng, 400_000)) for s in pipe.stages[1:]}
        self._e2e: dict[tuple[int, str], float] = {}

    def scale(self, stage: Stage, hour: int, tenant: Tenant) -> float:
        season = float(_season(stage, np.array([hour * 3600.0 + 1]), self.t0_s)[0])
        return season * (tenant.slow_factor if tenant.slow_stage == stage.name else 1.0)

    def stage(self, stage: Stage, hour: int, tenant: Tenant) -> float:
        return float(_quantise(stage, np.array([self.unit_p999[stage.name] * self.scale(stage, hour, tenant)]))[0])

    def e2e(self, hour: int, tenant: Tenant) -> float:
        key = (hour, tenant.name)
        if key not in self._e2e:
            total = np.zeros(_MC)
            for stage in self.pipe.stages[1:]:
                d = _quantise(stage, _unit(stage, self.rng, _MC) * self.scale(stage, hour, tenant))
                if stage.skip:
                    d = np.where(self.rng.random(_MC) < stage.skip, 0.0, d)
                total += d
            self._e2e[key] = _p999(total)
        return self._e2e[key]


def _files(pipe: ZooPipeline, rng: np.random.Generator) -> Iterator[tuple[float, Tenant, str]]:
    """(arrival second, tenant, lot) for every file."""
    span = pipe.hours * 3600
    n = int(rng.poisson(pipe.rate_per_s * span))
    arrivals = np.sort(rng.uniform(0, span, n))
    picks = rng.choice(len(pipe.tenants), size=n, p=[t.share for t in pipe.tenants])
    left: dict[str, int] = {}
    number: dict[str, int] = {}
    for t_s, i in zip(arrivals, picks, strict=True):
        tenant = pipe.tenants[int(i)]
        if left.get(tenant.name, 0) <= 0:
            number[tenant.name] = number.get(tenant.name, 0) + 1
            left[tenant.name] = int(rng.integers(5, 41))
        left[tenant.name] -= 1
        yield float(t_s), tenant, f"lot-{tenant.name}-{number[tenant.name]:05d}"


def simulate_zoo(pipe: ZooPipeline, outdir: Path) -> dict[str, Any]:
    """Write ``logs.jsonl`` (in delivery order), ``labels.jsonl``, ``ambiguous.jsonl`` and ``manifest.json``."""
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(pipe.seed)
    t0_us = parse_rfc3339_us(_START)
    t0_s = t0_us / US_PER_S
    truth = _Truth(pipe, t0_s, pipe.seed)
    faults = list(pipe.faults)
    lot_of_fault: dict[int, str] = {}
    lines: list[tuple[float, int, bytes]] = []
    labels: list[dict[str, Any]] = []
    ambiguous: list[dict[str, Any]] = []
    # Stall labels: (row, entered, normal p99.9 there, whether a verdict while still in the stage is possible --
    # not after an optional stage, which the file may still be in).
    stalls: list[tuple[dict[str, Any], float, float, bool]] = []
    normal_measures = 0
    seq = n = 0
    end_s = 0.0  # the last event's time: when the input ends, a stall either shows or it does not

    def label_row(uid: str, kind: str, stage: str, tenant: Tenant, lot: str, t_s: float,
                  fault: int | None, **measured: float) -> dict[str, Any]:
        # ``fault``: the index of the fault that made it (manifest's ``faults``); None for the normal tail.
        # ``measured``: a slow stage's true duration and the p99.9 it was labelled against (``duration_ms``,
        # ``p999_ms``), which no clock skew moves: what ``benchmarks/zoo_lines.py`` sets a line against.
        return {"uid": uid, "kind": kind, "stage": stage, "tenant": tenant.name, "lot": lot,
                "time": format_rfc3339(t0_us + int(t_s * US_PER_S)), "fault": fault,
                **{k: round(v, 3) for k, v in measured.items()}}

    def label(rows: list[dict[str, Any]], uid: str, kind: str, stage: str, tenant: Tenant, lot: str,
              t_s: float, fault: int | None, **measured: float) -> None:
        rows.append(label_row(uid, kind, stage, tenant, lot, t_s, fault, **measured))

    for arrival, tenant, lot in _files(pipe, rng):
        n += 1
        for i, f in enumerate(faults):  # a lot fault strikes the lot in flight when it starts
            if f.scope == "lot" and i not in lot_of_fault and arrival >= f.start_s:
                lot_of_fault[i] = lot
                faults[i] = Fault(f.kind, f.stages, f.factor, f.start_s, f.seconds, "lot", lot)
        uid = f"z{pipe.seed}-{n:07d}"
        t = arrival
        events: list[tuple[str, float, bool]] = [(pipe.stages[0].name, t, False)]
        total = 0.0
        touched: int | None = None  # the first fault that slowed one of its stages
        hour = int(t // 3600)
        skipped = False  # an optional stage skipped since the last one logged
        for stage in pipe.stages[1:]:
            if stage.skip and rng.random() < stage.skip:
                skipped = True
                continue
            stopped = next((i for i, f in enumerate(faults) if f.kind == STALLED and stage.name in f.stages
                            and f.hits(t, tenant.name, lot) and rng.random() < f.factor), None)
            if stopped is not None:
                stalls.append((label_row(uid, STALLED, stage.name, tenant, lot, t, stopped), t,
                               truth.stage(stage, int(t // 3600), tenant), not (skipped or stage.skip)))
                break
            scale = truth.scale(stage, int(t // 3600), tenant)
            normal = float(_quantise(stage, _unit(stage, rng, 1) * scale)[0])
            slowing = [i for i, f in enumerate(faults) if f.kind == SLOW_STAGE and stage.name in f.stages
                       and f.hits(t, tenant.name, lot)]
            factor = math.prod(faults[i].factor for i in slowing)
            cause = slowing[0] if slowing else None
            touched = cause if touched is None else touched
            duration = float(_quantise(stage, np.array([normal * factor]))[0])
            t += duration
            total += duration
            line = truth.stage(stage, int((t - duration) // 3600), tenant)
            if duration > line:
                label(labels if duration > CLEAR * line else ambiguous, uid, SLOW_STAGE, stage.name, tenant, lot, t,
                      cause, duration_ms=duration * 1000, p999_ms=line * 1000)
            elif factor == 1.0:
                normal_measures += 1
            broke_by = next((i for i, f in enumerate(faults) if f.kind == FAILED and stage.name in f.stages
                             and f.hits(t - duration, tenant.name, lot) and rng.random() < f.factor), None)
            broke = broke_by is not None
            events.append((stage.name, t, broke))
            skipped = False
            if broke:
                label(labels, uid, FAILED, stage.name, tenant, lot, t, broke_by)
                break
        else:
            line = truth.e2e(hour, tenant)
            if total > CLEAR * line:
                label(labels, uid, SLOW_TRACE, "end_to_end", tenant, lot, t, touched)
            elif total > line:
                label(ambiguous, uid, SLOW_TRACE, "end_to_end", tenant, lot, t, touched)
        for name, true_t, broke in events:
            end_s = max(end_s, true_t)
            stage = next(s for s in pipe.stages if s.name == name)
            skew = tenant.skew_s if stage.service == pipe.skewed_service else 0.0
            seq += 1
            entry = {
                "insertId": f"z{pipe.seed}-{seq:09d}",
                "timestamp": format_rfc3339(t0_us + int((true_t + skew) * US_PER_S)),
                "severity": "ERROR" if broke else "INFO",
                "logName": f"projects/zoo/logs/{stage.service}",
                "jsonPayload": {"uid": uid, "stage": name, "tenant": tenant.name, "lot": lot,
                                "message": f"{name} {'failed' if broke else 'done'}"},
            }
            delivered = true_t + min(float(rng.exponential(1.0)), 30.0)
            lines.append((delivered, seq, orjson.dumps(entry)))
            if rng.random() < 0.005:  # at least once: a duplicate now and then
                lines.append((delivered + float(rng.uniform(0.5, 20)), seq, orjson.dumps(entry)))
    # Held times are in true time; the logs carry the skewed service's offsets, which the margin covers.
    margin_s = max((abs(t.skew_s) for t in pipe.tenants), default=0.0) if pipe.skewed_service else 0.0
    for row, entered_s, p999, seen_in_stage in stalls:
        held = end_s - entered_s
        if held >= max(STALL_CLEAR * p999, MIN_STALL_S) + margin_s:
            labels.append(row)
            continue
        ambiguous.append(row)
        clear = seen_in_stage and held > CLEAR * p999 + margin_s
        (labels if clear else ambiguous).append({**row, "kind": SLOW_STAGE, "held_s": round(held, 3)})
    lines.sort()
    with open(outdir / "logs.jsonl", "wb") as out:
        out.writelines(line + b"\n" for _, _, line in lines)
    for name, rows in (("labels", labels), ("ambiguous", ambiguous)):
        (outdir / f"{name}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    manifest = {"pipeline": asdict(pipe), "order": pipe.order, "start": _START, "files": n,
                "lines": len(lines), "labels": len(labels), "ambiguous": len(ambiguous),
                "normal_stage_measures": normal_measures,
                "faults": [asdict(f) for f in faults]}
    (outdir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest
