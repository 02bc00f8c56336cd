"""``stagewatch evaluate nab``: the Numenta Anomaly Benchmark's standard-profile score, by NAB's own rules.

Each series (``realAWSCloudwatch/*`` and ``realKnownCause/ec2_request_latency_system_failure.csv``) is replayed
as one stage's duration stream: row ``k`` is a file whose ``metric`` stage reports the row's value as its
latency, at the row's timestamp. A row is a detection when stagewatch flags it (any anomaly on its UID).

Scoring follows NAB's sweeper (re-implemented here from its documented rules, not copied):

* the first ``min(floor(0.15 n), 750)`` rows are probationary and not scored;
* a window's score is its best detection: ``A_tp * S(p) / S(-1)`` with ``S(p) = 2 sigmoid(-5 p) - 1`` and
  ``p = -(right - i + 1) / width`` (earlier in the window is better), or ``-A_fn`` when nothing was detected;
* a detection outside every window costs ``A_fp * S(|i - prev_right| / (prev_width - 1))`` after a window
  (a negative number, smaller right after the window) and ``-A_fp`` before the first one;
* normalised: ``100 * (raw - null) / (perfect - null)`` over the whole set, where the null detector detects
  nothing (``-A_fn`` per window) and the perfect one detects every window at its first row (``+A_tp``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.backtest.replay import replay
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.lines import DEFAULT_LINE
from stagewatch.core.timeutil import US_PER_S, format_rfc3339

__all__ = [
    "STANDARD",
    "CostMatrix",
    "NabFile",
    "episodes",
    "evaluate_nab",
    "nab_files",
    "probation_length",
    "scaled_sigmoid",
    "score_file",
]


@dataclass(frozen=True)
class CostMatrix:
    tp: float
    fp: float
    fn: float


STANDARD = CostMatrix(tp=1.0, fp=0.11, fn=1.0)
QUIET_ROWS = 12  # an hour of 5-minute samples without a flag ends an episode


def scaled_sigmoid(position: float) -> float:
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_length(n: int, percent: float = 0.15) -> float:
    return min(math.floor(percent * n), percent * 5000)


@dataclass(frozen=True)
class FileScore:
    raw: float
    null: float
    perfect: float
    windows: int
    detected_windows: int
    false_positives: int


def score_file(n: int, detections: Sequence[int], windows: Sequence[tuple[int, int]], cost: CostMatrix) -> FileScore:
    """NAB score of one series: ``detections`` are row indices, ``windows`` inclusive (left, right) rows."""
    probation = probation_length(n)
    max_tp = scaled_sigmoid(-1.0)
    window_of: dict[int, int] = {}
    for k, (left, right) in enumerate(windows):
        for i in range(left, right + 1):
            window_of[i] = k
    # A window counts when any of its rows is past probation (NAB names probationary rows, not windows).
    scored_windows = {k for k, (left, right) in enumerate(windows) if right >= probation}
    best = {k: -cost.fn for k in scored_windows}
    fp_total = 0.0
    fps = 0
    for i in sorted(set(detections)):
        if i < probation:
            continue
        w = window_of.get(i)
        if w is not None:
            left, right = windows[w]
            width = right - left + 1
            score = scaled_sigmoid(-(right - i + 1) / width) * cost.tp / max_tp
            if w in best:
                best[w] = max(best[w], score)
            continue
        previous = [(left, right) for left, right in windows if right < i]
        if not previous:
            fp_total += -1.0 * cost.fp
        else:
            pl, pr = previous[-1]
            width = pr - pl + 1
            fp_total += scaled_sigmoid(abs(pr - i) / max(width - 1, 1)) * cost.fp
        fps += 1
    raw = sum(best.values()) + fp_total
    k = len(scored_windows)
    return FileScore(raw, -cost.fn * k, cost.tp * k, k, sum(1 for v in best.values() if v > 0), fps)


@dataclass(frozen=True)
class NabFile:
    name: str  # e.g. "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"
    times_us: list[int]
    values: list[float]
    windows: list[tuple[int, int]]  # inclusive row ranges

    def drops(self) -> list[bool]:
        """Per window: is the anomaly a drop (window mean below the mean of the rows before it)?"""
        out = []
        for left, right in self.windows:
            before = self.values[max(0, left - 288) : left] or self.values[:1]
            inside = self.values[left : right + 1]
            out.append(sum(inside) / len(inside) < sum(before) / len(before))
        return out


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text.strip() + "+00:00").timestamp() * US_PER_S)


def nab_files(root: str | Path, names: Sequence[str]) -> list[NabFile]:
    root = Path(root)
    windows = orjson.loads((root / "labels" / "combined_windows.json").read_bytes())
    files = []
    for name in names:
        with open(root / "data" / name, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        times = [_ts(r["timestamp"]) for r in rows]
        index = {t: i for i, t in enumerate(times)}
        wins = [(index[_ts(a)], index[_ts(b)]) for a, b in windows[name]]
        files.append(NabFile(name, times, [float(r["value"]) for r in rows], wins))
    return files


def episodes(flagged: Sequence[int], quiet_rows: int) -> list[int]:
    """The first flagged row of each episode: a flag after at least ``quiet_rows`` rows without one.

    NAB counts every detection outside a window as a false positive; a person counts an alert that stays on
    for an hour as one alert (what incidents do in the streaming job). A detection is where an episode opens.
    """
    out, last = [], -(10**9)
    for i in sorted(flagged):
        if i - last > quiet_rows:
            out.append(i)
        last = i
    return out


def stagewatch_flags(f: NabFile, line: str = DEFAULT_LINE) -> list[int]:
    """Rows stagewatch flags when the series is replayed as one stage's reported durations, with ``line``'s rule."""
    lines = []
    for k, (t, v) in enumerate(zip(f.times_us, f.values, strict=True)):
        uid = f"row-{k}"
        lines.append(orjson.dumps({"insertId": f"{k}-s", "timestamp": format_rfc3339(t),
                                   "jsonPayload": {"uid": uid, "stage": "start"}}))
        lines.append(orjson.dumps({"insertId": f"{k}-m", "timestamp": format_rfc3339(t + 1),
                                   "jsonPayload": {"uid": uid, "stage": "metric"},
                                   "httpRequest": {"latency": f"{max(v, 0.0) / 1000:.9f}s"}}))
    flagged: set[int] = set()
    replay(lines, on_anomaly=lambda a: flagged.add(int(a.uid.split("-")[1])),
           cfg=DetectorConfig(baseline=BaselineConfig(line=line)))
    return sorted(flagged)


def published_subset_scores(root: str | Path, names: Sequence[str]) -> dict[str, float]:
    """Each published detector's standard-profile score normalised over ``names`` (from its per-file scores)."""
    root = Path(root)
    wanted = set(names)
    windows = orjson.loads((root / "labels" / "combined_windows.json").read_bytes())
    out: dict[str, float] = {}
    for path in sorted((root / "results" / "scores").glob("*_standard_scores.csv")):
        raw = 0.0
        seen = set()
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r["File"] in wanted:
                    raw += float(r["Score"])
                    seen.add(r["File"])
        if seen != wanted:
            continue
        k = sum(len(windows[n]) for n in names)
        out[path.name.removesuffix("_standard_scores.csv")] = 100 * (raw + k) / (2 * k)
    return out


