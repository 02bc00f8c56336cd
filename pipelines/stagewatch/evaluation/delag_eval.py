"""``stagewatch evaluate delag``: per-request precision / recall / F1 on DeLag files, stagewatch beside peers.

stagewatch runs with the defaults a user gets (the backtest over the file's log lines); a request counts as
flagged when any anomaly names its UID. "Named right" is the share of flagged anomalous requests whose most
severe slow stage is a call that request's anomaly type slowed (read off the data, ``delag.slowed_calls``).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.backtest.replay import replay
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.lines import DEFAULT_LINE, LINE_RULES
from stagewatch.core.records import Anomaly
from stagewatch.evaluation.delag import ROW_EVERY_S, read_delag, slowed_calls, to_log_lines
from stagewatch.evaluation.peers import BEAM_DETECTORS, beam_flags, static_p99_flags
from stagewatch.evaluation.scoring import prf

__all__ = ["Tally", "evaluate_delag", "markdown"]


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    named_right: int = 0
    named: int = 0

    def add(self, flagged: set[int], labels: list[int]) -> None:
        for k, lab in enumerate(labels):
            hit = k in flagged
            if lab and hit:
                self.tp += 1
            elif hit:
                self.fp += 1
            elif lab:
                self.fn += 1

    def merge(self, other: Tally) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.named_right += other.named_right
        self.named += other.named

    @property
    def scores(self) -> tuple[float, float, float]:
        return prf(self.tp, self.fp, self.fn)


@dataclass
class DelagResult:
    files: list[str] = field(default_factory=list)
    per_file: dict[str, dict[str, Tally]] = field(default_factory=dict)
    totals: dict[str, dict[str, Tally]] = field(default_factory=dict)  # system -> detector -> tally


def _stagewatch(path: str, line: str = DEFAULT_LINE, every_s: float = ROW_EVERY_S) -> tuple[set[int], Tally]:
    d = read_delag(path)
    index = {u: k for k, u in enumerate(d.uids)}
    worst: dict[int, Anomaly] = {}
    flagged: set[int] = set()

    def on_anomaly(a: Anomaly) -> None:
        k = index[a.uid]
        flagged.add(k)
        if a.kind == "slow_stage" and (k not in worst or (a.score or 0) > (worst[k].score or 0)):
            worst[k] = a

    replay(to_log_lines(d, every_s), on_anomaly=on_anomaly, cfg=DetectorConfig(baseline=BaselineConfig(line=line)))
    tally = Tally()
    labels = [int(x) for x in d.labels]
    tally.add(flagged, labels)
    slowed = slowed_calls(d)
    for k, a in worst.items():
        if labels[k]:
            tally.named += 1
            tally.named_right += a.stage in slowed.get(labels[k], set())
    return flagged, tally


def _beam_flags_cached(paths: list[str], detector: str, cache: Path | None) -> dict[str, set[int]]:
    """Beam's verdicts do not depend on stagewatch: keep them, keyed by detector and the files' contents."""
    if cache is None:
        return beam_flags(paths, detector)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    entry = cache / f"beam-{detector}-{digest.hexdigest()[:16]}.json"
    if entry.is_file():
        return {k: set(v) for k, v in orjson.loads(entry.read_bytes()).items()}
    flags = beam_flags(paths, detector)
    cache.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(orjson.dumps({k: sorted(v) for k, v in flags.items()}))
    return flags


def evaluate_delag(
    paths: list[str], beam: bool = True, cache: str | Path | None = None, spacings: tuple[float, ...] = ()
) -> DelagResult:
    """Every file scored by stagewatch (both lines) and the peers; ``spacings``: stagewatch again with the
    requests that many seconds apart instead of ``ROW_EVERY_S`` (a burst: how soon verdicts start)."""
    res = DelagResult(files=sorted(paths))
    cache_dir = Path(cache) if cache else None
    beam_by_detector = (
        {det: _beam_flags_cached(res.files, det, cache_dir) for det in BEAM_DETECTORS} if beam else {}
    )
    other = next(rule for rule in LINE_RULES if rule != DEFAULT_LINE)
    for path in res.files:
        d = read_delag(path)
        labels = [int(x) for x in d.labels]
        system = d.name.split("/")[0]
        _, sw = _stagewatch(path)
        row = {"stagewatch": sw, f"stagewatch, {other} line": _stagewatch(path, other)[1]}
        for every in spacings:
            row[f"stagewatch, {every:g} s apart"] = _stagewatch(path, every_s=every)[1]
        p99 = Tally()
        p99.add(static_p99_flags(d), labels)
        row["static p99"] = p99
        for det, flags in beam_by_detector.items():
            t = Tally()
            t.add(flags.get(d.name, set()), labels)
            row[f"Beam {det}"] = t
        res.per_file[d.name] = row
        totals = res.totals.setdefault(system, {})
        for name, t in row.items():
            totals.setdefault(name, Tally()).merge(t)
    return res


def markdown(res: DelagResult, command: str) -> str:
    lines = [
        "# DeLag: per-request detection, stagewatch beside its peers",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}; stagewatch with its default settings "
        f"(the {DEFAULT_LINE} line), and with the other line rule (docs/detection.md). Requests are "
        f"{ROW_EVERY_S:g} s apart unless a row says otherwise.",
        "A request is flagged when any of its calls (or its end-to-end latency) is; label = `anomaly != 0`.",
        "",
        "| system | detector | TP | FP | FN | precision | recall | F1 | slowed call named |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system, by_det in sorted(res.totals.items()):
        for name, t in by_det.items():
            p, r, f = t.scores
            named = f"{t.named_right / t.named:.3f}" if t.named else "–"
            lines.append(f"| {system} | {name} | {t.tp} | {t.fp} | {t.fn} | {p:.3f} | {r:.3f} | {f:.3f} | {named} |")
    lines += ["", "Per file (F1):", "", "| file | " + " | ".join(next(iter(res.per_file.values()))) + " |"]
    lines.append("|---|" + "---:|" * len(next(iter(res.per_file.values()))))
    for name, row in res.per_file.items():
        lines.append(f"| {name} | " + " | ".join(f"{t.scores[2]:.3f}" for t in row.values()) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(res: DelagResult, command: str, path: str | Path) -> None:
    Path(path).write_text(markdown(res, command), encoding="utf-8")
