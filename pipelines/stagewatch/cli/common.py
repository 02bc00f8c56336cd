"""What the commands share: reading JSON lines, writing them, a progress bar, an aligned table, time options, and
BigQuery's refusals turned into the one-line errors every command gives."""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from stagewatch.core.privacy import UID_KEY_ENV
from stagewatch.core.records import Record, dumps
from stagewatch.secrets import UidKey
from stagewatch.store.manifest import PARTIAL

__all__ = [
    "JsonlWriter",
    "add_uid_key_options",
    "bigquery_errors",
    "check_stages",
    "for_terminal",
    "log_inputs",
    "print_rows",
    "progress_bar",
    "read_anomalies",
    "read_jsonl",
    "stderr_is_tty",
    "time_option",
    "uid_key",
]


def add_uid_key_options(p: argparse.ArgumentParser) -> None:
    """``--hash-uids`` / ``--uid-key-secret``: uids as keyed hashes (core/privacy.py), for replay and explain."""
    p.add_argument("--hash-uids", action="store_true",
                   help=f"replace every uid by its keyed hash (HMAC-SHA256); the key from ${UID_KEY_ENV}")
    p.add_argument("--uid-key-secret", metavar="projects/P/secrets/S",
                   help="... the key from this Secret Manager secret instead (implies --hash-uids)")


def uid_key(args: argparse.Namespace) -> UidKey | None:
    """The uid key the options name, read now (a missing or short key is an error here, not at the first line)."""
    if not (args.hash_uids or args.uid_key_secret):
        return None
    key = UidKey(args.uid_key_secret)
    key.resolve()
    return key


def log_inputs(paths: list[str]) -> list[str]:
    """The files to read for ``paths`` (folders opened, ``core``-free: ``logfiles``); a path that is missing, empty,
    a zip or not text is the user's mistake -- except an empty file inside a folder (a sink's quiet hour)."""
    from stagewatch.logfiles import expand_inputs, input_problem

    named, out = set(paths), []
    for path in expand_inputs(paths):
        problem = input_problem(path)
        if problem is None:
            out.append(path)
        elif path in named or not problem.endswith("is empty"):
            raise ValueError(problem)
    if not out:
        raise ValueError(f"every file in {', '.join(paths)} is empty")
    return out


def check_stages(order: Any, paths: list[str], mapping: Any, force: bool) -> str | None:
    """A stage order given by flag or config, set against the first events of ``paths`` (``core.stage_check``):
    refused (``ValueError``, with the order the data shows) unless ``force``; then the disagreement is returned,
    for the summary to say. Standard input cannot be read twice: not checked."""
    from stagewatch.core.events import StageEvent
    from stagewatch.core.parser import Parser
    from stagewatch.core.stage_check import disagreement
    from stagewatch.core.stages import INFER_SAMPLE
    from stagewatch.logfiles import iter_lines

    if order is None or "-" in paths:
        return None
    parser, sample = Parser(mapping), []
    lines = iter_lines(paths, damaged=[], say=False)
    for raw in lines:
        ev = parser.parse(raw)
        if isinstance(ev, StageEvent):
            sample.append(ev)
            if len(sample) >= INFER_SAMPLE:
                break
    lines.close()
    problem = disagreement(order, sample)
    if problem is not None and not force:
        raise ValueError(f"{problem}. Give the order the data shows with --stages (or none, to infer it), or add "
                         "--force to run with yours")
    return problem


def read_jsonl(path: str) -> list[dict[str, Any]]:
    rows = []
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist" if not os.path.exists(path) else f"{path} is not a file")
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n} is not JSON: {exc}") from exc
    return rows


def read_anomalies(path: str) -> list[dict[str, Any]]:
    """A JSONL file, or the output folder of ``stagewatch run`` (its ``anomalies*.jsonl``)."""
    if not os.path.isdir(path):
        return read_jsonl(path)
    files = sorted(glob.glob(os.path.join(glob.escape(path), "anomalies*.jsonl")))
    if not files:
        raise ValueError(f"{path} is a folder without anomalies*.jsonl (the output folder of stagewatch run?)")
    return [row for f in files for row in read_jsonl(f)]


