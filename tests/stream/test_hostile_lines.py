"""Hostile lines through the streaming job (on the local runner): each rejected one dead-lettered with its reason
(blank ones counted, not dead-lettered), none changes a verdict about the other files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main
from stagewatch.evaluation.simulate import SHORT_FAULTS, SHORT_HOURS, SHORT_START, SimConfig, simulate_to_dir
from stagewatch.store.readers import read_table
from tests.hostile import hostile_lines, spliced, straggled

pytestmark = pytest.mark.pipeline


def _run(logs: Path, out: Path) -> tuple[set[tuple[str, str, str, str]], Counter[str]]:
    assert main(["run", "--input_file", str(logs), "--output_dir", str(out)]) == 0
    verdicts = {(a["kind"], a["uid"], a["stage"], a["event_time"]) for a in read_table(str(out), "anomalies")
                if not a["uid"].startswith("hostile-")}
    return verdicts, Counter(d["reason"] for d in read_table(str(out), "dead_letters"))


def test_hostile_lines_change_no_verdict_of_the_streaming_job(tmp_path: Path) -> None:
    simulate_to_dir(SimConfig(seed=5, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=3,
                              faults=SHORT_FAULTS), tmp_path)
    clean = tmp_path / "logs.jsonl"
    valid = clean.read_bytes().splitlines()
    template = next(e for e in map(orjson.loads, valid[:200]) if e.get("jsonPayload", {}).get("stage") == "detect")
    cases = hostile_lines(template)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"\n".join(spliced(valid, cases)) + b"\n")
    want, want_dead = _run(clean, tmp_path / "clean")
    got, dead = _run(mixed, tmp_path / "mixed")
    assert got == want and len(want) > 100
    rejected = Counter(outcome for _, outcome, _ in cases if outcome not in ("blank", "event"))
    assert dead - want_dead == rejected


def test_a_line_ahead_of_the_clock_makes_no_straggler_late_in_the_stream(tmp_path: Path) -> None:
    """As in the backtest (``tests/backtest/test_hostile_lines.py``): a line 55 s ahead, under the allowed lateness,
    sent four times (a repeat counts once, as the backtest's dedup takes it -- before, the four copies pulled the
    file source's watermark as four lines and the stream alone made the straggler late), does not pull the
    watermark past the rest's own times, and a straggler of a file that moved on stays on time."""
    simulate_to_dir(SimConfig(seed=5, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=3,
                              faults=SHORT_FAULTS), tmp_path)
    want_lines, got_lines = straggled((tmp_path / "logs.jsonl").read_bytes().splitlines(), 55, copies=4)
    (tmp_path / "want.jsonl").write_bytes(b"\n".join(want_lines) + b"\n")
    (tmp_path / "got.jsonl").write_bytes(b"\n".join(got_lines) + b"\n")
    want, want_dead = _run(tmp_path / "want.jsonl", tmp_path / "want")
    got, dead = _run(tmp_path / "got.jsonl", tmp_path / "got")
    assert dead == want_dead and got == want and len(want) > 100


def test_a_truncated_gz_is_run_up_to_the_break_and_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As the backtest does: every line before the break goes through the job and every output is written; the
    break is a dead letter (truncated_input, source read) and the exit status is 3; the anomalies are the
    backtest's of the same broken file."""
    import gzip

    simulate_to_dir(SimConfig(seed=5, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=3,
                              faults=SHORT_FAULTS), tmp_path)
    whole = gzip.compress((tmp_path / "logs.jsonl").read_bytes())
    broken = tmp_path / "logs.jsonl.gz"
    broken.write_bytes(whole[: len(whole) * 2 // 3])
    out = tmp_path / "out"
    assert main(["run", "--input_file", str(broken), "--output_dir", str(out)]) == 3
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "exit status 3" in err and "Traceback" not in err
    (damage,) = [d for d in read_table(str(out), "dead_letters") if d["reason"] == "truncated_input"]
    assert damage["detail"].startswith(str(broken)) and damage["source"] == "read"
    assert orjson.loads((out / "output-manifest.json").read_bytes())["complete"] is True
    ran = {(a["kind"], a["uid"], a["stage"], a["event_time"]) for a in read_table(str(out), "anomalies")}
    assert main(["replay", str(broken), "-o", str(tmp_path / "replayed.jsonl"), "--no-progress"]) == 3
    replayed = {(a["kind"], a["uid"], a["stage"], a["event_time"])
                for a in map(orjson.loads, (tmp_path / "replayed.jsonl").read_bytes().splitlines())}
    assert ran == replayed and len(ran) > 50


def test_junk_before_the_first_event_is_filed_alike_by_both_drivers(tmp_path: Path) -> None:
    """5,000 rejected lines before the first event: the first 4,096 are let go at the epoch (memory), the rest
    wait for the file's first clock -- in the streaming job as in the backtest (the stream kept them all and filed
    them at its first clock)."""
    simulate_to_dir(SimConfig(seed=5, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=2,
                              faults=SHORT_FAULTS), tmp_path)
    logs = tmp_path / "junk_first.jsonl"
    logs.write_bytes(b"".join(b"not json %d\n" % k for k in range(5000)) + (tmp_path / "logs.jsonl").read_bytes())
    assert main(["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "out")]) == 0
    assert main(["replay", str(logs), "-o", str(tmp_path / "a.jsonl"), "--dead-letters", str(tmp_path / "d.jsonl"),
                 "--no-progress"]) == 0
    ran = Counter((d["reason"], d["received_at"]) for d in read_table(str(tmp_path / "out"), "dead_letters"))
    replayed = Counter((d["reason"], d["received_at"])
                       for d in map(orjson.loads, (tmp_path / "d.jsonl").read_bytes().splitlines()))
    assert ran == replayed
    assert ran[("invalid_json", "1970-01-01T00:00:00.000000Z")] == 4096
