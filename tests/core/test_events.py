"""``stagewatch.core.events``: ``Parser`` and ``FieldMapping`` — log lines into ``StageEvent`` or ``Rejected``."""

from __future__ import annotations

import json
import math
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewatch.core.events import BLANK, LIMITS, MAX_LINE_BYTES, REJECT_REASONS, FieldMapping, Rejected, StageEvent
from stagewatch.core.parser import Parser

pytestmark = pytest.mark.unit

# CI layout: the shared directory sits beside the repository checkout.
SHARED_EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "logentry-example.json"

TS = "2026-06-06T08:21:26.343874838Z"
T_US = 1_780_734_086_343_874  # TS truncated to microseconds
T_S = 1_780_734_086
S = 1_000_000


def line(**fields: Any) -> bytes:
    """A plain JSON line with a uid, a stage and a timestamp unless overridden (None drops a field)."""
    obj: dict[str, Any] = {"uid": "u1", "stage": "scan", "timestamp": TS}
    obj.update(fields)
    return json.dumps({k: v for k, v in obj.items() if v is not None}).encode()


def parse_ok(raw: bytes | str, parser: Parser | None = None) -> StageEvent:
    result = (parser or Parser()).parse(raw)
    assert isinstance(result, StageEvent), result
    return result


def parse_rejected(raw: bytes | str, parser: Parser | None = None) -> Rejected:
    result = (parser or Parser()).parse(raw)
    assert isinstance(result, Rejected), result
    return result


# --- the shared LogEntry example ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_bytes() -> bytes:
    if not SHARED_EXAMPLE.is_file():
        pytest.fail(
            f"shared LogEntry example not found at {SHARED_EXAMPLE}: the tests expect the 'shared' directory "
            "beside the repository checkout (../shared/logentry-example.json)"
        )
    return SHARED_EXAMPLE.read_bytes()


