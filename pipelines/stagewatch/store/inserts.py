"""Streaming inserts into BigQuery that lose no row and write none twice: each row sent with an insert id of its
own content, transient failures retried in place with backoff, permanent ones returned with BigQuery's reason.

No Beam here (``stream/bigquery_sink.py`` wraps it in a DoFn), so the rules are tested without a runner.

Why each rule:

* **Insert ids from the content** (``row_id``): a request whose answer was lost (a connection cut after BigQuery
  wrote the rows), or a bundle the runner retries, sends the same rows with the same ids, and BigQuery drops
  the copies (best effort, within about a minute). A random id per attempt would not.
* **Retried here, not by failing the bundle**: a failed bundle on Dataflow is retried from its start, so every
  row the bundle had already written would be sent again; retrying only what was refused sends each row once.
  The client's own retry is switched off so that every attempt is counted and said.
* **Per row**: BigQuery answers an ``insertAll`` with errors per row. ``invalid`` (and the other reasons Beam's
  ``RetryStrategy.RETRY_ON_TRANSIENT_ERROR`` also treats as permanent) is the row's fault: it is returned with
  the message, to become a dead letter. ``stopped`` means the row was fine but the request was refused for
  another row in it: it is sent again, without that row. Any other reason is transient.
* **A request refused outright** with a client error (404 no such table, 400, 403 other than a rate limit)
  would be refused again: its rows are returned with the reason, not retried without end. 408, 429, 5xx and
  connection failures are transient.
* **Giving up**: after ``Backoff.give_up_s`` of failures the error is raised. The runner then retries the bundle
  (on Dataflow, without end), and the insert ids keep what is sent again from being written twice: an outage
  longer than that is the runner's to wait out, and a worker is not held in one call for hours.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Backoff", "BigQueryUnavailable", "InsertOutcome", "insert_rows", "is_transient", "row_id"]

_LOG = logging.getLogger(__name__)

#: Per-row reasons that are the row's own fault (as in Beam's ``bigquery_tools._NON_TRANSIENT_ERRORS``).
PERMANENT_REASONS = frozenset({"invalid", "invalidQuery", "notImplemented"})
#: A 403 with one of these reasons is a rate limit, to wait out, not a refusal.
_RATE_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded", "backendError"})
_MAX_REASON = 1000


@dataclass(frozen=True)
class Backoff:
    """How long to wait between attempts (doubling from ``first_s`` up to ``max_s``, with jitter) and after how
    long failing to give up (``BigQueryUnavailable``); ``request_timeout_s`` bounds one request."""

    first_s: float = 1.0
    max_s: float = 60.0
    give_up_s: float = 900.0
    request_timeout_s: float = 120.0


@dataclass
class InsertOutcome:
    """What one ``insert_rows`` did: rows written, rows refused for good (with the reason), attempts retried."""

    written: int = 0
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    retries: int = 0


class BigQueryUnavailable(RuntimeError):
    """BigQuery kept failing for longer than ``Backoff.give_up_s``; the bundle is to be retried."""


def row_id(table: str, row: dict[str, Any]) -> str:
    """An insert id that is the same whenever the same row is sent to the same table (32 hex characters;
    BigQuery allows 128)."""
    content = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(table.encode() + b"\0" + content, digest_size=16).hexdigest()


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request may succeed if sent again: 408, 429, 5xx, a rate-limit 403, a connection that
    failed or timed out. Anything else (an error of ours or of the request) would fail again."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.Forbidden):
        return any(e.get("reason") in _RATE_REASONS for e in (exc.errors or []) if isinstance(e, dict))
    if isinstance(exc, gexc.GoogleAPICallError):
        code = int(exc.code or 0)
        return code in (408, 429) or code >= 500
    import requests

    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                            ConnectionError, TimeoutError))


def _reason_of(errors: list[dict[str, Any]]) -> str:
    text = "; ".join(f"{e.get('reason') or 'error'}: {e.get('message') or ''}".rstrip(": ") for e in errors)
    return (text or "rejected")[:_MAX_REASON]


def _brief(exc: BaseException) -> str:
    """The failure in a line: the exception's class and message, without the request's URL query (nothing
    secret is in it, but it is noise) and cut to a bounded length."""
    return f"{type(exc).__name__}: {exc}".split("?", 1)[0][:_MAX_REASON]


def insert_rows(
    client: Any, table_id: str, rows: list[dict[str, Any]], ids: list[str], backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
) -> InsertOutcome:
    """Insert ``rows`` (with insert ids ``ids``) into ``table_id`` through ``client`` (a
    ``google.cloud.bigquery.Client``), sending again what failed transiently until it is written or refused for
    good; raises ``BigQueryUnavailable`` after ``backoff.give_up_s`` of failures."""
    out = InsertOutcome()
    pending = list(range(len(rows)))
    started = clock()
    delay = backoff.first_s
    while pending:
        try:
            errors = client.insert_rows_json(
                table_id, [rows[i] for i in pending], row_ids=[ids[i] for i in pending], retry=None,
                timeout=backoff.request_timeout_s)
        except Exception as exc:
            if not is_transient(exc):
                reason = _brief(exc)
                out.rejected.extend((rows[i], reason) for i in pending)
                return out
            problem = _brief(exc)
        else:
            by_index = {e.get("index"): e.get("errors") or [] for e in errors}
            again = []
            for k, i in enumerate(pending):
                row_errors = by_index.get(k)
                if row_errors is None:
                    out.written += 1
                elif any(e.get("reason") in PERMANENT_REASONS for e in row_errors):
                    out.rejected.append((rows[i], _reason_of(row_errors)))
                else:  # "stopped" (refused for another row), "timeout", "backendError", ...
                    again.append(i)
            if not again:
                return out
            problem = f"{len(again)} rows not written ({_reason_of(by_index[pending.index(again[0])])})"
            pending = again
        waited = clock() - started
        if waited + delay > backoff.give_up_s:
            raise BigQueryUnavailable(
                f"{table_id}: still failing after {waited:.0f} s and {out.retries} retries: {problem}")
        out.retries += 1
        _LOG.warning("BigQuery insert into %s failed (%s); %d rows sent again in %.1f s",
                     table_id, problem, len(pending), delay)
        sleep(delay * random.uniform(0.75, 1.25))
        delay = min(delay * 2, backoff.max_s)
    return out
