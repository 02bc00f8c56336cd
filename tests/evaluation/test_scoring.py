"""``stagewatch.evaluation.scoring``: precision / recall / F1 per anomaly kind, and stall detection delay."""

from __future__ import annotations

from typing import Any

import pytest

from stagewatch.core.kinds import KINDS
from stagewatch.evaluation.scoring import KindScore, prf, score_kinds

pytestmark = pytest.mark.unit


def by_kind(scores: list[KindScore]) -> dict[str, KindScore]:
    out = {s.kind: s for s in scores}
    assert len(out) == len(scores), "one score per kind"
    return out


def counts(score: KindScore) -> tuple[int, int, int]:
    return score.tp, score.fp, score.fn


# --- prf ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "expected"),
    [
        (8, 2, 2, (0.8, 0.8, 0.8)),
        (0, 0, 0, (1.0, 1.0, 1.0)),  # nothing to find, nothing found
        (10, 0, 0, (1.0, 1.0, 1.0)),
        (3, 1, 0, (0.75, 1.0, 2 * 0.75 / 1.75)),
        (1, 0, 3, (1.0, 0.25, 0.4)),
        (6, 4, 2, (0.6, 0.75, 2 * 0.6 * 0.75 / 1.35)),
        (0, 5, 0, (0.0, 1.0, 0.0)),  # nothing to find, but false alarms
        (0, 0, 5, (1.0, 0.0, 0.0)),  # nothing found, everything missed
        (0, 3, 4, (0.0, 0.0, 0.0)),  # no precision and no recall: F1 0, not a division by zero
    ],
)
def test_prf(tp: int, fp: int, fn: int, expected: tuple[float, float, float]) -> None:
    assert prf(tp, fp, fn) == pytest.approx(expected)


def test_kind_score_properties_and_dict() -> None:
    score = KindScore("stalled", tp=2, fp=1, fn=1)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(2 / 3)
    assert score.f1 == pytest.approx(2 / 3)
    assert score.to_dict() == {
        "kind": "stalled",
        "tp": 2,
        "fp": 1,
        "fn": 1,
        "precision": 0.6667,
        "recall": 0.6667,
        "f1": 0.6667,
    }


# --- score_kinds --------------------------------------------------------------------------------------------


def test_empty_inputs_score_every_kind_perfectly() -> None:
    scores, delay = score_kinds([], [])
    assert [s.kind for s in scores] == list(KINDS)
    assert all(counts(s) == (0, 0, 0) and s.f1 == 1.0 for s in scores)
    assert delay == {"n": 0, "median_s": None, "p95_s": None, "max_s": None}


def test_simple_matches_misses_and_false_positives() -> None:
    labels = [
        {"uid": "f1", "kind": "slow_stage", "stage": "ocr"},
        {"uid": "f2", "kind": "slow_stage", "stage": "scan"},
        {"uid": "f3", "kind": "failed", "stage": "index"},
    ]
    anomalies = [
        {"uid": "f1", "kind": "slow_stage", "stage": "ocr"},  # tp
        {"uid": "f9", "kind": "slow_stage", "stage": "ocr"},  # fp
        {"uid": "f3", "kind": "failed", "stage": "index"},  # tp
    ]
    s = by_kind(score_kinds(labels, anomalies)[0])
    assert counts(s["slow_stage"]) == (1, 1, 1)  # f2 missed
    assert counts(s["failed"]) == (1, 0, 0)
    assert counts(s["slow_trace"]) == (0, 0, 0)
    assert counts(s["stalled"]) == (0, 0, 0)


def test_duplicate_verdicts_of_one_kind_on_one_file_count_once() -> None:
    labels = [{"uid": "f1", "kind": "slow_stage", "stage": "ocr"}, {"uid": "f2", "kind": "slow_trace"}]
    anomalies = [
        {"uid": "f1", "kind": "slow_stage", "stage": "ocr"},
        {"uid": "f1", "kind": "slow_stage", "stage": "ocr"},
        {"uid": "f1", "kind": "slow_stage", "stage": "ocr"},
        {"uid": "f2", "kind": "slow_trace", "stage": "end_to_end"},
        {"uid": "f2", "kind": "slow_trace", "stage": "end_to_end"},
        {"uid": "f7", "kind": "slow_trace", "stage": "end_to_end"},  # a false positive ...
        {"uid": "f7", "kind": "slow_trace", "stage": "end_to_end"},  # ... repeated: still one
    ]
    s = by_kind(score_kinds(labels, anomalies)[0])
    assert counts(s["slow_stage"]) == (1, 0, 0)
    assert counts(s["slow_trace"]) == (1, 1, 0)


