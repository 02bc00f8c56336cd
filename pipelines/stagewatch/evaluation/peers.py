"""The detectors stagewatch is measured against, on the same per-stage durations.

* ``static_p99``: per stage, the 99th percentile of the first part of the data, fixed from then on — what a
  log-based alert on latency does.
* ``beam_flags``: Apache Beam's own ``apache_beam.ml.anomaly`` detectors (``RobustZScore``, ``ZScore``) keyed
  by stage, run through a real Beam pipeline on the DirectRunner. Imported lazily: the core never needs Beam.

On DeLag each returns, per file, the set of row indices it flags (a request is flagged when any of its calls,
or its end-to-end latency, is); on the pipeline zoo (``*_series_flags``), the (stage, file) pairs it flags among
the stage durations of a run, each stage one series in time order.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stagewatch.evaluation.delag import DelagFile, read_delag

__all__ = ["BEAM_DETECTORS", "beam_flags", "beam_series_flags", "static_p99_flags", "static_p99_series_flags"]

BEAM_DETECTORS = ("RobustZScore", "ZScore")


def static_p99_flags(d: DelagFile, learn_fraction: float = 0.2) -> set[int]:
    """Rows above any column's p99 of the first ``learn_fraction`` of rows (those rows are scored too)."""
    values = np.column_stack([d.times, d.latency])
    n = max(1, int(len(values) * learn_fraction))
    p99 = np.percentile(values[:n], 99, axis=0)
    return {int(k) for k in np.nonzero((values > p99).any(axis=1))[0]}


def static_p99_series_flags(series: list[tuple[str, str, float]], learn_fraction: float = 0.2) -> set[tuple[str, str]]:
    """(key, id) of the (key, id, value) rows above their key's p99 of its first ``learn_fraction`` of rows (in
    the order given; those rows are scored too)."""
    by_key: dict[str, list[tuple[str, float]]] = {}
    for key, row, value in series:
        by_key.setdefault(key, []).append((row, value))
    flagged: set[tuple[str, str]] = set()
    for key, rows in by_key.items():
        values = np.array([v for _, v in rows])
        p99 = np.percentile(values[: max(1, int(len(values) * learn_fraction))], 99)
        flagged.update((key, rows[k][0]) for k in np.nonzero(values > p99)[0])
    return flagged


def _rows(path: str) -> Iterator[tuple[str, Any]]:
    import apache_beam as beam

    d = read_delag(path)
    columns = (*d.calls, "Latency")
    values = np.column_stack([d.times, d.latency])
    for k in range(len(values)):
        for c, name in enumerate(columns):
            yield f"{d.name}|{name}", beam.Row(value=float(values[k, c]), row=k)


def beam_flags(paths: list[str], detector: str) -> dict[str, set[int]]:
    """Run Beam's ``detector`` keyed by (file, column) over every row of every file; flagged rows per file."""
    import apache_beam as beam

    flags: dict[str, set[int]] = {}
    for key, row in _beam_outliers(lambda p: p | "ListFiles" >> beam.Create(sorted(paths))
                                   | "ReadRows" >> beam.FlatMap(_rows), detector):
        flags.setdefault(key.split("|")[0], set()).add(int(row))
    return flags


def beam_series_flags(series: list[tuple[str, str, float]], detector: str) -> set[tuple[str, str]]:
    """Run Beam's ``detector`` over (key, id, value) rows -- one series per key, in the order given (e.g. a
    pipeline's stage durations by completion time); the (key, id) pairs it flags."""
    import apache_beam as beam

    return set(_beam_outliers(
        lambda p: p | "Series" >> beam.Create([(k, beam.Row(value=v, row=i)) for k, i, v in series],
                                              reshuffle=False), detector))


def _beam_outliers(source: Callable[[Any], Any], detector: str) -> list[tuple[str, str]]:
    """(key, row id) of what ``detector`` flags among ``source(pipeline)``'s (key, Row(value, row)) pairs."""
    import apache_beam as beam
    from apache_beam.ml.anomaly.detectors.robust_zscore import RobustZScore
    from apache_beam.ml.anomaly.detectors.zscore import ZScore
    from apache_beam.ml.anomaly.transforms import AnomalyDetection
    from apache_beam.options.pipeline_options import PipelineOptions

    if detector not in BEAM_DETECTORS:
        raise ValueError(f"unknown Beam detector {detector!r}; choose from {BEAM_DETECTORS}")
    model = RobustZScore(features=["value"]) if detector == "RobustZScore" else ZScore(features=["value"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "flags"
        with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
            _ = (
                source(p)
                # AnomalyDetection needs a keyed type hint (see shared/design.md).
                | "Typed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, beam.Row])
                | "Detect" >> AnomalyDetection(model)
                | "Outliers" >> beam.Filter(lambda kv: any(pr.label == 1 for pr in kv[1].predictions))
                | "KeyRow" >> beam.Map(lambda kv: f"{kv[0]}\t{kv[1].example.row}")
                | "Write" >> beam.io.WriteToText(str(out))
            )
        found: list[tuple[str, str]] = []
        for part in Path(tmp).glob("flags*"):
            for line in part.read_text(encoding="utf-8").splitlines():
                key, row = line.rsplit("\t", 1)
                found.append((key, row))
    return found
