"""``benchmarks/zoo_lines.py``: each clearly slow stage beside the line that judged it."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from stagewatch.backtest import engine
from stagewatch.backtest.replay import replay
from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.kinds import SLOW_STAGE
from stagewatch.core.stages import StageOrder
from stagewatch.evaluation.scoring import score_kinds
from stagewatch.evaluation.zoo import Fault, random_pipeline, simulate_zoo
from stagewatch.logfiles import iter_lines

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "zoo_lines.py"


def _rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("zoo_lines", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_clearly_slow_stage_is_shown_with_the_line_that_judged_it(tmp_path: Path) -> None:
    seed, files = 5, 20_000
    base = random_pipeline(seed, max_files=files)
    stage = next(s.name for s in base.stages[1:] if not s.skip)
    # A mild slowdown: some of its clearly slow files are found, some are not.
    pipe = replace(base, faults=(Fault(SLOW_STAGE, (stage,), 1.7, 4000.0, 2400.0, "global", None),))
    simulate_zoo(pipe, tmp_path / f"zoo-{seed}")
    text = _script().explain(seed, tmp_path, files, "tail")
    assert engine.BaselineStore is BaselineStore  # the recording store was this run's only

    every, ambiguous = (_rows(tmp_path / f"zoo-{seed}" / f"{name}.jsonl") for name in ("labels", "ambiguous"))
    labels = [r for r in every if r["kind"] == SLOW_STAGE]
    anomalies: list[dict[str, object]] = []
    replay(iter_lines([str(tmp_path / f"zoo-{seed}" / "logs.jsonl")]), order=StageOrder.parse(pipe.order),
           cfg=engine.DetectorConfig(baseline=BaselineConfig(line="tail")),
           on_anomaly=lambda a: anomalies.append(a.to_dict()))
    scores = {s.kind: s for s in score_kinds(every, anomalies, ambiguous)[0]}
    hits = scores[SLOW_STAGE].tp
    assert f"{len(labels)} clearly slow stages, {hits} found" in text
    assert f"\n{scores[SLOW_STAGE].fp} false alerts\n" in text  # as the zoo counts them
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith(("| found", "| missed"))]
    assert len(rows) == len(labels) and 0 < hits < len(labels)
    # A file of a warm key, its clock not skewed, that was not flagged, took no longer than the line in force.
    missed = [r for r in rows if r[0] == "| missed" and r[7] != "-" and r[6] == "0 ms"]
    assert missed
    assert all(float(r[5]) <= float(r[7]) + 0.01 for r in missed), missed


def test_a_workdir_simulated_before_labels_carried_their_p999_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "zoo-5"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    row = {"uid": "z5-0000001", "kind": SLOW_STAGE, "stage": "a", "tenant": "t", "lot": "l",
           "time": "2026-03-02T01:00:00Z", "fault": None}
    (out / "labels.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    (out / "ambiguous.jsonl").write_bytes(b"")
    assert _script().main(["--seed", "5", "--workdir", str(tmp_path), "--max-files", "2000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "remove it, or give another --workdir" in err