def test_shared_logentry_example(example_bytes: bytes) -> None:
    ev = parse_ok(example_bytes)
    assert ev.uid == "f-20260606-000123"
    assert ev.stage == "register"
    assert ev.tenant == "acme"
    assert ev.lot == "lot-acme-0606-01"
    assert ev.insert_id == "1x8k2f3g4h5j6k"
    assert ev.failed is False
    assert ev.reported_ms == pytest.approx(134.0)
    # The example's own timestamp, truncated (not rounded) to microseconds, checked through datetime.
    raw_ts = json.loads(example_bytes)["timestamp"]
    whole, frac = raw_ts.rstrip("Z").split(".")
    dt = datetime.fromisoformat(whole).replace(tzinfo=UTC) + timedelta(microseconds=int(frac[:6]))
    assert ev.t_us == (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert ev.t_us == T_US
    assert ev.dedup_key() == "1x8k2f3g4h5j6k"


def test_shared_example_as_str_and_compact_line(example_bytes: bytes) -> None:
    compact = json.dumps(json.loads(example_bytes), separators=(",", ":"))
    assert "\n" not in compact
    assert Parser().parse(compact) == Parser().parse(example_bytes)
    assert Parser().parse(compact.encode()) == Parser().parse(example_bytes)


def test_shared_example_failed_when_severity_error(example_bytes: bytes) -> None:
    obj = json.loads(example_bytes)
    obj["severity"] = "ERROR"
    assert parse_ok(json.dumps(obj)).failed is True


# --- plain JSON lines, fallbacks, epoch numbers -------------------------------------------------------------


def test_plain_json_line() -> None:
    ev = parse_ok(line())
    assert ev == StageEvent("u1", "scan", T_US, None, None, None, False, None)
    assert ev.dedup_key() == ("u1", "scan", T_US)


def test_plain_json_line_with_optional_fields() -> None:
    ev = parse_ok(line(tenant="acme", lot="lot-1", insert_id="ins-9", duration_ms=12.5))
    assert (ev.tenant, ev.lot, ev.insert_id, ev.reported_ms) == ("acme", "lot-1", "ins-9", 12.5)


def test_labels_fallback_for_uid_and_stage() -> None:
    raw = json.dumps(
        {"labels": {"uid": "u-lab", "stage": "ocr", "tenant": "t-lab", "lot": "l-lab"}, "timestamp": TS}
    )
    ev = parse_ok(raw)
    assert (ev.uid, ev.stage, ev.tenant, ev.lot) == ("u-lab", "ocr", "t-lab", "l-lab")


def test_json_payload_wins_over_labels_and_top_level() -> None:
    raw = json.dumps(
        {
            "jsonPayload": {"uid": "u-jp", "stage": "s-jp"},
            "labels": {"uid": "u-lab", "stage": "s-lab"},
            "uid": "u-top",
            "stage": "s-top",
            "timestamp": TS,
        }
    )
    ev = parse_ok(raw)
    assert (ev.uid, ev.stage) == ("u-jp", "s-jp")


def test_empty_string_falls_through_to_the_next_path() -> None:
    raw = json.dumps(
        {
            "jsonPayload": {"uid": "", "stage": ""},
            "labels": {"uid": "u-lab"},
            "stage": "s-top",
            "timestamp": TS,
        }
    )
    ev = parse_ok(raw)
    assert (ev.uid, ev.stage) == ("u-lab", "s-top")


def test_numeric_uid_is_stringified() -> None:
    assert parse_ok(line(uid=123)).uid == "123"


def test_insert_id_fallback() -> None:
    assert parse_ok(line(insertId="a")).insert_id == "a"
    assert parse_ok(line(insert_id="b")).insert_id == "b"
    assert parse_ok(line(insertId="a", insert_id="b")).insert_id == "a"


@pytest.mark.parametrize(
    ("timestamp", "t_us"),
    [
        (T_S, T_S * 1_000_000),  # epoch seconds
        (T_S + 0.5, T_S * 1_000_000 + 500_000),  # fractional epoch seconds
        (T_S * 1000 + 343, T_S * 1_000_000 + 343_000),  # epoch milliseconds
        (T_S * 1_000_000 + 343_874, T_S * 1_000_000 + 343_874),  # epoch microseconds
        ("2026-06-06T17:21:26.343874+09:00", T_US),
    ],
)
def test_timestamp_forms(timestamp: Any, t_us: int) -> None:
    assert parse_ok(line(timestamp=timestamp)).t_us == t_us


def test_bytes_and_str_parse_the_same() -> None:
    raw = line(tenant="t\u00e9nant")
    assert Parser().parse(raw) == Parser().parse(raw.decode())


# --- every reject reason ------------------------------------------------------------------------------------


def _too_large() -> bytes:
    return line(pad="x" * MAX_LINE_BYTES)


REJECT_CASES: list[tuple[str, bytes | str]] = [
    ("too_large", _too_large()),
    ("not_utf8", b'{"uid": "u1", "stage": "scan", "timestamp": "' + TS.encode() + b'", "x": "\xff"}'),
    ("not_utf8", b"\xff\xfe"),
    ("invalid_json", b'{"uid": "u1", "stage": '),
    ("invalid_json", "not json at all"),
    ("invalid_json", b"{'uid': 'u1'}"),
    ("not_object", b'["u1", "scan"]'),
    ("not_object", b"42"),
    ("not_object", b'"a string"'),
    ("not_object", b"null"),
    ("not_object", b"true"),
    ("missing_uid", json.dumps({"stage": "scan", "timestamp": TS})),
    ("missing_uid", line(uid="")),
    ("missing_uid", line(uid={"nested": "x"})),
    ("missing_uid", line(uid=True)),
    ("bad_uid", line(uid="f-1\x1b[2J")),  # a terminal escape
    ("bad_uid", line(uid="f-1\u202e")),  # a bidi override
    ("bad_uid", line(uid="f\x00-1")),
    ("bad_uid", line(uid="f\u0085-1")),  # C1
    ("bad_uid", line(uid="f" * 513)),
    ("missing_stage", json.dumps({"uid": "u1", "timestamp": TS})),
    ("missing_stage", line(stage="")),
    ("missing_stage", line(stage=["scan"])),
    ("bad_stage", line(stage="scan\n")),
    ("bad_stage", line(stage="s" * 129)),
    ("bad_timestamp", json.dumps({"uid": "u1", "stage": "scan"})),
    ("bad_timestamp", line(timestamp="yesterday")),
    ("bad_timestamp", line(timestamp={"seconds": T_S})),
    ("bad_timestamp", line(timestamp=True)),
    ("bad_timestamp", line(timestamp=False)),
    ("bad_timestamp", line(timestamp="")),
    ("bad_timestamp", line(timestamp=0)),
    ("bad_timestamp", line(timestamp=-5)),
    ("bad_timestamp", line(timestamp=[TS])),
    ("bad_timestamp", line(timestamp="2026-02-30T08:21:26Z")),
    # Parseable, but no time of this pipeline's logs: outside 2000-2199 (the clocks downstream would break).
    ("bad_timestamp", line(timestamp="1970-01-01T00:00:00Z")),
    ("bad_timestamp", line(timestamp="9999-12-31T23:59:59Z")),
    ("bad_timestamp", line(timestamp="9999-12-31T23:59:60Z")),
    ("bad_timestamp", line(timestamp="0000-01-01T00:00:00Z")),
    ("bad_timestamp", line(timestamp=1e308)),
    ("bad_timestamp", line(timestamp=253_402_300_800)),  # epoch seconds of year 10000
]


@pytest.mark.parametrize(("reason", "raw"), REJECT_CASES)
def test_reject_reasons(reason: str, raw: bytes | str) -> None:
    rejected = parse_rejected(raw)
    assert rejected.reason == reason
    assert rejected.reason in REJECT_REASONS
    assert isinstance(rejected.detail, str) and rejected.detail
    assert isinstance(rejected.line, str)
    assert len(rejected.line) <= 1000


@pytest.mark.parametrize("raw", [b"", "", b"   ", b"\t", " \r"])
def test_a_blank_line_is_blank_not_a_reject(raw: bytes | str) -> None:
    rejected = parse_rejected(raw)
    assert rejected.reason == BLANK and rejected.line == ""


@pytest.mark.parametrize("parser", [Parser(), Parser(FieldMapping(uid=("jsonPayload.uid",)))],
                         ids=["default_mapping", "generic_path"])
def test_an_unusable_reported_latency_is_dropped_and_counted_the_event_kept(parser: Parser) -> None:
    """The event's time is sound; only what the line says of its own duration is not: the field goes, the event
    stays, and the parser counts it (the drivers report ``latencies_dropped``)."""
    for latency in ("1e308s", "-1s", "2592001s", "abc", "nans", "infs"):
        raw = json.dumps({"jsonPayload": {"uid": "u1", "stage": "scan"}, "timestamp": TS,
                          "httpRequest": {"latency": latency}})
        ev = parser.parse(raw)
        assert isinstance(ev, StageEvent) and ev.reported_ms is None, latency
    assert parser.latencies_dropped == 6
    for duration in (-3, 1e300):  # (an infinite number is not JSON: the line is rejected, invalid_json)
        ev = parser.parse(json.dumps({"jsonPayload": {"uid": "u1", "stage": "scan", "duration_ms": duration},
                                      "timestamp": TS}))
        assert isinstance(ev, StageEvent) and ev.reported_ms is None, duration
    assert parser.latencies_dropped == 8
    ok = parser.parse(json.dumps({"jsonPayload": {"uid": "u1", "stage": "scan"}, "timestamp": TS,
                                  "httpRequest": {"latency": "2592000s"}}))  # 30 days: the longest kept
    assert isinstance(ok, StageEvent) and ok.reported_ms == 2_592_000_000.0 and parser.latencies_dropped == 8


def test_tenant_and_lot_are_cleaned_not_rejected() -> None:
    for parser in (Parser(), Parser(FieldMapping(uid=("jsonPayload.uid",)))):
        ev = parser.parse(json.dumps({"jsonPayload": {"uid": "u1", "stage": "scan", "tenant": "acme\u202e\x1b[0m",
                                                      "lot": "l" * 300}, "timestamp": TS}))
        assert isinstance(ev, StageEvent)
        assert ev.tenant == "acme[0m" and ev.lot == "l" * 256
        gone = parser.parse(json.dumps({"jsonPayload": {"uid": "u1", "stage": "scan", "tenant": "\x00\x07"},
                                        "timestamp": TS}))
        assert isinstance(gone, StageEvent) and gone.tenant is None


def test_times_near_the_edges_of_the_window_parse() -> None:
    for text, want in (("2099-12-31T23:59:59-23:59", 4_102_531_139_000_000), ("2000-01-01T00:00:00Z", 946_684_800 * S),
                       ("2016-12-31T23:59:60Z", 1_483_228_800 * S)):  # a leap second: the next second's first
        ev = Parser().parse(line(timestamp=text))
        assert isinstance(ev, StageEvent) and ev.t_us == want, text
    assert parse_rejected(line(timestamp="1999-12-31T23:59:59.999999Z")).reason == "bad_timestamp"
    assert parse_rejected(line(timestamp="2200-01-01T00:00:00Z")).reason == "bad_timestamp"


def test_every_reject_reason_is_covered() -> None:
    assert {reason for reason, _ in REJECT_CASES} == set(REJECT_REASONS)


def test_reject_reason_order_first_problem_wins() -> None:
    # No uid, no stage and no timestamp: the earliest check in REJECT_REASONS names the line.
    assert parse_rejected(b"{}").reason == "missing_uid"
    assert parse_rejected(json.dumps({"uid": "u1"})).reason == "missing_stage"
    # Too large beats not UTF-8.
    assert parse_rejected(b"\xff" * (MAX_LINE_BYTES + 1)).reason == "too_large"


def test_line_exactly_at_the_size_limit_is_parsed() -> None:
    base = line(pad="")
    raw = line(pad="x" * (MAX_LINE_BYTES - len(base)))
    assert len(raw) == MAX_LINE_BYTES
    parse_ok(raw)
    assert parse_rejected(line(pad="x" * (MAX_LINE_BYTES - len(base) + 1))).reason == "too_large"


def test_too_large_str_line() -> None:
    assert parse_rejected(_too_large().decode()).reason == "too_large"


def test_too_large_counts_utf8_bytes_of_str_lines() -> None:
    raw = '{"uid": "u1", "stage": "scan", "timestamp": "2026-06-06T08:21:26Z", "pad": "%s"}' % (
        "\u00e9" * (MAX_LINE_BYTES // 2 + 10)
    )
    assert len(raw) < MAX_LINE_BYTES < len(raw.encode())
    assert parse_rejected(raw).reason == "too_large"


def test_rejected_preview_is_decoded_leniently_and_truncated() -> None:
    rejected = parse_rejected(b"\xff" + b"a" * 5000)
    assert rejected.reason == "not_utf8"
    assert rejected.line.startswith("\ufffd")
    assert len(rejected.line) == 1000


# --- failure detection --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "failed"),
    [
        ({}, False),
        ({"severity": "INFO"}, False),
        ({"severity": "DEFAULT"}, False),
        ({"severity": "DEBUG"}, False),
        ({"severity": "NOTICE"}, False),
        ({"severity": "WARNING"}, False),
        ({"severity": "ERROR"}, True),
        ({"severity": "CRITICAL"}, True),
        ({"severity": "ALERT"}, True),
        ({"severity": "EMERGENCY"}, True),
        ({"severity": "error"}, True),
        ({"severity": "Critical"}, True),
        ({"severity": "alert"}, True),
        ({"severity": "eMeRgEnCy"}, True),
        ({"severity": 400}, False),
        ({"severity": 499}, False),
        ({"severity": 500}, True),
        ({"severity": 800}, True),
        ({"httpRequest": {"status": 200}}, False),
        ({"httpRequest": {"status": 404}}, False),
        ({"httpRequest": {"status": 499}}, False),
        ({"httpRequest": {"status": 500}}, True),
        ({"httpRequest": {"status": 503}}, True),
        ({"status": 502}, True),  # plain-line fallback
        ({"status": 499}, False),
        ({"severity": "WARNING", "httpRequest": {"status": 499}}, False),
        ({"severity": "INFO", "httpRequest": {"status": 500}}, True),
        ({"severity": "ERROR", "httpRequest": {"status": 200}}, True),
        ({"jsonPayload": {"failed": True}}, True),
        ({"failed": True}, True),
        ({"failed": "true"}, False),  # only a JSON true counts
        ({"failed": 1}, False),
    ],
)
def test_failure_detection(fields: dict[str, Any], failed: bool) -> None:
    assert parse_ok(line(**fields)).failed is failed


# --- reported latency ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reported_ms"),
    [
        ({}, None),
        ({"httpRequest": {"latency": "1.234s"}}, 1234.0),
        ({"httpRequest": {"latency": "0s"}}, 0.0),
        ({"httpRequest": {"latency": {"seconds": 1, "nanos": 500_000_000}}}, 1500.0),
        ({"httpRequest": {"latency": {"seconds": 2}}}, 2000.0),
        ({"httpRequest": {"latency": {"nanos": 250_000_000}}}, 250.0),
        ({"httpRequest": {"latency": {"seconds": "3", "nanos": 0}}}, 3000.0),  # int64 as a JSON string
        ({"jsonPayload": {"duration_ms": 250}}, 250.0),
        ({"duration_ms": 12.5}, 12.5),
        ({"duration_ms": 0}, 0.0),
        # a bad latency string is ignored ...
        ({"httpRequest": {"latency": "fast"}}, None),
        ({"httpRequest": {"latency": "1.2ms"}}, None),
        ({"httpRequest": {"latency": "abcs"}}, None),
        ({"httpRequest": {"latency": {"seconds": "x"}}}, None),
        ({"httpRequest": {"latency": {"seconds": [1]}}}, None),
        ({"httpRequest": {"latency": 1.5}}, None),
        # ... and the next source is used
        ({"httpRequest": {"latency": "fast"}, "duration_ms": 40}, 40.0),
        ({"httpRequest": {"latency": {"seconds": "x"}}, "jsonPayload": {"duration_ms": 41}}, 41.0),
        # latency wins over duration_ms
        ({"httpRequest": {"latency": "0.5s"}, "duration_ms": 40}, 500.0),
        # unusable duration_ms values
        ({"duration_ms": -1}, None),
        ({"duration_ms": "40"}, None),
        ({"duration_ms": True}, None),
    ],
)
def test_reported_latency(fields: dict[str, Any], reported_ms: float | None) -> None:
    got = parse_ok(line(**fields)).reported_ms
    if reported_ms is None:
        assert got is None
    else:
        assert got == pytest.approx(reported_ms, rel=1e-12)


