"""The peers on a pipeline's stage durations (the zoo's ``--peers``): a series per stage, in time order."""

from __future__ import annotations

import random

import pytest

from stagewatch.evaluation.peers import beam_series_flags, static_p99_series_flags

pytestmark = pytest.mark.unit


def _series() -> list[tuple[str, str, float]]:
    rng = random.Random(3)
    rows = [(stage, f"{stage}{k}", rng.uniform(0.9, 1.1) * (10.0 if stage == "b" else 1.0))
            for k in range(300) for stage in ("a", "b")]
    rows.insert(500, ("a", "spike", 50.0))  # after the first fifth: judged against what came before
    return rows


def test_static_p99_flags_the_values_over_each_stages_early_p99() -> None:
    flagged = static_p99_series_flags(_series())
    assert ("a", "spike") in flagged
    # A tenth of a stage's values over its p99 would be a broken rule; a p99 flags about 1 %.
    assert len(flagged) <= 0.03 * 600 and {k for k, _ in flagged} <= {"a", "b"}


@pytest.mark.parametrize("detector", ["RobustZScore", "ZScore"])
def test_beams_detectors_run_per_stage_and_flag_the_spike(detector: str) -> None:
    flagged = beam_series_flags(_series(), detector)
    assert ("a", "spike") in flagged
    assert not any(row.startswith("a") and key == "b" for key, row in flagged)
