"""Complete or marked: a stopped run or replay leaves a folder that ``report`` and ``explain`` call incomplete,
never one that passes for whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main
from stagewatch.store import manifest
from stagewatch.store.manifest import MANIFEST, PARTIAL, incomplete

pytestmark = pytest.mark.cli


def _row(uid: str) -> bytes:
    return orjson.dumps({"uid": uid, "kind": "slow_stage"}) + b"\n"


def test_a_manifest_says_whether_the_folder_is_whole(tmp_path: Path) -> None:
    assert incomplete(str(tmp_path)) is None  # nothing says otherwise: a folder from before manifests
    manifest.start(str(tmp_path), "stagewatch run")
    (tmp_path / "anomalies-1.jsonl").write_bytes(_row("a") + _row("b") + b"\n")
    said = incomplete(str(tmp_path))
    assert said and "incomplete" in said and "stagewatch run did not finish" in said
    assert manifest.finish(str(tmp_path), "stagewatch run") == {
        "anomalies": 2, "dead_letters": 0, "incidents": 0, "lots": 0, "traces": 0}
    assert incomplete(str(tmp_path)) is None
    with open(tmp_path / "anomalies-1.jsonl", "ab") as f:
        f.write(_row("c"))  # appended to after the run ended
    assert incomplete(str(tmp_path)) == (f"{tmp_path} changed after stagewatch run finished: anomalies 3 rows, "
                                         "stagewatch run wrote 2")
    (tmp_path / MANIFEST).write_bytes(b'{"complete": tr')
    assert "is not JSON" in (incomplete(str(tmp_path)) or "")


def test_a_replay_stopped_halfway_leaves_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs are written as ``<name>.partial`` and renamed once the replay is over; a previous run's file of the
    same name stays as it was until then, and the folder is marked by the partial files."""
    from stagewatch.backtest import replay as replay_module

    out = tmp_path / "out"
    out.mkdir()
    logs = tmp_path / "logs.jsonl"
    assert main(["simulate", str(tmp_path / "sim"), "--short", "--seed", "31", "--rate", "2"]) == 0
    logs.write_bytes((tmp_path / "sim" / "logs.jsonl").read_bytes())
    argv = ["replay", str(logs), "-o", str(out / "anomalies.jsonl"), "--traces", str(out / "traces.jsonl"),
            "--no-progress"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["anomalies.jsonl", "traces.jsonl"]
    whole = (out / "anomalies.jsonl").read_bytes()
    assert whole and incomplete(str(out)) is None

    real = replay_module.replay_files

    def interrupted(*args: object, **kwargs: object) -> object:
        real(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # Ctrl-C just before the end

    monkeypatch.setattr(replay_module, "replay_files", interrupted)
    assert main(argv) == 130
    # The earlier run's files stay as they were until a run is whole; this one's are left beside them, marked.
    assert sorted(p.name for p in out.iterdir()) == ["anomalies.jsonl", "anomalies.jsonl" + PARTIAL,
                                                      "traces.jsonl", "traces.jsonl" + PARTIAL]
    assert (out / ("anomalies.jsonl" + PARTIAL)).read_bytes() == whole  # kept, for whoever wants to look
    said = incomplete(str(out))
    assert said and "anomalies.jsonl.partial, traces.jsonl.partial" in said and "did not finish" in said
    monkeypatch.setattr(replay_module, "replay_files", real)
    assert main(argv) == 0  # run again: whole again (the partial files are replaced, then renamed)
    assert sorted(p.name for p in out.iterdir()) == ["anomalies.jsonl", "traces.jsonl"]


def test_a_killed_replay_is_reported_as_incomplete(tmp_path: Path) -> None:
    """SIGKILL (no handler runs) while the replay reads from a pipe: what is left is marked by its names alone,
    and ``report`` and ``explain`` say so before anything else."""
    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen([sys.executable, "-m", "stagewatch", "replay", "-", "-o", str(out / "anomalies.jsonl"),
                              "--traces", str(out / "traces.jsonl"), "--no-progress"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert child.stdin is not None
    child.stdin.write(b'{"timestamp": "2026-06-06T12:00:00Z", "jsonPayload": {"uid": "f-1", "stage": "upload"}}\n')
    child.stdin.flush()
    deadline = time.monotonic() + 60
    while not (out / ("traces.jsonl" + PARTIAL)).exists():  # the outputs are open: the replay is under way
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdin.close()
    assert sorted(p.name for p in out.iterdir()) == ["anomalies.jsonl" + PARTIAL, "traces.jsonl" + PARTIAL]
    report = subprocess.run([sys.executable, "-m", "stagewatch", "report", str(out), "-o", str(tmp_path / "r.html")],
                            capture_output=True, text=True)
    explain = subprocess.run([sys.executable, "-m", "stagewatch", "explain", "f-1", "--input", str(out)],
                             capture_output=True, text=True)
    for done in (report, explain):
        assert "a replay that did not finish" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    if report.returncode == 0:
        assert "a replay that did not finish" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_a_stopped_run_leaves_its_folder_marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``stagewatch run --output_dir``: the manifest is written incomplete before the job starts and complete, with
    each table's rows, after it finished; a job that stops in between leaves ``complete: false``."""
    import apache_beam as beam

    assert main(["simulate", str(tmp_path / "sim"), "--short", "--seed", "31", "--rate", "2"]) == 0
    logs = str(tmp_path / "sim" / "logs.jsonl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "anomalies.jsonl.partial").write_bytes(b"{}\n")  # a replay stopped while writing here: replaced too
    assert main(["run", "--input_file", logs, "--output_dir", str(out)]) == 0
    assert not (out / "anomalies.jsonl.partial").exists()
    written = orjson.loads((out / MANIFEST).read_bytes())
    assert written["complete"] is True and written["writer"] == "stagewatch run"
    assert written["rows"] == manifest.table_rows(str(out)) and written["rows"]["anomalies"] > 0
    assert incomplete(str(out)) is None
    uid = orjson.loads(next(out.glob("traces*.jsonl")).read_bytes().splitlines()[0])["uid"]
    # A run killed after it had written these rows leaves the manifest it began with: the page says so on top.
    manifest.start(str(out), "stagewatch run")
    capsys.readouterr()
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    assert "warning: " + str(out) + " is incomplete" in capsys.readouterr().err
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.index("Incomplete input:") < page.index('class="headline"')

    def stopped(self: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(beam.Pipeline, "run", stopped)
    assert main(["run", "--input_file", logs, "--output_dir", str(out)]) == 130
    assert orjson.loads((out / MANIFEST).read_bytes()) == {"writer": "stagewatch run", "complete": False}
    capsys.readouterr()
    assert main(["explain", uid, "--input", str(out)]) == 2  # the old run's files are gone: no such file
    err = capsys.readouterr().err
    assert "incomplete: stagewatch run did not finish writing it" in err
