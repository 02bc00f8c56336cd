"""The scoring code behind `stagewatch evaluate delag|nab`, on hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from stagewatch.cli import main
from stagewatch.core.events import StageEvent
from stagewatch.core.parser import Parser
from stagewatch.evaluation.delag import DelagFile, read_delag, slowed_calls, to_log_lines
from stagewatch.evaluation.delag_eval import Tally, evaluate_delag
from stagewatch.evaluation.nab import (
    STANDARD,
    CostMatrix,
    episodes,
    evaluate_nab,
    probation_length,
    published_subset_scores,
    scaled_sigmoid,
    score_file,
)
from stagewatch.evaluation.peers import beam_flags, static_p99_flags

pytestmark = pytest.mark.unit


# -- NAB ------------------------------------------------------------------------------------------------------


def test_scaled_sigmoid_matches_nab_reference_points() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == -1.0


def test_probation_is_15_percent_capped_at_750_rows() -> None:
    assert probation_length(1000) == 150
    assert probation_length(4033) == 604
    assert probation_length(10_000) == 750


WINDOW = [(400, 409)]  # ten rows, in a series of 1000 (probation: rows 0-149)


@pytest.mark.parametrize(
    ("detections", "expected"),
    [
        ([], -1.0),  # missed window: -A_fn
        ([400], 1.0),  # first row of the window: the full A_tp
        ([409], (2 / (1 + math.exp(-0.5)) - 1) / scaled_sigmoid(-1.0)),  # p = -1/10: S = 2 sigmoid(0.5) - 1
        ([409, 402], (2 / (1 + math.exp(-5 * 0.8)) - 1) / scaled_sigmoid(-1.0)),  # the best (p = -0.8) counts
        ([100], -1.0),  # in probation: ignored, and the window is still missed
        ([200], -1.0 - 0.11),  # before any window: -A_fp
        ([400, 415], 1.0 + 0.11 * (2 / (1 + math.exp(5 * 6 / 9)) - 1)),  # after it: A_fp * S(6 / 9)
        ([400, 409 + 3 * 9], 1.0 - 0.11),  # three widths after: the full -A_fp
    ],
)
def test_window_scoring_by_hand(detections: list[int], expected: float) -> None:
    s = score_file(1000, detections, WINDOW, STANDARD)
    assert s.raw == pytest.approx(expected)
    assert (s.null, s.perfect, s.windows) == (-1.0, 1.0, 1)


def test_window_inside_probation_is_not_scored() -> None:
    s = score_file(1000, [], [(10, 20), (400, 409)], STANDARD)
    assert (s.windows, s.null, s.perfect, s.raw) == (1, -1.0, 1.0, -1.0)


def test_cost_matrix_weights_apply() -> None:
    s = score_file(1000, [200], WINDOW, CostMatrix(tp=1.0, fp=0.22, fn=2.0))
    assert s.raw == pytest.approx(-2.0 - 0.22)


def test_episodes_open_after_a_quiet_hour() -> None:
    assert episodes([5, 6, 7, 30, 31, 50], quiet_rows=12) == [5, 30, 50]
    assert episodes([5, 6, 7, 30, 31, 50], quiet_rows=20) == [5, 30]
    assert episodes([], quiet_rows=12) == []


def _fake_nab(root: Path, values: list[float], window: tuple[int, int]) -> None:
    (root / "data" / "realAWSCloudwatch").mkdir(parents=True)
    (root / "data" / "realKnownCause").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "results" / "scores").mkdir(parents=True)
    stamps = [f"2014-03-01 {h:02d}:{m:02d}:00" for h in range(24) for m in range(0, 60, 5)]
    names = ["realAWSCloudwatch/a.csv", "realKnownCause/ec2_request_latency_system_failure.csv"]
    for name in names:
        rows = "\n".join(f"{t},{v}" for t, v in zip(stamps, values, strict=False))
        (root / "data" / name).write_text("timestamp,value\n" + rows + "\n")
    win = [[stamps[window[0]] + ".000000", stamps[window[1]] + ".000000"]]
    (root / "labels" / "combined_windows.json").write_bytes(orjson.dumps(dict.fromkeys(names, win)))
    (root / "results" / "scores" / "good_standard_scores.csv").write_text(
        "Detector,Profile,File,Threshold,Score,TP,TN,FP,FN,Total_Count\n"
        + "".join(f"good,standard,{n},0.5,1.0,1,0,0,0,1\n" for n in names)
    )


def test_evaluate_nab_end_to_end_on_a_small_fake_corpus(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = list(100 + rng.normal(0, 3, 288))
    for k in range(200, 210):
        values[k] = 900.0  # a spike inside the window 195-215
    _fake_nab(tmp_path, values, (195, 215))
    res = evaluate_nab(tmp_path, "body")
    assert res["published"] == {"good": 100.0}
    assert all(f["windows"] == 1 and f["detected"] == 1 for f in res["files"])
    assert res["score"] > 50
    assert main(["evaluate", "nab", str(tmp_path), "--line", "body", "--markdown", str(tmp_path / "nab.md")]) == 0
    text = (tmp_path / "nab.md").read_text()
    assert "stagewatch:" in text and "but the body line" in text
    # Twelve values an hour give a key the 100 samples the tail line (the default) judges from only because a stage
    # under ``keep_n`` forgets more slowly (``core.forgetting``): about ten hours in, before the spike.
    tail = evaluate_nab(tmp_path)
    assert tail["line"] == "tail" and all(f["windows"] == 1 and f["detected"] == 1 for f in tail["files"])


def test_published_subset_normalisation(tmp_path: Path) -> None:
    _fake_nab(tmp_path, [1.0] * 288, (195, 215))
    names = ["realAWSCloudwatch/a.csv", "realKnownCause/ec2_request_latency_system_failure.csv"]
    # raw 1.0 per file, two windows in all: 100 * (2 - (-2)) / (2 - (-2))
    assert published_subset_scores(tmp_path, names) == {"good": 100.0}


# -- DeLag ----------------------------------------------------------------------------------------------------


def _delag_csv(path: Path, rows: int = 600, seed: int = 0) -> DelagFile:
    rng = np.random.default_rng(seed)
    a = rng.normal(10, 0.5, rows).round()
    b = rng.normal(30, 1.0, rows).round()
    labels = np.zeros(rows, dtype=int)
    labels[300::50] = 1
    a[labels == 1] += 40  # anomaly type 1 slows call a
    latency = a + b + 5
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("Latency,svc-a_call,svc-b_call,anomaly\n")
        for k in range(rows):
            f.write(f"{latency[k]:.0f},{a[k]:.0f},{b[k]:.0f},{labels[k]}\n")
    return read_delag(path)


def test_tally_counts_and_scores() -> None:
    t = Tally()
    t.add({0, 1, 2}, [1, 0, 1, 1])
    assert (t.tp, t.fp, t.fn) == (2, 1, 1)
    assert t.scores == pytest.approx((2 / 3, 2 / 3, 2 / 3))


def test_delag_file_becomes_log_lines_one_uid_per_request(tmp_path: Path) -> None:
    d = _delag_csv(tmp_path / "toy" / "000.csv")
    lines = to_log_lines(d)
    assert len(lines) == len(d.labels) * (2 + len(d.calls))
    parsed = [Parser().parse(line) for line in lines[:4]]
    assert all(type(p) is StageEvent for p in parsed)
    assert [p.stage for p in parsed] == ["request", "svc-a_call", "svc-b_call", "response"]  # type: ignore[union-attr]
    assert parsed[1].reported_ms == d.times[0, 0]  # type: ignore[union-attr]
    assert parsed[3].t_us - parsed[0].t_us == int(d.latency[0] * 1000)  # type: ignore[union-attr]
    assert slowed_calls(d) == {1: {"svc-a_call"}}


def test_static_p99_flags_rows_over_the_first_parts_p99() -> None:
    times = np.array([[1.0, 1.0]] * 99 + [[5.0, 1.0]] + [[1.0, 1.0]] * 100)
    d = DelagFile("x/0", ("a", "b"), np.ones(200), times, np.zeros(200, dtype=int))
    assert static_p99_flags(d, learn_fraction=0.5) == {99}


def test_evaluate_delag_with_beam_peers(tmp_path: Path) -> None:
    d = _delag_csv(tmp_path / "toy" / "000.csv", rows=400)
    res = evaluate_delag([str(tmp_path / "toy" / "000.csv")], beam=True)
    row = res.per_file[d.name]
    assert set(row) == {"stagewatch", "stagewatch, body line", "static p99", "Beam RobustZScore", "Beam ZScore"}
    sw = row["stagewatch"]
    assert sw.tp >= 1 and sw.named_right == sw.named
    assert row["Beam ZScore"].tp + row["Beam ZScore"].fn == int((d.labels != 0).sum())
    flags = beam_flags([str(tmp_path / "toy" / "000.csv")], "RobustZScore")
    assert set(flags) <= {d.name}


def test_evaluate_delag_cli_without_beam(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _delag_csv(tmp_path / "toy" / "000.csv")
    out = tmp_path / "delag.md"
    assert main(["evaluate", "delag", str(tmp_path / "toy" / "000.csv"), "--no-beam", "--markdown", str(out)]) == 0
    text = out.read_text()
    assert "| toy | stagewatch |" in text and "static p99" in text and "Beam" not in text
    assert main(["evaluate", "delag"]) == 2
    assert "required: CSV" in capsys.readouterr().err


def test_evaluate_delag_scores_requests_closer_together_when_asked(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _delag_csv(tmp_path / "toy" / "000.csv")
    out = tmp_path / "delag.md"
    assert main(["evaluate", "delag", str(tmp_path / "toy" / "000.csv"), "--no-beam", "--every", "0.25",
                 "--markdown", str(out)]) == 0
    text = out.read_text()
    assert "| toy | stagewatch, 0.25 s apart |" in text and "--every 0.25" in text
    for bad in ("0", "-1", "soon"):
        assert main(["evaluate", "delag", str(tmp_path / "toy" / "000.csv"), "--no-beam", "--every", bad]) == 2
    assert "--every" in capsys.readouterr().err
