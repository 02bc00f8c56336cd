"""The command line as a person uses it: files, .gz, stdin, outputs, the closing summary, bad arguments."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main

pytestmark = pytest.mark.cli


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    assert main(["simulate", str(out), "--seed", "7", "--hours", "12", "--rate", "8"]) == 0
    return out


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def test_replay_plain_gz_and_stdin_agree(sim: Path, tmp_path: Path) -> None:
    logs = sim / "logs.jsonl"
    gz = tmp_path / "logs.jsonl.gz"
    gz.write_bytes(gzip.compress(logs.read_bytes()))
    assert main(["replay", str(logs), "-o", str(tmp_path / "a.jsonl"), "--traces", str(tmp_path / "t.jsonl"),
                 "--dead-letters", str(tmp_path / "d.jsonl"), "--summary-json", str(tmp_path / "s.json"),
                 "--processes", "1"]) == 0
    assert main(["replay", str(gz), "-o", str(tmp_path / "b.jsonl"), "--processes", "2"]) == 0
    done = subprocess.run(
        [sys.executable, "-m", "stagewatch", "replay", "-", "--no-progress"],
        input=logs.read_bytes(), capture_output=True, check=True,
    )
    plain = _lines(tmp_path / "a.jsonl")
    assert plain and plain == _lines(tmp_path / "b.jsonl")
    assert plain == [orjson.loads(x) for x in done.stdout.splitlines()]
    summary = done.stderr.decode()
    assert "stagewatch replay:" in summary and "rejected" in summary and "anomalies" in summary
    stats = orjson.loads((tmp_path / "s.json").read_bytes())
    assert sum(stats["traces"].values()) == len(_lines(tmp_path / "t.jsonl"))
    assert sum(stats["rejected"].values()) == len(_lines(tmp_path / "d.jsonl"))


def test_evaluate_prints_scores_per_kind(sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(sim / "logs.jsonl"), "-o", str(tmp_path / "a.jsonl")]) == 0
    capsys.readouterr()
    assert main(["evaluate", "labels", str(sim / "labels.jsonl"), str(tmp_path / "a.jsonl"), "--json"]) == 0
    scores = orjson.loads(capsys.readouterr().out)
    assert {k["kind"] for k in scores["kinds"]} >= {"slow_stage", "slow_trace", "stalled", "failed"}


def test_evaluate_reads_a_run_output_folder(sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``stagewatch run`` writes ``anomalies-<writer>.jsonl`` files; evaluate takes the folder as they are."""
    assert main(["replay", str(sim / "logs.jsonl"), "-o", str(tmp_path / "a.jsonl")]) == 0
    rows = (tmp_path / "a.jsonl").read_bytes().splitlines(keepends=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "anomalies-1.jsonl").write_bytes(b"".join(rows[: len(rows) // 2]))
    (run_dir / "anomalies-2.jsonl").write_bytes(b"".join(rows[len(rows) // 2:]))
    (run_dir / "traces-1.jsonl").write_bytes(b"{}\n")  # not anomalies: ignored
    capsys.readouterr()
    assert main(["evaluate", "labels", str(sim / "labels.jsonl"), str(tmp_path / "a.jsonl"), "--json"]) == 0
    from_file = orjson.loads(capsys.readouterr().out)
    assert main(["evaluate", "labels", str(sim / "labels.jsonl"), str(run_dir), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == from_file
    assert main(["evaluate", "labels", str(sim / "labels.jsonl"), str(tmp_path)]) == 2  # a folder without anomalies*
    assert "without anomalies" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["replay", "no-such-file.jsonl"], "does not exist"),
        (["replay", "-", "--stages", ","], "--stages needs"),
        (["replay", "-", "--config", "no-such.toml"], "does not exist"),
        (["replay", "-", "--processes", "2"], "standard input (-) is read in this process"),
        (["replay", "-", "--max-ahead", "0"], "--max-ahead) must be > 0"),
        (["replay", "-", "--max-age", "-1"], "--max-age) must be > 0"),
        (["replay", "-", "--line", "p99"], "invalid choice: 'p99'"),
        (["evaluate", "one.jsonl"], "invalid choice"),
        (["evaluate", "labels", "one.jsonl"], "required: ANOMALIES"),
        (["run", "--input_file", "no-such-file.jsonl", "--output_dir", "out"], "does not exist"),
        (["run", "--output_dir", "out"], "give exactly one input"),
        (["run", "--input_file", "x.jsonl", "--output_dir", "out", "--session_gap_s", "0"], "session_gap_s"),
    ],
)
def test_bad_arguments_get_a_clear_error(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_config_file_sets_stages_fields_and_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "stagewatch.toml"
    cfg.write_text('[stages]\norder = ["in", "out"]\n[fields]\nuid = "jsonPayload.file_id"\n'
                   '[detector]\nallowed_lateness_s = 5\n[baseline]\nhalf_life_s = 600\n')
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b"\n".join(
        orjson.dumps({"timestamp": f"2026-06-06T00:{k // 60:02d}:{k % 60:02d}Z",
                      "jsonPayload": {"file_id": f"f{k // 2}", "stage": ("in", "out")[k % 2]}})
        for k in range(200)
    ))
    assert main(["replay", str(logs), "--config", str(cfg), "-o", str(tmp_path / "a.jsonl"),
                 "--summary-json", str(tmp_path / "s.json")]) == 0
    stats = orjson.loads((tmp_path / "s.json").read_bytes())
    assert stats["stage_order"] == "in,out" and not stats["stage_order_inferred"]
    assert stats["traces"]["complete"] == 100
    bad = tmp_path / "bad.toml"
    bad.write_text("[baseline]\nhalflife = 1\n")
    assert main(["replay", str(logs), "--config", str(bad)]) == 2
    bad.write_text('[baseline]\nline = "p99"\n')
    assert main(["replay", str(logs), "--config", str(bad)]) == 2


def test_the_body_line_is_chosen_by_flag_or_config_alike(sim: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "body.toml"
    cfg.write_text('[baseline]\nline = "body"\n')
    logs = str(sim / "logs.jsonl")
    assert main(["replay", logs, "--line", "body", "-o", str(tmp_path / "flag.jsonl")]) == 0
    assert main(["replay", logs, "--config", str(cfg), "-o", str(tmp_path / "config.jsonl")]) == 0
    assert main(["replay", logs, "-o", str(tmp_path / "default.jsonl")]) == 0
    assert main(["replay", logs, "--line", "tail", "-o", str(tmp_path / "tail.jsonl")]) == 0
    flag, config = _lines(tmp_path / "flag.jsonl"), _lines(tmp_path / "config.jsonl")
    assert flag == config and flag
    # The rule is in force: its lines are not the tail rule's, which is the default.
    default = _lines(tmp_path / "default.jsonl")
    assert default == _lines(tmp_path / "tail.jsonl") and default
    assert {a["threshold_ms"] for a in flag} != {a["threshold_ms"] for a in default}


def test_the_report_without_matplotlib_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """matplotlib is the ``report`` extra's (no Dataflow worker needs it): without it, one line saying so."""
    import sys

    for name in [m for m in sys.modules if m.startswith(("matplotlib.", "stagewatch.investigate"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ModuleNotFoundError
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err == ("stagewatch report: error: the report draws its charts with matplotlib, which is not installed "
                   "here: pip install 'stagewatch[report]'\n")


def test_what_reaches_a_terminal_has_its_control_characters_escaped(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A trace written by someone else's job (or an older release) with an escape sequence in it: explain shows
    the sequence escaped, never sends it to the terminal."""
    from stagewatch.cli.common import for_terminal

    assert for_terminal("ok\nline\x1b[2J\u202e\x07") == "ok\nline\\x1b[2J\\u202e\\x07"
    assert for_terminal("plain text, naïve") == "plain text, naïve"
    evil = "f-1\x1b]0;owned\x07"
    row = {"uid": evil, "tenant": "acme\x1b[31m", "lot": None, "status": "complete",
           "first_time": "2026-06-06T10:00:00.000000Z", "last_time": "2026-06-06T10:00:05.000000Z",
           "end_to_end_ms": 5000.0, "missing_stages": [], "negative_gaps": 0,
           "closed_at": "2026-06-06T10:00:05.000000Z",
           "stages": [{"stage": "a\x1b[2J", "time": "2026-06-06T10:00:00.000000Z", "duration_ms": None,
                       "reported_ms": None, "verdict": "start"},
                      {"stage": "b", "time": "2026-06-06T10:00:05.000000Z", "duration_ms": 5000.0,
                       "reported_ms": None, "verdict": "ok"}]}
    (tmp_path / "traces.jsonl").write_bytes(orjson.dumps(row) + b"\n")
    assert main(["explain", evil, "--input", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b" in out
