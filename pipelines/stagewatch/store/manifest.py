"""Whether a local output folder is whole: a run's manifest, a replay's temporary names.

A local run writes its tables as it goes. Stopped halfway (Ctrl-C, a kill, a full disk), its folder looks like
any other, and ``report`` would draw a day that stops at noon as a quiet afternoon. So what writes a folder says
whether it finished:

- ``stagewatch run --output_dir`` writes ``output-manifest.json`` with ``"complete": false`` before the job starts and
  rewrites it with ``"complete": true`` and each table's row count once every output is flushed;
- ``stagewatch replay`` writes each output as ``<name>.partial`` and renames it once the replay is over (a previous
  run's file of that name is replaced only then: a stopped replay leaves its partial files beside it, and the
  folder is marked by them).

``incomplete(folder)`` is what ``report`` and ``explain`` then say, or None when nothing says the folder is not
whole (a folder written by a stagewatch from before manifests cannot be told apart, and is taken as whole).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import orjson

from stagewatch.store.schemas import TABLES

__all__ = ["MANIFEST", "PARTIAL", "finish", "incomplete", "start", "table_rows"]

MANIFEST = "output-manifest.json"  # not manifest.json: simulate writes its own
PARTIAL = ".partial"


def _write(folder: str, manifest: dict[str, object]) -> None:
    path = Path(folder) / MANIFEST
    tmp = path.with_name(MANIFEST + PARTIAL)
    tmp.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    os.replace(tmp, path)  # whole or not there: a reader never sees half a manifest


def start(folder: str, writer: str) -> None:
    """Before the first row: whatever stops the writer from here on leaves the folder marked incomplete."""
    _write(folder, {"writer": writer, "complete": False})


def finish(folder: str, writer: str) -> dict[str, int]:
    """After the last row is flushed: the folder is whole, with each table's row count (returned)."""
    rows = table_rows(folder)
    _write(folder, {"writer": writer, "complete": True, "rows": rows})
    return rows


def table_rows(folder: str) -> dict[str, int]:
    """Non-blank lines of each local table's ``<table>*.jsonl`` files."""
    rows = {}
    for table in sorted(TABLES):
        n = 0
        for path in glob.glob(os.path.join(glob.escape(folder), f"{table}*.jsonl")):
            with open(path, "rb") as f:
                n += sum(1 for line in f if line.strip())
        rows[table] = n
    return rows


def incomplete(folder: str) -> str | None:
    """Why the tables in ``folder`` may not be whole, in one line for a person; None when nothing says so."""
    partial = sorted(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(folder), f"*.jsonl{PARTIAL}")))
    if partial:
        return (f"{folder} holds {', '.join(partial[:3])}{' …' if len(partial) > 3 else ''}: a replay that did not "
                "finish; what it wrote is not read here, run it again")
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return f"{path} is not JSON: the folder's writer may not have finished"
    if not isinstance(manifest, dict):
        return f"{path} is not a manifest"
    writer = str(manifest.get("writer", "the writer"))
    if manifest.get("complete") is not True:
        return (f"{folder} is incomplete: {writer} did not finish writing it (stopped, killed or still running); "
                "what follows stops where it stopped")
    want = manifest.get("rows")
    if isinstance(want, dict):
        have = table_rows(folder)
        changed = [f"{t} {have.get(t, 0):,} rows, {writer} wrote {n:,}" for t, n in sorted(want.items())
                   if isinstance(n, int) and have.get(t, 0) != n]
        if changed:
            return f"{folder} changed after {writer} finished: " + "; ".join(changed)
    return None