class JsonlWriter:
    """JSON lines to a file (or stdout), written as they come.

    A regular file is written as ``<name>.partial`` and gets its name only from ``close(complete=True)``: a replay
    stopped halfway leaves partial files beside whatever was there (``store/manifest.py``; ``report`` and
    ``explain`` say so). A symlink, a device or a pipe (``/dev/null``, ``/dev/stdout``, a FIFO) is written
    through as it is."""

    def __init__(self, target: str | Path | None, default_stdout: bool = False) -> None:
        self._own = False
        self._rename: tuple[Path, Path] | None = None
        self.f: IO[bytes] | None = None
        if target is None:
            self.f = sys.stdout.buffer if default_stdout else None
        elif str(target) == "-":
            self.f = sys.stdout.buffer
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or (path.exists() and not path.is_file()):
                # A link (/dev/stdout, a link to where results live), a device or a pipe: written through.
                self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
            else:
                # An earlier run's file of that name stays until this one is whole (os.replace swaps them); a
                # stopped run leaves NAME.partial beside it, which report and explain point out.
                partial = path.with_name(path.name + PARTIAL)
                self.f = open(partial, "wb")  # noqa: SIM115 - closed in close()
                self._rename = (partial, path)
            self._own = True

    def write(self, record: Record | dict[str, Any]) -> None:
        if self.f is not None:
            self.f.write(dumps(record))
            self.f.write(b"\n")

    def close(self, complete: bool = True) -> Path | None:
        """``complete``: the writer's job is done, the file gets its name; else it stays ``<name>.partial``,
        which is returned."""
        left = None
        if self.f is not None:
            self.f.flush()
            if self._own:
                self.f.close()
                if self._rename is not None:
                    if complete:
                        os.replace(*self._rename)
                    else:
                        left = self._rename[0]
                self._rename = None
            self.f = None
        return left


def progress_bar(paths: list[str], enabled: bool) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """(on_bytes, close) of a byte-based progress bar on stderr (tqdm) when ``enabled``; (None, no-op) else."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    total = 0
    for p in paths:
        if p == "-" or p.endswith(".gz"):
            total = 0
            break
        total += os.path.getsize(p)
    bar = tqdm(total=total or None, unit="B", unit_scale=True, desc="replay", file=sys.stderr, mininterval=0.5)
    return bar.update, bar.close


def stderr_is_tty() -> bool:
    return isinstance(sys.stderr, io.TextIOBase) and sys.stderr.isatty()


def for_terminal(text: str) -> str:
    """Text fit for a terminal: every character that is not printable (an escape sequence, a bell, a bidi override,
    NUL) shown as its Python escape, newlines kept. What the commands print can come from someone else's logs."""
    if text.isprintable():
        return text
    return "\n".join(line if line.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
                     for line in text.split("\n"))


def _format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    if isinstance(value, list):
        return ",".join(map(_format_cell, value))
    return str(value)


def print_rows(rows: list[dict[str, Any]]) -> None:
    """An aligned table: the columns as the query names them."""
    if not rows:
        print("(no rows)")
        return
    columns = [for_terminal(str(c)) for c in rows[0]]
    cells = [[for_terminal(_format_cell(v)) for v in row.values()] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def time_option(name: str, value: str | None) -> int | None:
    from stagewatch.core.timeutil import parse_rfc3339_us

    if value is None:
        return None
    try:
        return parse_rfc3339_us(value)
    except ValueError:
        raise ValueError(f"{name} must be an RFC 3339 time such as 2026-06-06T00:00:00Z, got {value!r}") from None


@contextlib.contextmanager
def bigquery_errors(dataset: str) -> Iterator[None]:
    """BigQuery's refusals (no such dataset, no permission, a bad query) and missing credentials: one line,
    exit status 2, like every other error of the command."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    try:
        yield
    except GoogleAPIError as exc:
        raise ValueError(f"BigQuery refused ({dataset}): {str(exc).splitlines()[0]}") from exc
    except GoogleAuthError as exc:
        raise ValueError(f"no credentials for BigQuery ({exc}); run: gcloud auth application-default login") from exc
