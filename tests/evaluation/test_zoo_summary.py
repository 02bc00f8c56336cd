"""``benchmarks/zoo.py``'s summary: slow_stage split by how many clearly slow stages a pipeline has, and pooled."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "zoo.py"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("zoo_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pipeline(seed: int, tp: int, fp: int, fn: int) -> dict[str, Any]:
    precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    score = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": round(f1, 4)}
    nothing = {"tp": 0, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    return {"seed": seed, "stages": 4, "families": ["gamma"], "rate_per_s": 1.0, "drawn_rate_per_s": 1.0, "hours": 2.0,
            "faults": [], "scores": {"slow_stage": score}, "stalled_after_arrivals": nothing, "false_alerts": fp,
            "normal_stage_measures": 10_000, "first_verdict_s": [], "first_verdict_over_line_s": [],
            "incidents": 1, "peers": {}}


def test_a_pipeline_of_few_labels_is_told_apart_and_the_verdicts_are_pooled() -> None:
    zoo = _script()
    results = [
        _pipeline(1, tp=400, fp=2, fn=10),  # many labels
        _pipeline(2, tp=20, fp=0, fn=0),  # exactly FEW_LABELS: counts as many
        _pipeline(3, tp=5, fp=8, fn=0),  # few labels, a handful of false alerts
        _pipeline(4, tp=0, fp=0, fn=1),  # one label, missed
        _pipeline(5, tp=0, fp=0, fn=0),  # nothing of the kind: in neither
    ]
    split = zoo.summarise(results)["slow_stage_by_labels"]
    many, few = split["at_least_20_labels"], split["under_20_labels"]
    assert (many["n"], many["min"], many["median"]) == (2, 0.985, 0.993)
    assert (few["n"], few["min"], few["median"]) == (2, 0.0, 0.278)
    pooled = split["pooled"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (425, 10, 11)
    assert pooled["precision"] == round(425 / 435, 4) and pooled["recall"] == round(425 / 436, 4)
    text = zoo.markdown(results, zoo.summarise(results), "python benchmarks/zoo.py --seeds 1-5")
    assert "2 with at least 20, F1 median 0.993" in text and "(425 found, 10 false, 11 missed)" in text