def test_duplicate_labels_count_once() -> None:
    labels = [{"uid": "f1", "kind": "failed", "stage": "scan"}] * 3
    s = by_kind(score_kinds(labels, [])[0])
    assert counts(s["failed"]) == (0, 0, 1)


@pytest.mark.parametrize("kind", ["slow_stage", "stalled"])
def test_stage_mismatch_is_a_miss_and_a_false_positive(kind: str) -> None:
    labels = [{"uid": "f1", "kind": kind, "stage": "ocr", "time": "2026-06-06T08:00:00Z"}]
    anomalies = [{"uid": "f1", "kind": kind, "stage": "index", "detected_at": "2026-06-06T08:05:00Z"}]
    scores, delay = score_kinds(labels, anomalies)
    score = by_kind(scores)[kind]
    assert counts(score) == (0, 1, 1)
    assert (score.precision, score.recall, score.f1) == (0.0, 0.0, 0.0)
    assert delay["n"] == 0  # a stall at the wrong stage has no detection delay


@pytest.mark.parametrize("kind", ["slow_stage", "stalled"])
def test_staged_kind_with_the_same_stage_matches(kind: str) -> None:
    labels = [{"uid": "f1", "kind": kind, "stage": "ocr", "time": "2026-06-06T08:00:00Z"}]
    anomalies = [{"uid": "f1", "kind": kind, "stage": "ocr", "detected_at": "2026-06-06T08:05:00Z"}]
    assert counts(by_kind(score_kinds(labels, anomalies)[0])[kind]) == (1, 0, 0)


def test_one_file_slow_at_two_stages_is_two_labels() -> None:
    labels = [
        {"uid": "f1", "kind": "slow_stage", "stage": "ocr"},
        {"uid": "f1", "kind": "slow_stage", "stage": "index"},
    ]
    anomalies = [{"uid": "f1", "kind": "slow_stage", "stage": "ocr"}]
    assert counts(by_kind(score_kinds(labels, anomalies)[0])["slow_stage"]) == (1, 0, 1)


@pytest.mark.parametrize(
    ("label_stage", "anomaly_stage"),
    [("end_to_end", "end_to_end"), (None, "end_to_end"), ("notify", "end_to_end"), ("x", None), (None, None)],
)
def test_slow_trace_matches_regardless_of_stage(label_stage: str | None, anomaly_stage: str | None) -> None:
    label: dict[str, Any] = {"uid": "f1", "kind": "slow_trace"}
    anomaly: dict[str, Any] = {"uid": "f1", "kind": "slow_trace"}
    if label_stage is not None:
        label["stage"] = label_stage
    if anomaly_stage is not None:
        anomaly["stage"] = anomaly_stage
    assert counts(by_kind(score_kinds([label], [anomaly])[0])["slow_trace"]) == (1, 0, 0)


def test_kinds_are_scored_separately() -> None:
    # Right file, wrong kind: a miss for one kind and a false positive for the other.
    labels = [{"uid": "f1", "kind": "slow_trace"}]
    anomalies = [{"uid": "f1", "kind": "slow_stage", "stage": "ocr"}]
    s = by_kind(score_kinds(labels, anomalies)[0])
    assert counts(s["slow_trace"]) == (0, 0, 1)
    assert counts(s["slow_stage"]) == (0, 1, 0)


def test_unknown_label_kinds_are_scored_after_the_known_ones() -> None:
    labels = [{"uid": "f1", "kind": "zz_custom"}, {"uid": "f2", "kind": "aa_custom"}]
    anomalies = [{"uid": "f1", "kind": "zz_custom"}]
    scores = score_kinds(labels, anomalies)[0]
    assert [s.kind for s in scores] == [*KINDS, "aa_custom", "zz_custom"]
    s = by_kind(scores)
    assert counts(s["zz_custom"]) == (1, 0, 0)
    assert counts(s["aa_custom"]) == (0, 0, 1)


