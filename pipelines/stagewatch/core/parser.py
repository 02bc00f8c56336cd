"""Parsing log lines into stage events: Cloud Logging LogEntry JSON (native) or plain JSON objects.

The parser never raises on input: every line comes back either as a ``StageEvent`` or as a ``Rejected`` with
a reason from ``REJECT_REASONS``, which the caller counts and dead-letters. Where it reads each field is a
``FieldMapping``; the default mapping has a faster path of its own that gives the same results.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import orjson

from stagewatch.core.events import BLANK, LIMITS, MAX_LINE_BYTES, FieldMapping, Limits, Rejected, StageEvent
from stagewatch.core.privacy import PAYLOADS, TRIMMED, KeySource, payload_chars, pseudonym
from stagewatch.core.records import DEAD_LINE_CHARS
from stagewatch.core.timeutil import parse_duration_s, parse_rfc3339_us
from stagewatch.core.values import as_str, identifier_problem, label, timestamp_us

__all__ = ["Parser"]

# Cloud Logging severities at or above ERROR mean the stage failed.
_FAILED_SEVERITIES = frozenset({"ERROR", "CRITICAL", "ALERT", "EMERGENCY"})


_Getter = Callable[[dict[str, Any]], Any]
_new_event = tuple.__new__  # StageEvent without NamedTuple's Python-level __new__: a third of the cost


class _Fields(msgspec.Struct):
    """What the default mapping reads from ``jsonPayload`` and ``labels``. ``Any``: the types are checked by
    ``_parse_default``, which leaves every unusual value to the generic path. Unset, not None, tells a
    ``duration_ms`` that is absent from one that is null."""

    uid: Any = None
    stage: Any = None
    tenant: Any = None
    lot: Any = None
    failed: Any = None
    duration_ms: Any = msgspec.UNSET


class _Http(msgspec.Struct):
    status: Any = None
    latency: Any = None


class _Entry(_Fields):
    """The fields of a LogEntry (or a plain JSON line) the default mapping reads; others are skipped."""

    jsonPayload: _Fields | None = None
    labels: _Fields | None = None
    httpRequest: _Http | None = None
    timestamp: Any = None
    insertId: Any = None
    insert_id: Any = None
    severity: Any = None
    status: Any = None


_decode_entry = msgspec.json.Decoder(_Entry).decode
_NO_FIELDS = _Fields()
_NO_HTTP = _Http()


def _compile_path(path: str) -> _Getter:
    """Turn ``"jsonPayload.uid"`` into a fast getter returning the value or ``None``."""
    parts = tuple(path.split("."))
    if len(parts) == 1:
        (a,) = parts
        return lambda o: o.get(a)
    if len(parts) == 2:
        a, b = parts

        def get2(o: dict[str, Any]) -> Any:
            inner = o.get(a)
            return inner.get(b) if type(inner) is dict else None

        return get2

    def get_n(o: dict[str, Any]) -> Any:
        cur: Any = o
        for p in parts:
            if type(cur) is not dict:
                return None
            cur = cur.get(p)
        return cur

    return get_n


def _first_of(getters: Sequence[_Getter]) -> _Getter:
    if len(getters) == 1:
        return getters[0]

    def first(o: dict[str, Any]) -> Any:
        for g in getters:
            v = g(o)
            if v is not None and v != "":
                return v
        return None

    return first


class Parser:
    """Turns raw lines (``bytes`` or ``str``) into ``StageEvent`` or ``Rejected``: ``parser.parse(line)``.
    Picklable for Beam."""

    parse: Callable[[bytes | str], StageEvent | Rejected]  # the default mapping's path or the generic one

    def __init__(self, mapping: FieldMapping | None = None, limits: Limits = LIMITS, uid_key: KeySource | None = None,
                 payload: str = TRIMMED) -> None:
        if payload not in PAYLOADS:
            raise ValueError(f"the dead-letter payload must be one of {', '.join(PAYLOADS)}; got {payload!r}")
        self.mapping = mapping or FieldMapping()
        self.limits = limits
        self.uid_key = uid_key  # uids become keyed hashes (core/privacy.py); the key is read where this parses
        self.payload = payload  # how much of a rejected line its dead letter keeps
        # Events whose reported latency was there but unusable (not a duration, or out of range): the field is
        # dropped, the event kept. The drivers add this to their counts.
        self.latencies_dropped = 0
        self._compile()

    def __getstate__(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "limits": self.limits, "uid_key": self.uid_key, "payload": self.payload}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.mapping = state["mapping"]
        self.limits = state.get("limits", LIMITS)
        self.uid_key = state.get("uid_key")
        self.payload = state.get("payload", TRIMMED)
        self.latencies_dropped = 0
        self._compile()

    def _compile(self) -> None:
        m = self.mapping
        # The default mapping has a hand-inlined path (``_parse_default``): field lookup is most of a parse.
        self._default = m == FieldMapping()
        self.parse = self._parse_default if self._default else self._parse_mapped

        def getter(paths: tuple[str, ...]) -> _Getter:
            return _first_of([_compile_path(p) for p in paths])

        self._uid = getter(m.uid)
        self._stage = getter(m.stage)
        self._tenant = getter(m.tenant)
        self._lot = getter(m.lot)
        self._ts = getter(m.timestamp)
        self._insert_id = getter(m.insert_id)
        self._severity = getter(m.severity)
        self._status = getter(m.http_status)
        self._latency = getter(m.latency)
        self._duration = getter(m.duration_ms)
        self._failed_flag = getter(m.extra_failed)
        if self.uid_key is not None or self.payload != TRIMMED:
            self.parse = self._shaped(self.parse)

    def _shaped(self, parse: Callable[[bytes | str], StageEvent | Rejected]) -> Callable[[bytes | str],
                                                                                          StageEvent | Rejected]:
        """``parse`` with the uid hashed and a rejected line kept whole or not at all: the one place both
        drivers see a line, so nothing downstream ever holds the raw uid or more of a line than asked."""
        key = self.uid_key.resolve() if self.uid_key is not None else None
        keep = payload_chars(self.payload)

        def shaped(raw: bytes | str) -> StageEvent | Rejected:
            out = parse(raw)
            if type(out) is StageEvent:
                return out if key is None else out._replace(uid=pseudonym(key, out.uid))
            assert isinstance(out, Rejected)
            return out if keep == DEAD_LINE_CHARS else out._replace(line=_preview(raw, keep))

        return shaped

    def _parse_mapped(self, raw: bytes | str) -> StageEvent | Rejected:
        if len(raw) * 4 > MAX_LINE_BYTES:
            too_large = _too_large(raw)
            if too_large is not None:
                return too_large
        return self._parse_generic(raw)

    def _parse_generic(self, raw: bytes | str) -> StageEvent | Rejected:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if not raw.strip():
                return Rejected(BLANK, "an empty line", "")
            return _classify_decode_error(raw, exc)
        if type(obj) is not dict:
            return Rejected("not_object", f"JSON {type(obj).__name__}, not an object", _preview(raw))
        limits = self.limits
        uid = as_str(self._uid(obj))
        if uid is None:
            return Rejected("missing_uid", "no uid at " + "|".join(self.mapping.uid), _preview(raw))
        problem = identifier_problem(uid, limits.max_uid_chars)
        if problem:
            return Rejected("bad_uid", "the uid " + problem, _preview(raw))
        stage = as_str(self._stage(obj))
        if stage is None:
            return Rejected("missing_stage", "no stage at " + "|".join(self.mapping.stage), _preview(raw))
        problem = identifier_problem(stage, limits.max_stage_chars)
        if problem:
            return Rejected("bad_stage", "the stage " + problem, _preview(raw))
        ts = self._ts(obj)
        try:
            t_us = timestamp_us(ts)
        except (ValueError, TypeError, OverflowError):
            return Rejected("bad_timestamp", f"timestamp {_shown(ts)} is not RFC 3339", _preview(raw))
        if not limits.min_time_us <= t_us < limits.max_time_us:
            return Rejected("bad_timestamp", f"timestamp {_shown(ts)} is outside {_year(limits.min_time_us)}"
                            f"-{_year(limits.max_time_us) - 1}", _preview(raw))
        return StageEvent(
            uid,
            stage,
            t_us,
            label(as_str(self._tenant(obj)), limits.max_label_chars),
            label(as_str(self._lot(obj)), limits.max_label_chars),
            as_str(self._insert_id(obj)),
            self._is_failed(obj),
            self._reported_ms(obj),
        )

    def _parse_default(self, raw: bytes | str) -> StageEvent | Rejected:
        """``parse`` for the default ``FieldMapping``, result for result the same as the generic path (a test
        holds them equal).

        msgspec decodes only the fields the mapping reads (``_Entry``), skipping the rest of the line without
        building it; the common line -- string fields, an INFO or DEFAULT severity, a status under 500, a
        latency like ``"1.234s"`` -- is finished here. Anything else (a line msgspec refuses, a number where a
        string belongs, a failure, another latency form) takes the generic path, which is the reference.
        """
        if len(raw) * 4 > MAX_LINE_BYTES:
            too_large = _too_large(raw)
            if too_large is not None:
                return too_large
        if not raw.isascii():
            # msgspec does not validate UTF-8 in the fields it skips; orjson (the generic path) does.
            try:
                raw.decode("utf-8") if type(raw) is bytes else raw.encode("utf-8")  # type: ignore[union-attr]
            except UnicodeError:
                return self._parse_generic(raw)
        try:
            e = _decode_entry(raw)
        except (msgspec.MsgspecError, RecursionError):
            return self._parse_generic(raw)
        jp = e.jsonPayload or _NO_FIELDS
        lb = e.labels or _NO_FIELDS
        uid = jp.uid
        if uid is None or uid == "":
            uid = lb.uid
            if uid is None or uid == "":
                uid = e.uid
        stage = jp.stage
        if stage is None or stage == "":
            stage = lb.stage
            if stage is None or stage == "":
                stage = e.stage
        tenant = jp.tenant
        if tenant is None or tenant == "":
            tenant = lb.tenant
            if tenant is None or tenant == "":
                tenant = e.tenant
        lot = jp.lot
        if lot is None or lot == "":
            lot = lb.lot
            if lot is None or lot == "":
                lot = e.lot
        insert_id = e.insertId
        if insert_id is None or insert_id == "":
            insert_id = e.insert_id
        ts = e.timestamp
        http = e.httpRequest or _NO_HTTP
        severity = e.severity
        status = http.status
        if status is None:
            status = e.status
        latency = http.latency
        limits = self.limits
        if (
            type(uid) is not str
            or not uid
            or type(stage) is not str
            or not stage
            or type(ts) is not str
            or not (tenant is None or type(tenant) is str)
            or not (lot is None or type(lot) is str)
            # Anything an identifier or label must not be: the generic path says why, or cleans it.
            or len(uid) > limits.max_uid_chars
            or not uid.isprintable()
            or len(stage) > limits.max_stage_chars
            or not stage.isprintable()
            or (tenant and (len(tenant) > limits.max_label_chars or not tenant.isprintable()))
            or (lot and (len(lot) > limits.max_label_chars or not lot.isprintable()))
            or not (insert_id is None or type(insert_id) is str)
            or not (severity is None or severity == "INFO" or severity == "DEFAULT")
            or not (status is None or (type(status) is int and status < 500))
            or not ((type(latency) is str and latency[-1:] == "s") or latency is None)
        ):
            return self._parse_generic(raw)
        try:
            t_us = parse_rfc3339_us(ts)
        except ValueError:
            return self._parse_generic(raw)
        if not limits.min_time_us <= t_us < limits.max_time_us:
            return self._parse_generic(raw)
        reported: float | None = None
        if latency is not None:
            try:
                reported = float(latency[:-1]) * 1000.0
            except ValueError:
                return self._parse_generic(raw)
            if not 0 <= reported <= limits.max_latency_ms:
                return self._parse_generic(raw)
        elif jp.duration_ms is not msgspec.UNSET or e.duration_ms is not msgspec.UNSET:
            return self._parse_generic(raw)
        failed = jp.failed
        if failed is None or failed == "":
            failed = e.failed
        return _new_event(
            StageEvent, (uid, stage, t_us, tenant or None, lot or None, insert_id or None, failed is True, reported)
        )

    def _is_failed(self, obj: dict[str, Any]) -> bool:
        severity = self._severity(obj)
        if severity is not None:
            if type(severity) is str:
                if severity.upper() in _FAILED_SEVERITIES:
                    return True
            elif isinstance(severity, int) and not isinstance(severity, bool) and severity >= 500:
                return True
        status = self._status(obj)
        if isinstance(status, int) and not isinstance(status, bool) and status >= 500:
            return True
        return self._failed_flag(obj) is True

    def _reported_ms(self, obj: dict[str, Any]) -> float | None:
        """The latency the line reports about itself, in ms within ``[0, max_latency_ms]``; None when it reports
        none -- or an unusable one, which is counted (``latencies_dropped``)."""
        latency, ms = self._latency(obj), None
        if type(latency) is str:
            with contextlib.suppress(ValueError):
                ms = parse_duration_s(latency) * 1000.0
        elif type(latency) is dict:  # a protobuf Duration as an object: {"seconds": 1, "nanos": 5e8}
            with contextlib.suppress(TypeError, ValueError):
                ms = float(latency.get("seconds", 0)) * 1000.0 + float(latency.get("nanos", 0)) / 1e6
        if latency is None or ms is None:
            duration = self._duration(obj)
            if isinstance(duration, int | float) and not isinstance(duration, bool):
                ms = float(duration)
            elif duration is None and latency is None:
                return None
        if ms is not None and 0 <= ms <= self.limits.max_latency_ms:  # NaN fails both comparisons
            return ms
        self.latencies_dropped += 1
        return None


def _shown(value: Any) -> str:
    return repr(str(value)[:60])


def _year(t_us: int) -> int:
    return 1970 + round(t_us / (365.2425 * 24 * 3600 * 1e6))


def _too_large(raw: bytes | str) -> Rejected | None:
    size = len(raw)
    if type(raw) is str:  # a character is up to 4 bytes of UTF-8
        size = len(raw.encode("utf-8", errors="surrogatepass"))
    if size > MAX_LINE_BYTES:
        return Rejected("too_large", f"line of {size} bytes exceeds {MAX_LINE_BYTES}", _preview(raw))
    return None


def _preview(raw: bytes | str, keep: int = DEAD_LINE_CHARS) -> str:
    if isinstance(raw, bytes):
        return raw[:keep].decode("utf-8", errors="replace")
    return raw[:keep]


def _classify_decode_error(raw: bytes | str, exc: orjson.JSONDecodeError) -> Rejected:
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejected("not_utf8", f"invalid UTF-8 at byte {uexc.start}", _preview(raw))
    return Rejected("invalid_json", str(exc)[:200], _preview(raw))
