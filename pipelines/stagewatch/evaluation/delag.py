"""DeLag request-latency data as a log stream, and per-request scoring of what the backtest flags.

A DeLag CSV (Traini and Cortellessa, TSE 2023; ``shared/data/delag``) has one row per end-to-end request: the
root response time ``Latency``, one column per remote call with the call's cumulative time in ms, and the
label ``anomaly`` (0 normal; 1 and 2 two injected performance problems). Rows carry no time.

As log lines, one request is one UID, laid out at a steady rate (``ROW_EVERY_S``): a ``request`` event at its
start, one event per call column whose ``httpRequest.latency`` is the call's time (events a microsecond
apart, so the waits between them carry nothing), and a ``response`` event at start + ``Latency`` that
reports ``Latency``. The backtest then judges every call by its reported latency and the request end to end.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from stagewatch.core.timeutil import US_PER_MS, US_PER_S, format_rfc3339

__all__ = ["ROW_EVERY_S", "DelagFile", "read_delag", "slowed_calls", "to_log_lines"]

ROW_EVERY_S = 10.0
START_US = 1_780_000_000 * US_PER_S  # 2026-05-28T20:26:40Z


@dataclass(frozen=True)
class DelagFile:
    name: str  # e.g. "trainticket/003"
    calls: tuple[str, ...]
    latency: np.ndarray  # (rows,) end-to-end ms
    times: np.ndarray  # (rows, calls) ms
    labels: np.ndarray  # (rows,) 0, 1, 2

    @property
    def uids(self) -> list[str]:
        return [f"{self.name.replace('/', '-')}-{k:06d}" for k in range(len(self.labels))]


def read_delag(path: str | Path) -> DelagFile:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [r for r in reader if r]
    if not header or header[0] != "Latency" or header[-1] != "anomaly":
        raise ValueError(f"{path} is not a DeLag CSV (expected Latency,...,anomaly columns)")
    try:
        data = np.asarray(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path} has a non-numeric cell: {exc}") from exc
    name = f"{path.parent.name}/{path.stem}"
    return DelagFile(name, tuple(header[1:-1]), data[:, 0], data[:, 1:-1], data[:, -1].astype(int))


def to_log_lines(d: DelagFile, every_s: float = ROW_EVERY_S) -> list[bytes]:
    """LogEntry JSON lines for every request of ``d``, in time order."""
    lines: list[bytes] = []
    step = int(every_s * US_PER_S)
    for k, uid in enumerate(d.uids):
        t0 = START_US + k * step
        lines.append(_entry(uid, "request", t0, None, k, 0))
        for c, call in enumerate(d.calls):
            lines.append(_entry(uid, call, t0 + c + 1, float(d.times[k, c]), k, c + 1))
        lines.append(_entry(uid, "response", t0 + int(d.latency[k] * US_PER_MS), float(d.latency[k]), k, 99))
    return lines


def _entry(uid: str, stage: str, t_us: int, latency_ms: float | None, row: int, seq: int) -> bytes:
    entry: dict[str, object] = {
        "insertId": f"{uid}-{seq}",
        "timestamp": format_rfc3339(t_us),
        "severity": "INFO",
        "jsonPayload": {"uid": uid, "stage": stage, "row": row},
    }
    if latency_ms is not None:
        entry["httpRequest"] = {"latency": f"{latency_ms / 1000:.6f}s", "status": 200}
    return orjson.dumps(entry)


def slowed_calls(d: DelagFile, ratio: float = 1.5) -> dict[int, set[str]]:
    """Per anomaly type, the calls it slowed: median in its rows at least ``ratio`` x the median in normal rows.

    The data set does not name them; this reads them off the data, for "is the named stage the slowed call".
    """
    normal = np.median(d.times[d.labels == 0], axis=0)
    out: dict[int, set[str]] = {}
    for kind in (1, 2):
        rows = d.times[d.labels == kind]
        if len(rows) == 0:
            continue
        med = np.median(rows, axis=0)
        out[kind] = {c for c, m, n in zip(d.calls, med, normal, strict=True) if m >= ratio * max(n, 1.0)}
    return out