def test_generators_are_accepted() -> None:
    labels = ({"uid": f"f{i}", "kind": "failed", "stage": "scan"} for i in range(4))
    anomalies = ({"uid": f"f{i}", "kind": "failed", "stage": "scan"} for i in range(2, 6))
    s = by_kind(score_kinds(labels, anomalies)[0])
    assert counts(s["failed"]) == (2, 2, 2)
    assert s["failed"].f1 == pytest.approx(0.5)


def test_hand_computed_mix_of_eight_two_two() -> None:
    labels = [{"uid": f"f{i}", "kind": "slow_trace"} for i in range(10)]
    anomalies = [{"uid": f"f{i}", "kind": "slow_trace"} for i in range(8)] + [
        {"uid": "x1", "kind": "slow_trace"},
        {"uid": "x2", "kind": "slow_trace"},
    ]
    score = by_kind(score_kinds(labels, anomalies)[0])["slow_trace"]
    assert counts(score) == (8, 2, 2)
    assert (score.precision, score.recall, score.f1) == pytest.approx((0.8, 0.8, 0.8))


# --- stall detection delay ----------------------------------------------------------------------------------


def _stall(
    uid: str, time: str, detected_at: str, stage: str = "ocr"
) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {"uid": uid, "kind": "stalled", "stage": stage, "time": time},
        {"uid": uid, "kind": "stalled", "stage": stage, "detected_at": detected_at},
    )


def test_stall_delay_single() -> None:
    label, anomaly = _stall("f1", "2026-06-06T08:00:00Z", "2026-06-06T08:05:30Z")
    scores, delay = score_kinds([label], [anomaly])
    assert counts(by_kind(scores)["stalled"]) == (1, 0, 0)
    assert delay == {"n": 1, "median_s": 330.0, "p95_s": 330.0, "max_s": 330.0}


def test_stall_delay_statistics() -> None:
    pairs = [
        _stall("f1", "2026-06-06T08:00:00Z", "2026-06-06T08:00:10Z"),
        _stall("f2", "2026-06-06T08:00:00Z", "2026-06-06T08:00:20Z"),
        _stall("f3", "2026-06-06T08:00:00.5Z", "2026-06-06T08:00:40.5Z"),  # 40 s
    ]
    labels = [p[0] for p in pairs]
    anomalies = [p[1] for p in pairs]
    _, delay = score_kinds(labels, anomalies)
    # numpy's linear percentile: 20 + 0.9 * (40 - 20) = 38
    assert delay == {"n": 3, "median_s": 20.0, "p95_s": 38.0, "max_s": 40.0}


def test_stall_delay_is_in_seconds_across_time_zones_and_fractions() -> None:
    # 09:00+09:00 is 00:00Z; detected 00:05:00.43Z → 300.43 s, rounded to one decimal.
    label, anomaly = _stall("f1", "2026-06-06T09:00:00+09:00", "2026-06-06T00:05:00.430000Z")
    _, delay = score_kinds([label], [anomaly])
    assert delay == {"n": 1, "median_s": 300.4, "p95_s": 300.4, "max_s": 300.4}


def test_stall_delay_uses_the_first_duplicate_verdict() -> None:
    label, first = _stall("f1", "2026-06-06T08:00:00Z", "2026-06-06T08:01:00Z")
    _, later = _stall("f1", "2026-06-06T08:00:00Z", "2026-06-06T08:09:00Z")
    scores, delay = score_kinds([label], [first, later])
    assert counts(by_kind(scores)["stalled"]) == (1, 0, 0)
    assert delay == {"n": 1, "median_s": 60.0, "p95_s": 60.0, "max_s": 60.0}


