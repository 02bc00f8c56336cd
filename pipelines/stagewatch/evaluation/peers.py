"""The detectors stagewatch is measured against, on the same per-stage durations.

* ``static_p99``: per stage, the 99th percentile of the first part of the data, fixed from then on — what a
  log-based alert on latency does.
* ``beam_flags``: Apache Beam's own ``apache_beam.ml.anomaly`` detectors (``RobustZScore``, ``ZScore``) keyed
  by stage, run through a real Beam pipeline on the DirectRunner. Imported lazily: the core never needs Beam.

Each returns, per DeLag file, the set of row indices it flags (a request is flagged when any of its calls, or
its end-to-end latency, is).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stagewatch.evaluation.delag import DelagFile, read_delag

__all__ = ["BEAM_DETECTORS", "beam_flags", "static_p99_flags"]

BEAM_DETECTORS = ("RobustZScore", "ZScore")


def static_p99_flags(d: DelagFile, learn_fraction: float = 0.2) -> set[int]:
    """Rows above any column's p99 of the first ``learn_fraction`` of rows (those rows are scored too)."""
    values = np.column_stack([d.times, d.latency])
    n = max(1, int(len(values) * learn_fraction))
    p99 = np.percentile(values[:n], 99, axis=0)
    return {int(k) for k in np.nonzero((values > p99).any(axis=1))[0]}


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
                p
                | "ListFiles" >> beam.Create(sorted(paths))
                | "ReadRows" >> beam.FlatMap(_rows)
                # AnomalyDetection needs a keyed type hint (see shared/design.md).
                | "Typed" >> beam.Map(lambda kv: kv).with_output_types(tuple[str, beam.Row])
                | "Detect" >> AnomalyDetection(model)
                | "Outliers" >> beam.Filter(lambda kv: any(pr.label == 1 for pr in kv[1].predictions))
                | "FileRow" >> beam.Map(lambda kv: f"{kv[0].split('|')[0]}\t{kv[1].example.row}")
                | "Write" >> beam.io.WriteToText(str(out))
            )
        flags: dict[str, set[int]] = {}
        for part in Path(tmp).glob("flags*"):
            for line in part.read_text(encoding="utf-8").splitlines():
                name, row = line.split("\t")
                flags.setdefault(name, set()).add(int(row))
    return flags
