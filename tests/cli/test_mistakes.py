"""A newcomer's mistakes, walked through: each is one line on stderr saying what is wrong and what to type, exit
status 2 -- never a traceback, never a silent wrong result (issue 18)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main

pytestmark = pytest.mark.cli

SHARED_EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "logentry-example.json"
ORDER = "detect,upload,register,enqueue,download,analyse,store_result,lot_check"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mistakes")
    assert main(["simulate", str(out / "sim"), "--short", "--seed", "3", "--rate", "2"]) == 0
    return out / "sim"


def _mistakes(sim: Path, tmp: Path) -> list[tuple[list[str], str]]:
    logs = str(sim / "logs.jsonl")
    (tmp / "empty.json").write_bytes(b"")
    (tmp / "blank.json").write_bytes(b"\n  \n")
    (tmp / "photo.png").write_bytes(bytes(range(128, 256)) * 40)
    (tmp / "logs.zip").write_bytes(b"PK\x03\x04" + bytes(200))
    (tmp / "nothing").mkdir()
    (tmp / "wrong-type.toml").write_text("[detector]\nallowed_lateness_s = \"120\"\n")
    (tmp / "order-string.toml").write_text("[stages]\norder = \"detect,upload\"\n")
    for name, text in (("not-a-table", "baseline = 5\n"), ("field-number", "[fields]\nuid = 3\n"),
                       ("infinite", "[detector]\nttl_s = inf\n"), ("nan", "[detector]\nstall_factor = nan\n"),
                       ("factor", "[detector]\nstall_factor = 0.5\n")):
        (tmp / f"{name}.toml").write_text(text)
    typo = ORDER.replace("upload", "uplaod").split(",")
    (tmp / "typo.toml").write_text(f"[stages]\norder = {json.dumps(typo)}\n")
    out = str(tmp / "a.jsonl")
    return [
        (["replay", str(tmp / "missing.json"), "-o", out], "does not exist"),
        (["replay", str(tmp / "empty.json"), "-o", out], "is empty"),
        (["replay", str(tmp / "blank.json"), "-o", out], "is empty"),
        (["replay", str(tmp / "photo.png"), "-o", out], "is not text"),
        (["replay", str(tmp / "logs.zip"), "-o", out], "is a zip archive"),
        (["replay", str(tmp / "nothing"), "-o", out], "is a folder that has no files"),
        (["replay", logs, "-o", str(tmp)], "is a folder"),
        (["replay", logs, "-o", out, "--stages", "foo,bar"], "match 0 of the first"),
        (["replay", logs, "-o", out, "--stages", ",".join(reversed(ORDER.split(",")))], "files logged"),
        (["replay", logs, "-o", out, "--stages", "detect,,upload"], "none empty"),
        (["replay", logs, "-o", out, "--config", str(tmp / "typo.toml")], "the data has 'upload'"),
        (["replay", logs, "-o", out, "--config", str(tmp / "wrong-type.toml")], "no quotes around a number"),
        (["replay", logs, "-o", out, "--config", str(tmp / "order-string.toml")], "must be a list of stage names"),
        (["replay", logs, "-o", out, "--stall-factor", "abc"], "invalid float value"),
        (["replay", logs, "-o", out, "--config", str(tmp / "not-a-table.toml")], "baseline must be a table"),
        (["replay", logs, "-o", out, "--config", str(tmp / "field-number.toml")], "[fields] uid must be a dotted"),
        (["replay", logs, "-o", out, "--config", str(tmp / "infinite.toml")], "must be a finite number"),
        (["replay", logs, "-o", out, "--config", str(tmp / "nan.toml")], "must be a finite number"),
        (["replay", logs, "-o", out, "--config", str(tmp / "factor.toml")], "stall_factor must be at least 1"),
        (["replay", logs, "-o", out, "--stall-factor", "inf"], "--stall-factor must be at least 1"),
        (["run", "--input_file", logs, "--output_dir", logs], "is a file"),
        (["run", "--input-file", logs, "--output-dir", str(tmp / "o"), "--stages", "foo,bar"], "match 0"),
        (["run", "--input_file", str(tmp / "empty.json"), "--output_dir", str(tmp / "o")], "is empty"),
        (["replay", logs, "-o", out, "--warmup", "-5"], "--warmup must be at least 1 (samples)"),
        (["replay", logs, "-o", out, "--stall-factor", "0.5"], "--stall-factor must be at least 1"),
        (["run", "--input_file", logs, "--output_dir", str(tmp / "o"), "--stall_factor", "abc"], "(a factor)"),
        # Beam drops an option it does not know, with a warning in the log, and the job runs without it.
        (["run", "--input_file", logs, "--output_dir", str(tmp / "o"), "--alert-lin", "tail"],
         "--alert-lin is an option of neither stagewatch run nor Beam, which would drop it and run without it; "
         "did you mean --alert_line?"),
        (["run", "--input_file", logs, "--output_dir", str(tmp / "o"), "--stage=detect,upload"],
         "did you mean --stages?"),
        (["run", "--input_file", logs, "--output_dir", str(tmp / "o"), "--streamng"], "did you mean --streaming?"),
        (["run", "--input_file", logs, "--output_dir", str(tmp / "o"), "-o", "out"], "did you mean --output_dir"),
        (["run", "--input_file", logs, logs, "--output_dir", str(tmp / "o")], "is the value of no option"),
        (["run", "--input_file", logs, "--output_dir", str(tmp / "o"), "--streaming", "false"],
         "false is the value of no option"),
        (["run", "--input_file", logs, "--output_dir", str(tmp / "o"), "--", "--line", "tail"],
         "Beam reads no option after --"),
        (["run", "--input_subscription", "projects/p/subscriptions/s", "--output_topic",
          "projects/my-proj/topics/t"], "PROJECT: 6 to 30"),
        (["evaluate", "labels", logs, str(sim / "labels.jsonl")], "give LABELS first, then ANOMALIES"),
        (["evaluate", "labels", str(tmp / "missing.jsonl"), logs], "does not exist"),
        (["simulate", logs], "is a file"),
        (["report", str(tmp / "nothing"), "-o", str(tmp / "r.html")], "holds none of"),
    ]


def test_every_mistake_is_one_line_and_exit_2(sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in _mistakes(sim, tmp_path):
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("usage:")
                 and not line.startswith(" ")]
        assert code == 2, (argv, code, err)
        assert "Traceback" not in err and len(lines) == 1 and says in lines[0], (argv, err)


def test_run_takes_the_alert_line_by_replays_name_and_beams_options_as_they_come() -> None:
    from stagewatch.cli import build_parser
    from stagewatch.cli.run import pipeline_argv
    from stagewatch.stream.unread import unknown_flags

    args, extra = build_parser().parse_known_args(["run", "--input_file", "x", "--line", "tail", "--runner",
                                                   "DirectRunner", "--num_workers=2", "--streaming"])
    args.pipeline_args = extra
    assert args.alert_line == "tail" and "--alert_line=tail" in pipeline_argv(args)
    assert unknown_flags(extra) == [] and unknown_flags([*extra, "--num-workerz", "2"]) == ["--num-workerz", "2"]
    assert unknown_flags(["--experiments=a", "--experiments=b", "--setup_file", "./setup.py", "--save_main_session",
                          "--sdk_location", "-", "--project", "p", "--region", "europe-west1"]) == []
    for replay_name, ours in (("--half-life", "half_life_s"), ("--max-ahead", "max_ahead_s")):
        args, extra = build_parser().parse_known_args(["run", "--input_file", "x", replay_name, "60"])
        assert getattr(args, ours) == "60" and not extra


def test_force_runs_with_the_order_given_and_says_so(sim: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.jsonl"
    assert main(["replay", str(sim / "logs.jsonl"), "-o", str(out), "--stages", "foo,bar", "--force",
                 "--no-progress"]) == 0
    assert "--force: ran with the stages given although the stages given (foo,bar) match 0" in capsys.readouterr().err


@pytest.mark.parametrize("shape", ["pretty", "array", "folder_gz"])
def test_the_exports_people_have_replay_as_the_same_anomalies(shape: str, sim: Path, tmp_path: Path) -> None:
    """The same entries as JSON lines, pretty-printed one after another, as the array ``gcloud logging read
    --format=json`` prints, and as a folder of hourly .gz files: the same anomalies."""
    entries = []
    for raw in (sim / "logs.jsonl").read_bytes().splitlines():
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # the simulator's broken lines aside: a document cannot hold them
        if isinstance(entry, dict):
            entries.append(entry)
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    if shape == "pretty":
        target = tmp_path / "pretty.json"
        target.write_text("\n".join(json.dumps(e, indent=2) for e in entries))
    elif shape == "array":
        target = tmp_path / "array.json"
        target.write_text(json.dumps(entries, indent=2))
    else:
        target = tmp_path / "bucket" / "2026" / "06" / "06"
        target.mkdir(parents=True)
        half = len(entries) // 2
        for name, part in (("12:00:00_12:59:59_S0.json.gz", entries[:half]),
                           ("13:00:00_13:59:59_S0.json.gz", entries[half:])):
            (target / name).write_bytes(gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in part)))
        target = tmp_path / "bucket"
    want, got = tmp_path / "want.jsonl", tmp_path / "got.jsonl"
    assert main(["replay", str(lines), "-o", str(want), "--no-progress"]) == 0
    assert main(["replay", str(target), "-o", str(got), "--no-progress"]) == 0
    assert got.read_bytes() == want.read_bytes() and len(want.read_bytes().splitlines()) > 10


def test_the_shared_pretty_printed_example_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = tmp_path / "logentry-example.json"
    shutil.copy(SHARED_EXAMPLE, example)
    assert main(["replay", str(example), "-o", str(tmp_path / "a.jsonl"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 parsed" in err and "register" in err


def test_a_production_run_without_credentials_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Beam and the clients would retry, warn and print tracebacks for minutes (181 lines, five tracebacks)."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    code = main(["run", "--input_subscription", "projects/my-proj/subscriptions/logs", "--output_topic",
                 "projects/my-proj/topics/anomalies", "--bigquery_dataset", "my-proj.stagewatch", "--stages", "a,b,c",
                 "--runner", "DataflowRunner", "--project", "my-proj", "--region", "us-central1",
                 "--temp_location", "gs://my-bucket/tmp"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        "stagewatch run: error: no Google credentials for Dataflow, Pub/Sub, BigQuery: run gcloud auth "
        "application-default login (or set GOOGLE_APPLICATION_CREDENTIALS to a key file), or point at the "
        "emulators (PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST)"]


@pytest.mark.parametrize("command", ["replay", "simulate", "evaluate", "run", "notify-slack", "explain", "report",
                                     "bigquery"])
def test_every_command_has_help_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``run --help`` crashed (a "%" in a parameter's help); each help ends with an example to copy."""
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example: stagewatch " in out and "usage:" in out


def test_a_dry_run_builds_the_production_job_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 19: Beam's ``--dry_run true`` builds and translates the Dataflow job with no credentials, creates no
    table and submits nothing (it stopped with a DefaultCredentialsError traceback, creating tables)."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    code = main(["run", "--input_subscription", "projects/my-proj/subscriptions/logs", "--output_topic",
                 "projects/my-proj/topics/anomalies", "--bigquery_dataset", "my-proj.stagewatch", "--stages", "a,b,c",
                 "--runner", "DataflowRunner", "--project", "my-proj", "--region", "us-central1",
                 "--temp_location", "gs://my-bucket/tmp", "--dry_run", "true"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    assert "the job was built and nothing run (--dry_run)" in err and "stateful (Assemble, Dedup" in err


def test_an_error_naming_what_someone_else_wrote_is_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A path or a name in an error may come from elsewhere (a file name, a stage the data holds): its control
    characters are shown escaped, on one line."""
    assert main(["replay", str(tmp_path / "\x1b[2Jlogs\n.json"), "-o", str(tmp_path / "a.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b[2Jlogs\\n.json does not exist" in err and err.count("\n") == 1
