"""Reading log files: plain JSON lines, ``.gz``, or ``-`` for standard input, line by line.

Both drivers read them -- the backtest (``backtest.replay``, ``backtest.front``'s child process) and a local run of
the streaming job (``stream.file_source``) -- and so does the evaluation; none of them owns it.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, NamedTuple

__all__ = ["DAMAGE_REASON", "Damage", "iter_lines"]


DAMAGE_REASON = "truncated_input"  # a Damage's dead-letter reason and count, in both drivers


class Damage(NamedTuple):
    """An input that could not be read to its end (a truncated or corrupt ``.gz``): what was read of it counts."""

    path: str
    detail: str

_REPORT_BYTES = 1 << 20


def _open_binary(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's loop
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def iter_lines(
    paths: Iterable[str], on_bytes: Callable[[int], None] | None = None, damaged: list[Damage] | None = None
) -> Iterator[bytes]:
    """Lines of every input in turn, without line endings (an empty line is yielded as ``b""``: the parser
    counts it as blank). ``on_bytes(n)`` hears of the bytes read every megabyte or so, and at the end of each
    input. With ``damaged``, an input that breaks off (a truncated or corrupt ``.gz``) is noted there and the next
    one read -- its lines up to the break are yielded; without it, the error is raised."""
    for path in paths:
        f = _open_binary(path)
        read = 0
        try:
            for line in f:
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