@pytest.mark.parametrize("latency", ["nans", "infs", "-1.5s", {"seconds": -3}, {"seconds": "nan"}], ids=str)
def test_reported_latency_rejects_non_finite_and_negative(latency: Any) -> None:
    got = parse_ok(line(httpRequest={"latency": latency})).reported_ms
    assert got is None


# --- FieldMapping -------------------------------------------------------------------------------------------


def test_custom_field_mapping() -> None:
    mapping = FieldMapping.from_dict({"uid": "jsonPayload.file_id", "stage": ["labels.step"]})
    assert mapping.uid == ("jsonPayload.file_id",)
    assert mapping.stage == ("labels.step",)
    assert mapping.timestamp == FieldMapping().timestamp  # the rest keeps its defaults
    parser = Parser(mapping)
    raw = json.dumps(
        {
            "jsonPayload": {"file_id": "f-9", "tenant": "acme"},
            "labels": {"step": "ocr"},
            "timestamp": TS,
            "severity": "CRITICAL",
        }
    )
    ev = parse_ok(raw, parser)
    assert (ev.uid, ev.stage, ev.t_us, ev.tenant, ev.failed) == ("f-9", "ocr", T_US, "acme", True)
    # The default locations are no longer consulted.
    rejected = parse_rejected(line(), parser)
    assert rejected.reason == "missing_uid"
    assert "jsonPayload.file_id" in rejected.detail
    missing_stage = json.dumps({"jsonPayload": {"file_id": "f-9", "stage": "ocr"}, "timestamp": TS})
    assert parse_rejected(missing_stage, parser).reason == "missing_stage"


