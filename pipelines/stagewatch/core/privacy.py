"""What a log line's values may become in the outputs: uids as keyed hashes, dead letters with or without payload.

A file's uid can be personal data (a patient's file, a customer's document name). With a uid key, the parser
replaces each uid by ``h-`` and the first 32 hex digits (128 bits) of HMAC-SHA256(key, uid) before any step
keeps it: traces, anomalies, incidents, lots, Pub/Sub messages and BigQuery rows only ever hold the hash, and
the same uid gets the same hash in every run with the same key, so a file's lines still join and ``explain``
finds it by hashing the raw uid it is given with that key. Without the key the hash cannot be turned back or
tested against guesses (a plain SHA-256 of a uid could: uids are often guessable).

Only *where* the key is (``stagewatch.secrets.UidKey``: a Secret Manager secret, else ``$STAGEWATCH_UID_KEY``)
travels with the pipeline's graph; each worker reads the key itself, so the key is never in a staged file or a
job's graph.

Dead letters hold the line they are about (``dead_letter_payload``): ``trimmed`` (the default: its first 1,000
characters), ``full`` (the whole line, up to the parser's 256 KiB line limit) or ``none`` (the reason, detail,
time and step only -- for logs whose lines are personal data; uids in a kept line are raw, the pseudonym
covers the parsed uid only).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Protocol

__all__ = ["FULL", "MIN_KEY_BYTES", "NONE", "PAYLOADS", "TRIMMED", "UID_KEY_ENV", "KeySource", "default_payload",
           "is_pseudonym", "payload_chars", "pseudonym"]

UID_KEY_ENV = "STAGEWATCH_UID_KEY"
MIN_KEY_BYTES = 16  # 128 bits: shorter keys can be searched
FULL, TRIMMED, NONE = "full", "trimmed", "none"
PAYLOADS = (FULL, TRIMMED, NONE)


def default_payload(given: str | None, hashed: bool) -> str:
    """The dead-letter payload asked for, else ``none`` when uids are hashed (a rejected line may hold a raw uid)
    and ``trimmed`` otherwise: the same rule for replay and the streaming job."""
    return given or (NONE if hashed else TRIMMED)


def payload_chars(payload: str) -> int:
    """How many characters of a rejected line its dead letter keeps."""
    from stagewatch.core.events import MAX_LINE_BYTES
    from stagewatch.core.records import DEAD_LINE_CHARS

    return {FULL: MAX_LINE_BYTES, TRIMMED: DEAD_LINE_CHARS, NONE: 0}[payload]


def pseudonym(key: bytes, uid: str) -> str:
    """The uid as the outputs hold it: ``h-`` + 32 hex digits of HMAC-SHA256(key, uid)."""
    return "h-" + hmac.new(key, uid.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


_PSEUDONYM = re.compile(r"h-[0-9a-f]{32}")


def is_pseudonym(uid: str) -> bool:
    """Whether ``uid`` has the shape of a ``pseudonym`` (a run with hashed uids wrote it; the logs hold the raw
    uid, not this)."""
    return _PSEUDONYM.fullmatch(uid) is not None


class KeySource(Protocol):
    """Where a uid key is read from (``stagewatch.secrets.UidKey``): only this place is pickled with a parser."""

    def resolve(self) -> bytes: ...
