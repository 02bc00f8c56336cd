"""``stagewatch.logfiles``: the exports of Cloud Logging people have, each read as the same log entries."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import orjson
import pytest

from stagewatch.logfiles import expand_inputs, input_problem, iter_lines

pytestmark = pytest.mark.unit

ENTRIES = [{"timestamp": f"2026-06-06T08:00:0{i}Z", "jsonPayload": {"uid": f"f{i}", "stage": "a"}} for i in range(3)]


def _entries(paths: list[str]) -> list[dict]:
    return [orjson.loads(line) for line in iter_lines(paths) if line.strip()]


@pytest.mark.parametrize("shape", ["lines", "pretty", "array", "pretty_array", "gz_array", "gz_pretty"])
def test_each_export_shape_reads_as_the_same_entries(shape: str, tmp_path: Path) -> None:
    """One object per line; pretty-printed objects one after another (the shared example); a JSON array, as
    ``gcloud logging read --format=json`` prints it, compact or indented; ``.gz`` of any."""
    import json

    body = {
        "lines": b"".join(orjson.dumps(e) + b"\n" for e in ENTRIES),
        "pretty": "\n".join(json.dumps(e, indent=2) for e in ENTRIES).encode(),
        "array": orjson.dumps(ENTRIES),
        "pretty_array": json.dumps(ENTRIES, indent=2).encode(),
        "gz_array": gzip.compress(json.dumps(ENTRIES, indent=2).encode()),
        "gz_pretty": gzip.compress("\n".join(json.dumps(e, indent=2) for e in ENTRIES).encode()),
    }[shape]
    path = tmp_path / ("logs.json.gz" if shape.startswith("gz") else "logs.json")
    path.write_bytes(body)
    assert _entries([str(path)]) == ENTRIES


def test_a_gzip_without_its_suffix_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "export"
    path.write_bytes(gzip.compress(orjson.dumps(ENTRIES)))
    assert _entries([str(path)]) == ENTRIES


def test_a_folder_is_its_files_in_name_order(tmp_path: Path) -> None:
    """A Logging sink to Cloud Storage writes hourly files under dated folders: their names sort in time."""
    for hour, entry in zip(("08:00:00_08:59:59_S0.json", "09:00:00_09:59:59_S0.json"), ENTRIES[:2], strict=True):
        (tmp_path / "2026" / "06" / "06").mkdir(parents=True, exist_ok=True)
        (tmp_path / "2026" / "06" / "06" / hour).write_bytes(orjson.dumps(entry) + b"\n")
    (tmp_path / ".hidden").write_bytes(b"not a log\n")
    files = expand_inputs([str(tmp_path)])
    assert [Path(f).name for f in files] == ["08:00:00_08:59:59_S0.json", "09:00:00_09:59:59_S0.json"]
    assert _entries(files) == ENTRIES[:2]


def test_a_document_cut_short_keeps_the_entries_before_the_break(tmp_path: Path) -> None:
    """An interrupted ``gcloud ... > logs.json``: the entries before the break are read, the rest goes to the
    parser line by line (each rejected and counted) -- one bad spot does not lose the file."""
    path = tmp_path / "broken.json"
    path.write_bytes(b'[\n  {"a": 1},\n  {"b": 2},\n  {"c": \n')
    assert list(iter_lines([str(path)])) == [b'{"a":1}', b'{"b":2}', b'{"c": ']


def test_a_truncated_gz_of_an_array_keeps_what_came_before_the_break(tmp_path: Path) -> None:
    import json

    whole = gzip.compress(json.dumps(ENTRIES * 400, indent=2).encode())
    path = tmp_path / "logs.json.gz"
    path.write_bytes(whole[: len(whole) // 2])
    damaged: list = []
    got = [orjson.loads(x) for x in iter_lines([str(path)], damaged=damaged) if x.startswith(b"{\"")]
    assert len(got) > 100 and got[:3] == ENTRIES and len(damaged) == 1


@pytest.mark.parametrize(("body", "want"), [
    (b"\xef\xbb\xbf" + orjson.dumps(ENTRIES), 3),  # a byte order mark before the array
    (b'[{"a": "\\ud800"}, ' + orjson.dumps(ENTRIES)[1:], 4),  # a lone surrogate: that entry as its own text
    (b"[" + b'{"x":' * 300 + b"1" + b"}" * 300 + b", " + orjson.dumps(ENTRIES)[1:], 4),  # 300 levels deep
])
def test_an_entry_json_lines_cannot_carry_does_not_lose_the_others(body: bytes, want: int, tmp_path: Path) -> None:
    path = tmp_path / "odd.json"
    path.write_bytes(body)
    lines = list(iter_lines([str(path)]))
    assert len(lines) == want and [orjson.loads(x) for x in lines[-3:]] == ENTRIES


def test_a_torn_first_line_of_json_lines_is_not_taken_for_a_document(tmp_path: Path) -> None:
    """Its next line is a whole entry: read line by line (a whole-file read cost 17x the memory)."""
    path = tmp_path / "torn.jsonl"
    torn = b'{"timestamp": "2026-06-06T08:00:00Z", "json\n'
    path.write_bytes(torn + b"".join(orjson.dumps(e) + b"\n" for e in ENTRIES))
    assert list(iter_lines([str(path)]))[1:] == [orjson.dumps(e) for e in ENTRIES]


@pytest.mark.parametrize(("content", "says"), [
    (b"", "is empty"),
    (b"\n\n  \n", "is empty"),
    (bytes(range(256)) * 8, "is not text"),
    (b"PK\x03\x04" + b"\x00" * 100, "is a zip archive"),
    # mtime=0: a gzip's header carries the time it was made, and this test's id carries the bytes -- two test
    # processes collecting a second apart would see two different tests (pytest-xdist then stops the run).
    (gzip.compress(b"", mtime=0), "is empty"),
])
def test_an_empty_or_binary_input_says_so(content: bytes, says: str, tmp_path: Path) -> None:
    path = tmp_path / "input.bin"
    path.write_bytes(content)
    problem = input_problem(str(path))
    assert problem is not None and says in problem


def test_missing_inputs_and_an_empty_folder_are_said(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        expand_inputs([str(tmp_path / "nope.json")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no files"):
        expand_inputs([str(tmp_path / "empty")])
    assert expand_inputs(["-"]) == ["-"]
    assert input_problem(str(tmp_path / "fine.json")) is not None  # missing: said, not raised


def _day(n: int) -> list[dict]:
    """``n`` entries a second apart, with some delivery jitter (a few neighbours out of order)."""
    rows = [{"timestamp": f"2026-06-06T08:{i // 60:02d}:{i % 60:02d}.{i % 7}Z", "jsonPayload": {"uid": f"f{i}"}}
            for i in range(n)]
    for i in range(5, n - 1, 17):
        rows[i], rows[i + 1] = rows[i + 1], rows[i]
    return rows


@pytest.mark.parametrize("shape", ["array", "lines", "gz_lines"])
def test_entries_exported_newest_first_are_read_oldest_first_and_said(
        shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``gcloud logging read`` prints the newest entry first unless told ``--order=asc``: read as it is, nearly
    every line of a day was behind the watermark (the backtest dropped them as late) and the streaming job
    stalled complete files. Such an input is read in reverse, and the user told; one in time order, with its
    delivery jitter, is read as it is."""
    rows = _day(400)
    newest_first = list(reversed(rows))
    body = {"array": orjson.dumps(newest_first),
            "lines": b"".join(orjson.dumps(e) + b"\n" for e in newest_first),
            "gz_lines": gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in newest_first))}[shape]
    path = tmp_path / "logs.json"
    path.write_bytes(body)
    assert _entries([str(path)]) == rows
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and f"{path} lists its entries newest first" in said and "--order=asc" in said
    path.write_bytes(orjson.dumps(rows))
    assert _entries([str(path)]) == rows
    assert capsys.readouterr().err == ""