def test_custom_mapping_deep_paths_and_fallbacks() -> None:
    mapping = FieldMapping.from_dict(
        {"uid": ["a.b.c.uid", "uid"], "timestamp": ["meta.time", "timestamp"], "duration_ms": "x.y.z"}
    )
    parser = Parser(mapping)
    deep = json.dumps(
        {"a": {"b": {"c": {"uid": "deep"}}}, "stage": "s", "meta": {"time": T_S}, "x": {"y": {"z": 7}}}
    )
    ev = parse_ok(deep, parser)
    assert (ev.uid, ev.t_us, ev.reported_ms) == ("deep", T_S * 1_000_000, 7.0)
    # A non-object on the way down is "not there", not an error.
    shallow = json.dumps({"a": {"b": "scalar"}, "uid": "top", "stage": "s", "timestamp": TS})
    assert parse_ok(shallow, parser).uid == "top"


def test_field_mapping_from_empty_dict_is_the_default() -> None:
    assert FieldMapping.from_dict({}) == FieldMapping()


@pytest.mark.parametrize(
    "raw",
    [
        {"uuid": "jsonPayload.uid"},  # unknown key
        {"uid": "x", "bogus": "y"},
        {"uid": ""},  # empty path
        {"uid": []},  # no paths
        {"stage": ["labels.step", ""]},
        {"stage": ["labels.step", 3]},
    ],
)
def test_field_mapping_from_dict_rejects(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FieldMapping.from_dict(raw)


# --- pickling -----------------------------------------------------------------------------------------------

PICKLE_LINES: list[bytes | str] = [
    line(),
    line(severity="ERROR", httpRequest={"latency": "0.25s"}, tenant="t", lot="l", insertId="i"),
    json.dumps({"jsonPayload": {"file_id": "f-1"}, "labels": {"step": "ocr"}, "timestamp": TS}),
    b"[1, 2]",
    b"\xff",
    line(timestamp="yesterday"),
]


@pytest.mark.parametrize(
    "mapping", [None, FieldMapping.from_dict({"uid": "jsonPayload.file_id", "stage": ["labels.step"]})]
)
def test_parser_pickle_round_trip(mapping: FieldMapping | None) -> None:
    parser = Parser(mapping)
    clone = pickle.loads(pickle.dumps(parser))
    assert clone.mapping == parser.mapping
    for raw in PICKLE_LINES:
        assert clone.parse(raw) == parser.parse(raw)


def test_stage_event_pickles() -> None:
    ev = parse_ok(line(severity="ERROR"))
    assert pickle.loads(pickle.dumps(ev)) == ev


def _check(result: object) -> None:
    assert isinstance(result, StageEvent | Rejected), result
    if isinstance(result, Rejected):
        assert result.reason in REJECT_REASONS or result.reason == BLANK
        assert isinstance(result.detail, str)
        assert isinstance(result.line, str)
    else:
        assert isinstance(result.uid, str) and result.uid and result.uid.isprintable()
        assert isinstance(result.stage, str) and result.stage and result.stage.isprintable()
        assert all(v is None or (v and v.isprintable()) for v in (result.tenant, result.lot))
        assert LIMITS.min_time_us <= result.t_us < LIMITS.max_time_us
        assert result.reported_ms is None or 0 <= result.reported_ms <= LIMITS.max_latency_ms
        assert type(result.t_us) is int
        assert isinstance(result.failed, bool)


# --- the default-mapping fast path agrees with the generic path ---------------------------------------------

# Semantically the default mapping (a repeated fallback path changes nothing), but not equal to it, so the
# parser takes the generic, path-compiled route rather than any default-mapping shortcut.
_GENERIC = Parser(FieldMapping(insert_id=("insertId", "insert_id", "insert_id")))
_DEFAULT = Parser()


def _same(a: StageEvent | Rejected, b: StageEvent | Rejected) -> bool:
    def norm(x: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in x)

    return type(a) is type(b) and norm(a) == norm(b)


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**16),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "u",
            "INFO",
            "DEFAULT",
            "WARNING",
            "error",
            "1.5s",
            "xs",
            TS,
            "2026-06-06T08:21:26+09:00",
            "yesterday",
        ]
    ),
    st.integers(min_value=100, max_value=600),
)
_field_keys = st.sampled_from(
    [
        "uid",
        "stage",
        "tenant",
        "lot",
        "timestamp",
        "insertId",
        "insert_id",
        "severity",
        "status",
        "failed",
        "duration_ms",
        "latency",
        "seconds",
        "nanos",
    ]
)
_values = st.recursive(
    _leaf,
    lambda inner: st.dictionaries(
        _field_keys | st.sampled_from(["jsonPayload", "labels", "httpRequest"]), inner, max_size=6
    ),
    max_leaves=15,
)
_log_objects = st.dictionaries(
    st.sampled_from(
        [
            "jsonPayload",
            "labels",
            "httpRequest",
            "uid",
            "stage",
            "timestamp",
            "severity",
            "status",
            "failed",
            "insertId",
            "insert_id",
            "duration_ms",
            "tenant",
            "lot",
        ]
    ),
    _values,
    max_size=10,
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=_log_objects)
def test_default_mapping_agrees_with_generic_path(obj: dict[str, Any]) -> None:
    """Also a fuzz test: log-shaped objects reach deep into both paths, and neither may raise."""
    raw = json.dumps(obj).encode()
    default, generic = _DEFAULT.parse(raw), _GENERIC.parse(raw)
    _check(default)
    _check(generic)
    assert _same(default, generic), (default, generic)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(
            {"uid": "u", "stage": "s", "timestamp": TS, "jsonPayload": {"failed": ""}, "failed": True},
            id="empty-jsonPayload.failed",
        ),
        pytest.param(
            {"uid": "u", "stage": "s", "timestamp": TS, "httpRequest": {"status": ""}, "status": 503},
            id="empty-httpRequest.status",
        ),
        pytest.param(
            {
                "uid": "u",
                "stage": "s",
                "timestamp": TS,
                "jsonPayload": {"uid": False},
                "labels": {"uid": "x"},
            },
            id="false-uid",
        ),
        pytest.param(
            {"uid": "u", "stage": "s", "timestamp": TS, "insertId": "", "insert_id": "b"}, id="empty-insertId"
        ),
    ],
)
def test_default_mapping_agrees_with_generic_path_examples(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj)
    assert _same(_DEFAULT.parse(raw), _GENERIC.parse(raw)), (_DEFAULT.parse(raw), _GENERIC.parse(raw))


# --- fuzz: the parser never raises --------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    _check(Parser().parse(raw))


@settings(max_examples=300, deadline=None)
@given(raw=st.text(alphabet=st.characters(exclude_categories=()), max_size=200))
def test_fuzz_arbitrary_text_including_surrogates(raw: str) -> None:
    _check(Parser().parse(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_json_values)
def test_fuzz_arbitrary_json_values(value: Any) -> None:
    raw = json.dumps(value)
    _check(Parser().parse(raw))
    _check(Parser().parse(raw.encode()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_json_values, cut=st.integers(min_value=0, max_value=400))
def test_fuzz_truncated_json(value: Any, cut: int) -> None:
    raw = json.dumps({"uid": "u", "stage": "s", "timestamp": TS, "x": value}).encode()[:cut]
    _check(Parser().parse(raw))
