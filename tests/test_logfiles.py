"""``stagewatch.logfiles``: the exports of Cloud Logging people have, each read as the same log entries."""

from __future__ import annotations

import gzip
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


def test_a_broken_document_is_read_as_lines_for_the_parser_to_reject(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(b'[\n  {"a": 1},\n  {"b": \n')
    assert list(iter_lines([str(path)])) == [b"[", b'  {"a": 1},', b'  {"b": ']


@pytest.mark.parametrize(("content", "says"), [
    (b"", "is empty"),
    (b"\n\n  \n", "is empty"),
    (bytes(range(256)) * 8, "is not text"),
    (b"PK\x03\x04" + b"\x00" * 100, "is a zip archive"),
    (gzip.compress(b""), "is empty"),
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
