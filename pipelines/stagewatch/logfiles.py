"""Reading log files, line by line: the exports of Cloud Logging people have.

* one JSON object per line (a Logging sink to Cloud Storage, ``gcloud logging read --format=json`` piped
  through ``jq -c '.[]'``);
* pretty-printed objects one after another (the shared example), and a JSON array (what ``gcloud logging read
  --format=json`` prints): read whole and handed on one entry per line;
* a folder: its files (hidden ones aside), in name order -- a sink's hourly files sort in time;
* ``.gz`` of any (by suffix or by content), or ``-`` for standard input.

An input whose entries run newest first -- what ``gcloud logging read`` prints unless told ``--order=asc`` -- is
read whole and handed on oldest first, and the user told (one line on standard error): read as it is, nearly
every line of a day was behind the watermark, dropped as late by the backtest, and the streaming job stalled
complete files. Its first entries and its last must both run backwards (``newest_first``).

Both drivers read them -- the backtest (``backtest.replay``, ``backtest.front``'s child process) and a local run of
the streaming job (``stream.file_source``) -- and so does the evaluation; none of them owns it.
"""

from __future__ import annotations

import gzip
import itertools
import json
import sys
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson

from stagewatch.core.timeutil import parse_rfc3339_us

__all__ = ["DAMAGE_REASON", "ORDER_SAMPLE", "ORDER_SCAN", "Damage", "expand_inputs", "input_problem", "iter_lines",
           "newest_first"]


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
    except (EOFError, gzip.BadGzipFile, zlib.error):  # (BadGzipFile is an OSError: first)
        return None  # what it holds up to the break is read, and the break said
    except FileNotFoundError:
        return f"input {path} does not exist"
    except IsADirectoryError:
        return None  # a folder: its files are checked one by one (expand_inputs)
    except OSError as exc:
        return f"input {path} cannot be read: {exc.strerror or exc}"
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
    if raw.peek(2)[:2] == _GZIP_MAGIC:  # by content: a .gz without its suffix, and no plain file taken for one
        raw.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]  # (it owns its file: closed with it)
    return raw


_BOM = b"\xef\xbb\xbf"


