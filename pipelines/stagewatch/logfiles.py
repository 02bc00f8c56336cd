"""Reading log files, line by line: the exports of Cloud Logging people have.

* one JSON object per line (a Logging sink to Cloud Storage, ``gcloud logging read --format=json`` piped
  through ``jq -c '.[]'``);
* pretty-printed objects one after another (the shared example), and a JSON array (what ``gcloud logging read
  --format=json`` prints): read whole and handed on one entry per line;
* a folder: its files (hidden ones aside), in name order -- a sink's hourly files sort in time;
* ``.gz`` of any (by suffix or by content), or ``-`` for standard input.

Both drivers read them -- the backtest (``backtest.replay``, ``backtest.front``'s child process) and a local run of
the streaming job (``stream.file_source``) -- and so does the evaluation; none of them owns it.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
import zlib
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson

__all__ = ["DAMAGE_REASON", "Damage", "expand_inputs", "input_problem", "iter_lines"]


DAMAGE_REASON = "truncated_input"  # a Damage's dead-letter reason and count, in both drivers


class Damage(NamedTuple):
    """An input that could not be read to its end (a truncated or corrupt ``.gz``): what was read of it counts."""

    path: str
    detail: str

_REPORT_BYTES = 1 << 20


_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_SAMPLE = 4096


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """The files to read: a folder's files (recursively, hidden ones aside) in name order; ``-`` as it is. A
    missing path, or a folder without files, is the user's mistake (``ValueError``, said in one line)."""
    out: list[str] = []
    for path in paths:
        p = Path(path)
        if path == "-" or p.is_file():
            out.append(path)
        elif p.is_dir():
            files = sorted(str(f) for f in p.rglob("*")
                           if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise ValueError(f"input {path} is a folder that has no files")
            out += files
        else:
            raise ValueError(f"input {path} does not exist")
    return out


def input_problem(path: str) -> str | None:
    """What makes ``path`` no log file at all, in words (missing, unreadable, empty, a zip, not text); None when
    it can be read. A truncated ``.gz`` is not a problem here: what it holds up to the break is read."""
    if path == "-":
        return None
    try:
        with open(path, "rb") as raw:
            if raw.read(4) == _ZIP_MAGIC:
                return f"input {path} is a zip archive: unzip it and give the files (or their folder)"
        with _open_binary(path) as f:
            sample = f.read(_SAMPLE)
            while sample and not sample.strip():
                sample = f.read(_SAMPLE)
    except FileNotFoundError:
        return f"input {path} does not exist"
    except IsADirectoryError:
        return None  # a folder: its files are checked one by one (expand_inputs)
    except OSError as exc:
        return f"input {path} cannot be read: {exc.strerror or exc}"
    except (EOFError, gzip.BadGzipFile, zlib.error):
        return None  # what it holds up to the break is read, and the break said
    if not sample.strip():
        return f"input {path} is empty"
    if _looks_binary(sample):
        return (f"input {path} is not text: give Cloud Logging entries as JSON (one per line, pretty-printed, or "
                "an array), or a .gz of them")
    return None


def _looks_binary(sample: bytes) -> bool:
    """Mostly bytes no text has, and no line of it a JSON object (junk among log lines is the parser's to count)."""
    text = sample.decode("utf-8", errors="replace")
    odd = sum(1 for c in text if c == "\ufffd" or (c < " " and c not in "\t\r\n"))
    if odd < 0.3 * len(text):
        return False
    for line in sample.splitlines():
        try:
            if isinstance(orjson.loads(line), dict):
                return False
        except orjson.JSONDecodeError:
            continue
    return True


def _open_binary(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's loop
    if path.endswith(".gz") or raw.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def _starts_a_document(first: bytes) -> bool:
    """Whether the first non-blank line opens a JSON document rather than being a whole entry: an array, or an
    object spread over lines."""
    head = first.strip()
    if head.startswith(b"["):
        return True
    if not head.startswith(b"{"):
        return False
    try:
        orjson.loads(head)
        return False
    except orjson.JSONDecodeError:
        return True


def _document_entries(data: bytes) -> list[bytes] | None:
    """The entries of a JSON document -- an array, or objects one after another -- each as one line; None when it
    is not one (its lines go to the parser as they are)."""
    try:
        whole = orjson.loads(data)
        items = whole if isinstance(whole, list) else [whole]
        return [orjson.dumps(x) for x in items]
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass
    # Objects one after another (pretty-printed, concatenated): not one JSON text, so decode them in turn.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    decoder, at = json.JSONDecoder(), 0
    out: list[bytes] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return out
        try:
            value, at = decoder.raw_decode(text, at)
            out.append(orjson.dumps(value))
        except (json.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
            return None  # not JSON, or a value JSON lines could not carry (an integer past 64 bits)


def iter_lines(
    paths: Iterable[str], on_bytes: Callable[[int], None] | None = None, damaged: list[Damage] | None = None
) -> Generator[bytes, None, None]:
    """Lines of every input in turn, without line endings (an empty line is yielded as ``b""``: the parser
    counts it as blank). ``on_bytes(n)`` hears of the bytes read every megabyte or so, and at the end of each
    input. With ``damaged``, an input that breaks off (a truncated or corrupt ``.gz``) is noted there and the next
    one read -- its lines up to the break are yielded; without it, the error is raised."""
    for path in paths:
        f = _open_binary(path)
        read = 0
        try:
            lines = iter(f)
            leading: list[bytes] = []  # up to the first line that is not blank: does a document start there?
            for line in lines:
                leading.append(line)
                if line.strip():
                    break
            if leading and _starts_a_document(leading[-1]):
                data = b"".join(leading) + f.read()
                read += len(data)
                entries = _document_entries(data)
                if entries is None:  # not a document after all: its lines, for the parser to count
                    entries = [piece.rstrip(b"\r") for piece in data.split(b"\n")]
                    if entries and not entries[-1]:
                        entries.pop()
                yield from entries
                continue
            for line in itertools.chain(leading, lines):
                if on_bytes is not None:
                    read += len(line)
                    if read >= _REPORT_BYTES:
                        on_bytes(read)
                        read = 0
                yield line.rstrip(b"\r\n")
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            if damaged is None:
                raise
            damaged.append(Damage(path, f"{type(exc).__name__}: {exc}"))
        finally:
            if read and on_bytes is not None:
                on_bytes(read)
            if f is not sys.stdin.buffer:
                f.close()
