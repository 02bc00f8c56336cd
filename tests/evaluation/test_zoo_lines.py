"""``benchmarks/zoo_lines.py``: each clearly slow stage beside the line that judged it."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

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
from tests import benchmark_scripts

pytestmark = pytest.mark.unit

def _rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _script() -> Any:
    return benchmark_scripts.load("zoo_lines")


def test_each_clearly_slow_stage_is_shown_with_the_line_that_judged_it(tmp_path: Path) -> None:
    seed, files = 5, 20_000
    base = random_pipeline(seed, max_files=files)
    # A stage after an optional one (quawy?): the waits of files that skipped it go to their path's baseline.
    stage = next(s.name for i, s in enumerate(base.stages[1:], 1) if not s.skip and base.stages[i - 1].skip)
    # A mild slowdown: some of its clearly slow files are found, some are not.
    pipe = replace(base, faults=(Fault(SLOW_STAGE, (stage,), 1.7, 4000.0, 2400.0, "global", None),))
    simulate_zoo(pipe, tmp_path / f"zoo-{seed}")
    script = _script()
    text = script.explain(pipe, tmp_path / f"zoo-{seed}", "tail")
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
    p999 = {(r["uid"], r["stage"]): r["p999_ms"] for r in labels}
    first: dict[tuple[object, object], object] = {}
    for a in anomalies:
        if a["kind"] == SLOW_STAGE:
            first.setdefault((a["uid"], a["stage"]), a["threshold_ms"])
    # The recorded line in force is the one a finished wait was flagged at, path keys and customers alike.
    finished = {(a["uid"], a["stage"]): a["threshold_ms"] for a in anomalies
                if a["kind"] == SLOW_STAGE and a["measure"] == "wait" and (a["uid"], a["stage"]) in p999}
    assert len(finished) >= 2
    assert all(script._Recording.in_force[k] == pytest.approx(v) for k, v in finished.items()), finished
    # A file found is shown at the line its verdict was drawn at (where no skewed clock lengthened its wait).
    found = [r for r in rows if r[0] == "| found" and r[7] == "0 ms"]
    assert len(found) >= hits // 2
    assert all(r[8] == f"{first[(r[1], r[3])] / p999[(r[1], r[3])]:.2f}" for r in found), found  # type: ignore[operator]
    # A file of a warm key that was not flagged took no longer than the line in force when its wait was judged --
    # its path's, for a file that skipped the optional stage before.
    missed = [r for r in rows if r[0] == "| missed" and r[8] not in ("-", "") and r[7] == "0 ms"]
    assert any("(after " in r[9] for r in missed) and any("(after " not in r[9] for r in missed), missed
    assert all(float(r[6]) <= float(r[8]) + 0.01 for r in missed), missed


@pytest.mark.parametrize(
    ("max_files", "says"),
    [(2000, "was simulated before its labels carried their p99.9"), (3000, "holds another pipeline than seed 5")],
)
def test_a_workdir_it_cannot_read_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], max_files: int, says: str
) -> None:
    out = tmp_path / "zoo-5"
    out.mkdir()
    # Seed 5 at 2,000 files, simulated by code whose labels had no p99.9; asked for at 3,000, another pipeline.
    manifest = {"pipeline": asdict(random_pipeline(5, max_files=2000)), "files": 2000}
    (out / "manifest.json").write_bytes(orjson.dumps(manifest))
    row = {"uid": "z5-0000001", "kind": SLOW_STAGE, "stage": "a", "tenant": "t", "lot": "l",
           "time": "2026-03-02T01:00:00Z", "fault": None}
    (out / "labels.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    (out / "ambiguous.jsonl").write_bytes(b"")
    assert _script().main(["--seed", "5", "--workdir", str(tmp_path), "--max-files", str(max_files)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "remove it, or give another --workdir" in err