def _parses_alone(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _is_document(first: bytes, second: bytes | None) -> bool:
    """Whether the first two non-blank lines open a JSON document (an array, or objects spread over lines)
    rather than being whole entries: the first opens one and the second is no entry on its own. A torn first
    line of JSON lines is followed by whole ones: read line by line (not the whole file into memory)."""
    head = first.strip().removeprefix(_BOM)
    if not head.startswith((b"[", b"{")) or (head.startswith(b"{") and _parses_alone(head)):
        return False
    return second is None or not _parses_alone(second.strip())


def _entry_line(value: object, raw: str) -> bytes:
    """One entry as one line: re-encoded, or -- what JSON lines cannot carry (a lone surrogate, 256 levels of
    nesting, an integer past 64 bits) -- its own text on one line, for the parser to judge."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return raw.replace("\r", " ").replace("\n", " ").encode("utf-8", errors="replace")


def _document_entries(data: bytes) -> Iterator[bytes]:
    """The entries of a JSON document -- an array, or objects one after another -- each as one line, as far as
    it is JSON; from the first place it is not (a file cut short, a stray character), its lines as they are,
    for the parser to count: one bad spot does not lose the entries before it."""
    data = data.removeprefix(_BOM)
    try:
        whole = orjson.loads(data)
        yield from (_entry_line(x, "") for x in (whole if isinstance(whole, list) else [whole]))
        return
    except orjson.JSONDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    decoder, at, n = json.JSONDecoder(), 0, len(text)

    def skip(chars: str) -> int:
        k = at
        while k < n and (text[k].isspace() or text[k] in chars):
            k += 1
        return k

    at = skip("")
    in_array = at < n and text[at] == "["
    if in_array:
        at += 1
    while True:
        at = skip("," if in_array else "")
        if at >= n or (in_array and text[at] == "]" and not text[at + 1:].strip()):
            return
        try:
            value, end = decoder.raw_decode(text, at)
        except (json.JSONDecodeError, RecursionError):
            break
        yield _entry_line(value, text[at:end])
        at = end
    for line in text[at:].split("\n"):  # the rest, as it is
        if line.strip():
            yield line.rstrip("\r").encode("utf-8", errors="replace")


def _read_rest(f: BinaryIO, head: bytes) -> tuple[bytes, BaseException | None]:
    """``head`` and the rest of ``f``; what a truncated or corrupt ``.gz`` held up to its break, and the break."""
    chunks = [head]
    try:
        # read1: a little at a time, so that a break loses at most what the last call had decompressed
        read1 = getattr(f, "read1", f.read)
        while chunk := read1(1 << 16):
            chunks.append(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        return b"".join(chunks), exc
    return b"".join(chunks), None


ORDER_SAMPLE = 256  # changes of time between consecutive entries that decide which way an input runs
ORDER_SCAN = 65_536  # entries read at most to see them (whole-second times on a busy pipeline change rarely)


def _entry_time(line: bytes) -> float | None:
    """The entry's ``timestamp``, in seconds: RFC 3339, or an epoch number (only the order matters here)."""
    try:
        value = orjson.loads(line)
        stamp = value.get("timestamp") if isinstance(value, dict) else None
        if isinstance(stamp, str):
            return parse_rfc3339_us(stamp) / 1e6
        return float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None
    except (orjson.JSONDecodeError, ValueError, OverflowError):
        return None


class _OrderProbe:
    """Which way consecutive entries' times run: fed entries one by one until it has seen ``ORDER_SAMPLE``
    changes of time (equal times, a burst logged at once, say nothing) or ``ORDER_SCAN`` entries."""

    def __init__(self) -> None:
        self.down = self.up = self.seen = 0
        self._last: float | None = None

    def add(self, line: bytes) -> bool:
        """Take one entry; True once enough is seen."""
        self.seen += 1
        t = _entry_time(line) if line.strip() else None
        if t is not None:
            if self._last is not None and t != self._last:
                if t < self._last:
                    self.down += 1
                else:
                    self.up += 1
            self._last = t
        return self.down + self.up >= ORDER_SAMPLE or self.seen >= ORDER_SCAN

    @property
    def backwards(self) -> bool:
        """Later-then-earlier at least 16 times and nine in ten of the changes: a file in time order has a
        few neighbours swapped by delivery jitter, and a late batch at its start is a short run backwards."""
        return self.down >= 16 and self.down >= 9 * self.up


def newest_first(entries: Iterable[bytes], last: Sequence[bytes] = ()) -> bool:
    """Whether an input's entries run newest first: its first entries run backwards in time -- and, given its
    ``last`` entries (the whole input is held by then), so do they: a file in time order that starts with a
    pasted newest-first block is read as it is."""
    head = _OrderProbe()
    for line in entries:
        if head.add(line):
            break
    if not head.backwards:
        return False
    if not last:
        return True
    tail = _OrderProbe()
    for line in last[-ORDER_SCAN:]:
        tail.add(line)
    return tail.backwards


def _say_reversed(path: str) -> None:
    name = "standard input" if path == "-" else _printable(path)
    print(f"stagewatch: {name} lists its entries newest first (gcloud logging read's default; --order=asc "
          "lists them oldest first): read whole and in reverse", file=sys.stderr)


def _printable(text: str) -> str:
    """One line fit for a terminal: a name from outside (a path) with its control characters escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _peek(lines: Iterator[bytes], head: list[bytes]) -> BaseException | None:
    """Read on into ``head`` until what it holds tells which way the input runs (``_OrderProbe``); the break of
    a damaged ``.gz`` met on the way, if any (what was read before it stays in ``head``)."""
    probe = _OrderProbe()
    if any(probe.add(line) for line in head):
        return None
    try:
        for line in lines:
            head.append(line)
            if probe.add(line):
                break
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        return exc
    return None


def iter_lines(
    paths: Iterable[str], on_bytes: Callable[[int], None] | None = None, damaged: list[Damage] | None = None,
    say: bool = True,
) -> Generator[bytes, None, None]:
    """Lines of every input in turn, without line endings (an empty line is yielded as ``b""``: the parser
    counts it as blank). ``on_bytes(n)`` hears of the bytes read every megabyte or so, and at the end of each
    input. With ``damaged``, an input that breaks off (a truncated or corrupt ``.gz``) is noted there and the next
    one read -- its lines up to the break are yielded; without it, the error is raised. ``say``: tell the user
    (standard error) of an input read in reverse -- not on a pass that only samples it."""
    for path in paths:
        f = _open_binary(path)
        read = 0
        try:
            lines = iter(f)
            leading: list[bytes] = []  # up to the second line that is not blank: does a document start there?
            firsts: list[bytes] = []
            for line in lines:
                leading.append(line)
                if line.strip():
                    firsts.append(line)
                    if len(firsts) == 2:
                        break
            if firsts and _is_document(firsts[0], firsts[1] if len(firsts) > 1 else None):
                data, broke = _read_rest(f, b"".join(leading))
                read += len(data)
                entries = _document_entries(data)
                head = list(itertools.islice(entries, ORDER_SCAN))
                if newest_first(head):
                    whole = [*head, *entries]
                    if newest_first(whole, whole):
                        if say:
                            _say_reversed(path)
                        whole.reverse()
                    yield from whole
                else:
                    yield from itertools.chain(head, entries)
                if broke is not None:
                    raise broke
                continue
            broke = _peek(lines, leading)
            if newest_first(leading):
                if broke is None:
                    try:
                        leading.extend(lines)  # (what a break leaves unread is lost; what came before, kept)
                    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                        broke = exc
                backwards = newest_first(leading, leading)
                if backwards and say:
                    _say_reversed(path)
                read += sum(map(len, leading))
                yield from (line.rstrip(b"\r\n") for line in (reversed(leading) if backwards else leading))
                if broke is not None:
                    raise broke
                continue
            for line in itertools.chain(leading, () if broke is not None else lines):
                if on_bytes is not None:
                    read += len(line)
                    if read >= _REPORT_BYTES:
                        on_bytes(read)
                        read = 0
                yield line.rstrip(b"\r\n")
            if broke is not None:
                raise broke
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            if damaged is None:
                raise
            damaged.append(Damage(path, f"{type(exc).__name__}: {exc}"))
        finally:
            if read and on_bytes is not None:
                on_bytes(read)
            if f is not sys.stdin.buffer:
                f.close()
