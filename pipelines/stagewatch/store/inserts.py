"""Streaming inserts into BigQuery that lose no row and write none twice: each row sent with an insert id of its
own content, transient failures retried in place with backoff, permanent ones returned with BigQuery's reason.

No Beam here (``stream/bigquery_sink.py`` wraps it in a DoFn), so the rules are tested without a runner.

Why each rule:

* **Insert ids from the content** (``row_id``): a request whose answer was lost (a connection cut after BigQuery
  wrote the rows), or a bundle the runner retries, sends the same rows with the same ids, and BigQuery drops
  the copies (best effort, within about a minute). A random id per attempt would not.
* **Retried here, for as long as it takes, not by failing the bundle**: a failed bundle is retried from its
  start, so every row it had already written would be sent again -- minutes later, past BigQuery's window for
  dropping copies. Retrying only what was not written, in place, sends each row once. (Beam's own
  ``WriteToBigQuery`` also retries in place, 10,000 times.) While BigQuery is down the step waits, saying so in
  the log at every attempt and counting the attempts; the client's own retry is off so that each is counted.
* **Per row**: BigQuery answers an ``insertAll`` with errors per row. ``stopped`` means the row was fine but the
  request was refused for another row in it, and ``timeout``, ``backendError``, ``internalError`` and the
  rate limits are BigQuery's own trouble: those rows are sent again. Any other reason (``invalid``, or one
  unknown here) is taken as the row's fault and returned with the message, to become a dead letter -- a row
  retried for a reason nobody foresaw would hold the step for ever.
* **A request refused outright** with a client error (404 no such table, 400, 403 other than a rate limit)
  would be refused again: its rows are returned with BigQuery's reason. A request too big for BigQuery (413, or
  a 400 about the payload size) is split in two and each half sent, down to single rows.
* **Transient**: 408, 429, 5xx, and any failure of the transport -- a connection refused, cut, or cut in the
  middle of the answer (the rows may have been written: they go again with the same ids), a token that could
  not be fetched.
* **An answer that cannot be matched to the rows sent** (an ``insertErrors`` entry with no index, or one out of
  range) is taken as no answer and the rows are sent again, three times; then they are returned with that
  reason rather than counted as written on a guess.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Backoff", "InsertOutcome", "insert_rows", "is_transient", "row_id", "wire_bytes"]

_LOG = logging.getLogger(__name__)

#: Per-row reasons that are BigQuery's own trouble, or another row's: the row is sent again.
RETRY_REASONS = frozenset({"stopped", "timeout", "backendError", "internalError", "rateLimitExceeded",
                           "quotaExceeded"})
#: A 403 with one of these reasons is a rate limit, to wait out, not a refusal.
_RATE_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded", "backendError"})
_MAX_REASON = 1000
_MAX_UNREADABLE = 3
_URL_PREFIX = re.compile(r"^[A-Z]+ \S+: ")  # "POST https://...insertAll?prettyPrint=false: " before the reason


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts: doubling from ``first_s`` up to ``max_s``, with jitter;
    ``request_timeout_s`` bounds one request."""

    first_s: float = 1.0
    max_s: float = 60.0
    request_timeout_s: float = 120.0


@dataclass
class InsertOutcome:
    """What one ``insert_rows`` did: rows written, rows refused for good (with the reason), attempts retried."""

    written: int = 0
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    retries: int = 0


