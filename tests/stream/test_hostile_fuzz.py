"""Whole lines drawn by hypothesis through the streaming job (local runner): the job finishes, the verdicts about
the clean input's files are unchanged (Jaccard >= 0.999), and its dead letters are the backtest's rejected lines,
reason for reason -- the two drivers take every drawn line the same way, but for one difference they are known to
have (docs/streaming.md, "Where they can differ"): a line behind the watermark whose file has nothing else is
``late`` to the backtest, and a file to the stream, which cannot read its watermark and puts a file's lines in order
as long as nothing of it came after. Few examples: a run takes ~15 s; the backtest's fuzz test draws many more
through the same parser and clock."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewatch.cli import main
from stagewatch.core.events import StageEvent
from stagewatch.core.parser import Parser
from stagewatch.store.readers import read_table
from tests.hostile import CleanDay, Drawn, Verdict, jaccard, placed, whole_lines

pytestmark = pytest.mark.pipeline


def run(logs: Path, out: Path) -> tuple[list[dict], Counter[str]]:
    assert main(["run", "--input_file", str(logs), "--output_dir", str(out)]) == 0
    return list(read_table(str(out), "anomalies")), Counter(d["reason"] for d in read_table(str(out), "dead_letters"))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[CleanDay, set[Verdict]]:
    folder = tmp_path_factory.mktemp("fuzz")
    clean = CleanDay(folder)
    want = clean.verdicts(run(clean.path, folder / "clean")[0])
    assert len(want) > 50
    return clean, want


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_drawn_lines_change_no_verdict_of_the_streaming_job(day: tuple[CleanDay, set[Verdict]], tmp_path: Path,
                                                            data: st.DataObject) -> None:
    clean, want = day
    drawn: list[Drawn] = data.draw(st.lists(whole_lines(clean.template), min_size=4, max_size=16), label="lines")
    logs = tmp_path / "mixed.jsonl"
    logs.write_bytes(b"\n".join(placed(clean.lines, drawn)) + b"\n")
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    anomalies, dead = run(logs, out)
    assert jaccard(clean.verdicts(anomalies), want) >= 0.999
    summary, letters = out / "replay.json", out / "replay-dead.jsonl"
    assert main(["replay", str(logs), "-o", str(out / "replay.jsonl"), "--summary-json", str(summary),
                 "--dead-letters", str(letters), "--no-progress"]) == 0
    rejected = Counter(orjson.loads(summary.read_bytes())["rejected"])
    taken = unplaced_files(letters, logs)
    assert rejected["late"] - taken <= dead["late"] <= rejected["late"]
    assert dead - Counter(late=dead["late"]) == rejected - Counter(late=rejected["late"])


def unplaced_files(letters: Path, logs: Path) -> int:
    """The backtest's ``late`` lines of files none of whose lines it took: the stream, for which a line is late
    only behind what its file already processed, takes them (but a line behind another of them it processed)."""
    files = Counter(_uid(line) for line in logs.read_bytes().splitlines())
    late = Counter(orjson.loads(orjson.loads(d)["line"])["uid"] for d in letters.read_bytes().splitlines()
                   if orjson.loads(d)["reason"] == "late")
    return sum(n for uid, n in late.items() if files[uid] == n)



def _uid(line: bytes) -> str | None:
    ev = Parser().parse(line)
    return ev.uid if isinstance(ev, StageEvent) else None


def test_late_lines_are_excused_only_when_the_backtest_took_nothing_of_their_file(tmp_path: Path) -> None:
    logs, letters = tmp_path / "logs.jsonl", tmp_path / "dead.jsonl"

    def line(uid: str) -> bytes:
        return orjson.dumps({"timestamp": "2026-06-01T12:00:00Z", "jsonPayload": {"uid": uid, "stage": "upload"}})

    # f1: its one line late; f2: both late; f3: one of two late (the other taken); then a line that is no entry.
    logs.write_bytes(b"\n".join([line("f1"), line("f2"), line("f2"), line("f3"), line("f3"), b"not json"]))
    late = [{"reason": "late", "line": orjson.dumps({"uid": uid}).decode()} for uid in ("f1", "f2", "f2", "f3")]
    letters.write_bytes(b"\n".join(orjson.dumps(d) for d in [*late, {"reason": "future", "line": "{}"}]))
    assert unplaced_files(letters, logs) == 3