def evaluate_nab(root: str | Path, line: str = DEFAULT_LINE) -> dict[str, Any]:
    """NAB's standard-profile score of stagewatch with ``line``'s rule, per file, and the published detectors'.

    A series of five-minute samples is 12 values an hour: three hours' half-life would hold about 52 of them, which the
    body line judges from (30) and the tail line, the default, not (100); a key under 150 forgets at a week's half-life
    (``core.forgetting``), and the tail line judges a series from about ten hours in."""
    root = Path(root)
    aws = sorted(f"realAWSCloudwatch/{p.name}" for p in (root / "data" / "realAWSCloudwatch").glob("*.csv"))
    names = [*aws, "realKnownCause/ec2_request_latency_system_failure.csv"]
    per_file = []
    raw = null = perfect = 0.0
    for f in nab_files(root, names):
        s = score_file(len(f.values), episodes(stagewatch_flags(f, line), QUIET_ROWS), f.windows, STANDARD)
        raw, null, perfect = raw + s.raw, null + s.null, perfect + s.perfect
        per_file.append({"file": f.name, "raw": round(s.raw, 3), "windows": s.windows,
                         "detected": s.detected_windows, "false_positives": s.false_positives,
                         "drops": sum(f.drops())})
    score = 100 * (raw - null) / (perfect - null) if perfect > null else 0.0
    return {"score": score, "line": line, "files": per_file, "published": published_subset_scores(root, names)}


def markdown(res: dict[str, Any], command: str) -> str:
    import datetime

    lines = [
        "# NAB: standard-profile score, stagewatch beside the published detectors",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}; stagewatch with its default settings"
        + ("." if res["line"] == DEFAULT_LINE else f" but the {res['line']} line."),
        "Series: `realAWSCloudwatch/*` and `realKnownCause/ec2_request_latency_system_failure.csv`, each replayed",
        "as one stage's durations; a detection is the first flagged row of an episode (an hour without flags",
        "ends one). Published scores are each detector's per-file standard-profile scores from",
        "`results/scores`, normalised over the same series (null detector 0, perfect 100).",
        "",
        f"**stagewatch: {res['score']:.1f}**",
        "",
        "| detector (published) | score on these series |",
        "|---|---:|",
    ]
    for name, value in sorted(res["published"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {value:.1f} |")
    lines += [
        "",
        "stagewatch looks for slowness only: it flags values above their usual range, never below. "
        "Windows whose values drop (mean inside the window below the day before it) are counted per file in "
        "`drops`; those are anomalies stagewatch does not try to find.",
        "",
        "| series | windows | detected | false positives | drops | raw score |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in res["files"]:
        lines.append(
            f"| {f['file']} | {f['windows']} | {f['detected']} | {f['false_positives']} | {f['drops']} | {f['raw']} |"
        )
    return "\n".join(lines) + "\n"