def row_id(table: str, row: dict[str, Any], ignore: Iterable[str] = ()) -> str:
    """An insert id that is the same whenever the same row is sent to the same table (32 hex characters;
    BigQuery allows 128); fields in ``ignore`` (a time the job stamped when it made the row) do not count."""
    skip = set(ignore)
    content = orjson.dumps({k: v for k, v in row.items() if k not in skip} if skip else row,
                           option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(table.encode() + b"\0" + content, digest_size=16).hexdigest()


def wire_bytes(row: dict[str, Any], insert_id: str) -> int:
    """The bytes a row takes in an ``insertAll`` request as the client sends it (``json.dumps``, ASCII-escaped:
    an emoji is 12 bytes there, 4 in UTF-8)."""
    return len(json.dumps({"insertId": insert_id, "json": row})) + 2


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed if sent again (see the module's docstring)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.Forbidden):
        return any(e.get("reason") in _RATE_REASONS for e in (exc.errors or []) if isinstance(e, dict))
    if isinstance(exc, gexc.GoogleAPICallError):
        code = int(exc.code or 0)
        return code in (408, 429) or code >= 500
    import requests

    return isinstance(exc, (requests.exceptions.RequestException, auth_exc.TransportError, auth_exc.RefreshError,
                            ConnectionError, TimeoutError))


def _too_big(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.GoogleAPICallError) and (
        exc.code == 413 or (exc.code == 400 and "size" in str(exc.message).lower()))


def _reason_of(errors: list[dict[str, Any]]) -> str:
    text = "; ".join(f"{e.get('reason') or 'error'}: {e.get('message') or ''}".rstrip(": ") for e in errors)
    return (text or "rejected")[:_MAX_REASON]


def _brief(exc: BaseException) -> str:
    """The failure in a line: for BigQuery's answers its status and reason (the request's method and URL, which
    the client puts first, dropped), else the exception's class and message; cut to a bounded length."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        return f"{exc.code} {type(exc).__name__}: {_URL_PREFIX.sub('', str(exc.message))}"[:_MAX_REASON]
    return f"{type(exc).__name__}: {exc}"[:_MAX_REASON]


def _read_answer(errors: list[dict[str, Any]], sent: int) -> dict[int, list[dict[str, Any]]] | None:
    """BigQuery's per-row errors by the index of the row in the request; None when an entry names no row sent."""
    by_index: dict[int, list[dict[str, Any]]] = {}
    for entry in errors:
        k = entry.get("index") if isinstance(entry, dict) else None
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < sent:
            return None
        by_index.setdefault(k, []).extend(entry.get("errors") or [{}])
    return by_index


def insert_rows(
    client: Any, table_id: str, rows: list[dict[str, Any]], ids: list[str], backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
) -> InsertOutcome:
    """Insert ``rows`` (with insert ids ``ids``) into ``table_id`` through ``client`` (a
    ``google.cloud.bigquery.Client``), sending again what failed transiently until it is written or refused for
    good."""
    out = InsertOutcome()
    chunks = [list(range(len(rows)))]  # a request too big is split into the halves it is made of
    while chunks:
        pending = chunks.pop()
        delay, unreadable = backoff.first_s, 0
        while pending:
            try:
                errors = client.insert_rows_json(
                    table_id, [rows[i] for i in pending], row_ids=[ids[i] for i in pending], retry=None,
                    timeout=backoff.request_timeout_s)
            except Exception as exc:
                if _too_big(exc) and len(pending) > 1:
                    chunks += [pending[: len(pending) // 2], pending[len(pending) // 2:]]
                    break
                if not is_transient(exc):
                    reason = _brief(exc)
                    out.rejected.extend((rows[i], reason) for i in pending)
                    break
                problem = _brief(exc)
            else:
                by_index = _read_answer(errors, len(pending))
                if by_index is None:
                    unreadable += 1
                    if unreadable >= _MAX_UNREADABLE:
                        out.rejected.extend((rows[i], "BigQuery's answer did not say which rows it refused")
                                            for i in pending)
                        break
                    problem = "an answer naming rows that were not sent"
                else:
                    again = []
                    for k, i in enumerate(pending):
                        row_errors = by_index.get(k)
                        if row_errors is None:
                            out.written += 1
                        elif all(e.get("reason") in RETRY_REASONS for e in row_errors):
                            again.append(i)
                        else:
                            out.rejected.append((rows[i], _reason_of(row_errors)))
                    if not again:
                        break
                    problem = f"{len(again)} rows not written ({_reason_of(by_index[pending.index(again[0])])})"
                    pending = again
            out.retries += 1
            _LOG.warning("BigQuery insert into %s failed (%s); %d rows sent again in %.1f s",
                         table_id, problem, len(pending), delay)
            sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, backoff.max_s)
    return out