def test_only_a_clear_newest_first_order_is_reversed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Entries without times, with one time, or shuffled, are read as they are; so is a file whose first lines
    run backwards for a few entries only (a late batch at the start)."""
    shuffled = _day(300)
    random.Random(3).shuffle(shuffled)
    cases: list[list[dict]] = [
        [{"jsonPayload": {"uid": f"f{i}"}} for i in range(50)],
        [{"timestamp": "2026-06-06T08:00:00Z", "jsonPayload": {"uid": f"f{i}"}} for i in range(50)],
        shuffled,
        list(reversed(_day(6))) + _day(300)[6:],
    ]
    for rows in cases:
        path = tmp_path / "logs.json"
        path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in rows))
        assert _entries([str(path)]) == rows
    assert capsys.readouterr().err == ""


def test_a_file_in_time_order_that_starts_with_a_newest_first_block_is_read_as_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A backfill exported newest first, then a sink's files in time order: the whole file was reversed on
    its first entries (1,459 of 1,625 lines late). Its last entries must run backwards too."""
    rows = _day(2000)
    body = list(reversed(rows[:300])) + rows[300:]
    path = tmp_path / "logs.json"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in body))
    assert _entries([str(path)]) == body
    path.write_bytes(orjson.dumps(body))
    assert _entries([str(path)]) == body
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("stamp", ["whole_seconds", "epoch_number"])
def test_newest_first_is_seen_through_whole_second_times_and_epoch_numbers(
        stamp: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A busy pipeline logged in whole seconds (50 lines a second: 256 entries hold 5 changes of time), and
    epoch numbers as times: neither was seen running backwards."""
    rows = [{"timestamp": (f"2026-06-06T08:{i // 3000:02d}:{i // 50 % 60:02d}Z" if stamp == "whole_seconds"
                           else 1_780_000_000 + i // 50),
             "jsonPayload": {"uid": f"f{i}"}} for i in range(50 * 200)]
    path = tmp_path / "logs.json"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in reversed(rows)))
    assert _entries([str(path)]) == rows
    assert "newest first" in capsys.readouterr().err


def test_the_newest_first_notice_is_one_line_fit_for_a_terminal_and_said_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The path comes from outside: its control characters are escaped. A pass that only samples the input (the
    stage order's check) says nothing."""
    path = tmp_path / "evil\n\x1b[31mRED\x07.json"
    path.write_bytes(orjson.dumps(list(reversed(_day(400)))))
    assert len(list(iter_lines([str(path)], say=False))) == 400
    assert capsys.readouterr().err == ""
    assert len(list(iter_lines([str(path)]))) == 400
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "\x1b" not in said and "\x07" not in said and "evil\\n\\x1b[31mRED\\x07" in said