def test_stall_delay_only_counts_matched_stalls() -> None:
    matched = _stall("f1", "2026-06-06T08:00:00Z", "2026-06-06T08:02:00Z")
    missed_label = {"uid": "f2", "kind": "stalled", "stage": "ocr", "time": "2026-06-06T08:00:00Z"}
    false_alarm = {"uid": "f3", "kind": "stalled", "stage": "ocr", "detected_at": "2026-06-06T09:00:00Z"}
    other_kind = (
        {"uid": "f4", "kind": "slow_stage", "stage": "ocr", "time": "2026-06-06T08:00:00Z"},
        {"uid": "f4", "kind": "slow_stage", "stage": "ocr", "detected_at": "2026-06-06T10:00:00Z"},
    )
    scores, delay = score_kinds(
        [matched[0], missed_label, other_kind[0]], [matched[1], false_alarm, other_kind[1]]
    )
    assert counts(by_kind(scores)["stalled"]) == (1, 1, 1)
    assert delay == {"n": 1, "median_s": 120.0, "p95_s": 120.0, "max_s": 120.0}


def test_negative_stall_delay_is_reported_as_is() -> None:
    # A verdict stamped before the label time (clock skew between the simulator and the detector).
    label, anomaly = _stall("f1", "2026-06-06T08:00:10Z", "2026-06-06T08:00:00Z")
    _, delay = score_kinds([label], [anomaly])
    assert delay["max_s"] == -10.0


def test_a_file_flagged_slow_in_progress_then_stalled_there_is_scored_by_its_stall() -> None:
    labels = [{"uid": "s1", "kind": "stalled", "stage": "download", "time": "2026-06-06T12:00:00Z"},
              {"uid": "s2", "kind": "slow_stage", "stage": "download"}]
    anomalies = [
        {"uid": "s1", "kind": "slow_stage", "stage": "download", "measure": "in_progress"},  # not scored
        {"uid": "s1", "kind": "stalled", "stage": "download", "detected_at": "2026-06-06T12:01:00Z"},  # tp
        {"uid": "s2", "kind": "slow_stage", "stage": "download", "measure": "in_progress"},  # tp
        {"uid": "s3", "kind": "slow_stage", "stage": "download", "measure": "in_progress"},  # fp: no label
        {"uid": "s1", "kind": "slow_stage", "stage": "upload", "measure": "in_progress"},  # fp: another stage
    ]
    s = by_kind(score_kinds(labels, anomalies)[0])
    assert counts(s["stalled"]) == (1, 0, 0)
    assert counts(s["slow_stage"]) == (1, 2, 0)


def test_a_slow_file_declared_stalled_that_then_arrived_is_scored_by_its_slow_verdict() -> None:
    # A stage slowed 20x: its files pass the stall deadline (8x the line) and are declared stalled, then
    # arrive. The label says slow there; the arrival corrected the stall, so the stall is neither found nor
    # false -- unless the caller scores the first word only (no arrivals given), or the file had no label.
    labels = [{"uid": "a", "kind": "slow_stage", "stage": "analyse"},
              {"uid": "b", "kind": "slow_stage", "stage": "analyse"},
              {"uid": "c", "kind": "stalled", "stage": "analyse", "time": "2026-06-06T12:00:00Z"}]
    ambiguous = [{"uid": "e", "kind": "slow_stage", "stage": "analyse"}]
    stall = {"kind": "stalled", "stage": "analyse", "detected_at": "2026-06-06T12:10:00Z"}
    anomalies = [
        {"uid": "a", "kind": "slow_stage", "stage": "analyse", "measure": "in_progress"},  # tp
        {"uid": "a", **stall},  # arrived: not scored
        {"uid": "b", **stall},  # never arrived: a false stall (and b's slowness missed)
        {"uid": "c", **stall},  # tp
        {"uid": "d", **stall},  # arrived, but nothing was wrong with it: a false stall still
        {"uid": "e", **stall},  # arrived, ambiguous there (a little over the p99.9): a false stall still
        {"uid": "a", "kind": "stalled", "stage": "upload", "detected_at": "2026-06-06T12:20:00Z"},  # another stage
    ]
    first = by_kind(score_kinds(labels, anomalies, ambiguous)[0])
    assert counts(first["stalled"]) == (1, 5, 0)
    final = by_kind(score_kinds(labels, anomalies, ambiguous, arrived={"a", "d", "e"})[0])
    assert counts(final["stalled"]) == (1, 4, 0)
    assert counts(final["slow_stage"]) == counts(first["slow_stage"]) == (1, 0, 1)
