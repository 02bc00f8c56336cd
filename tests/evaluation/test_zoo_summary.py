"""``benchmarks/zoo.py``'s summary: slow_stage split by how many clearly slow stages a pipeline has, and pooled."""

from __future__ import annotations

from typing import Any

import pytest

from stagewatch.evaluation.scoring import prf
from tests import benchmark_scripts

pytestmark = pytest.mark.unit

def _script() -> Any:
    return benchmark_scripts.load("zoo")


def _pipeline(seed: int, tp: int, fp: int, fn: int) -> dict[str, Any]:
    precision, recall, f1 = prf(tp, fp, fn)
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
        _pipeline(6, tp=2, fp=30, fn=0),  # two labels: its false alerts are not labels
    ]
    split = zoo.summarise(results)["slow_stage_by_labels"]
    many, few = split["at_least_20_labels"], split["under_20_labels"]
    assert (many["n"], many["min"], many["median"]) == (2, 0.985, 0.993)
    assert (few["n"], few["min"], few["median"]) == (3, 0.0, 0.118)
    pooled = split["pooled"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (427, 40, 11)
    precision, recall = 427 / 467, 427 / 438
    assert (pooled["precision"], pooled["recall"]) == (round(precision, 4), round(recall, 4))
    assert pooled["f1"] == round(2 * precision * recall / (precision + recall), 4)
    text = zoo.markdown(results, zoo.summarise(results), "python benchmarks/zoo.py --seeds 1-6")
    assert "2 with at least 20, F1 median 0.993" in text and "(427 found, 40 false, 11 missed)" in text


def test_nothing_found_and_nothing_to_find_pools_as_the_per_pipeline_scores_do() -> None:
    zoo = _script()
    pooled = zoo.summarise([_pipeline(1, tp=0, fp=3, fn=0)])["slow_stage_by_labels"]["pooled"]
    assert (pooled["precision"], pooled["recall"], pooled["f1"]) == (0.0, 1.0, 0.0)  # three false alerts, no label
