"""Reading log files: plain JSON lines, ``.gz``, or ``-`` for standard input, line by line.

Both drivers read them -- the backtest (``backtest.replay``, ``backtest.front``'s child process) and a local run of
the streaming job (``stream.file_source``) -- and so does the evaluation; none of them owns it.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

__all__ = ["iter_lines"]

_REPORT_BYTES = 1 << 20


def _open_binary(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's loop
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def iter_lines(paths: Iterable[str], on_bytes: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """Lines of every input in turn, without line endings (an empty line is yielded as ``b""``: the parser
    counts it as blank). ``on_bytes(n)`` hears of the bytes read every megabyte or so, and at the end of each
    input."""
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
        finally:
            if read and on_bytes is not None:
                on_bytes(read)
            if f is not sys.stdin.buffer:
                f.close()
