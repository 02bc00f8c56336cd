"""``stagewatch.core.timeutil``: RFC 3339 parsing to integer microseconds, formatting, human durations."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewatch.core.timeutil import (
    US_PER_MS,
    US_PER_S,
    format_duration_ms,
    format_rfc3339,
    parse_duration_s,
    parse_rfc3339_us,
)

pytestmark = pytest.mark.unit

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 2026-06-06T08:21:26Z, the shared LogEntry example's second.
T_EXAMPLE_S = 1_780_734_086


def _us(dt: datetime) -> int:
    """Exact epoch microseconds of an aware datetime (no float arithmetic)."""
    return (dt - EPOCH) // timedelta(microseconds=1)


def test_constants() -> None:
    assert US_PER_MS == 1_000
    assert US_PER_S == 1_000_000


# --- parse_rfc3339_us: zones --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-06-06T08:21:26Z",
        "2026-06-06T08:21:26z",
        "2026-06-06T17:21:26+09:00",
        "2026-06-06T02:51:26-05:30",
        "2026-06-06T08:21:26+00:00",
        "2026-06-06T08:21:26-00:00",
        "2026-06-06t08:21:26Z",  # RFC 3339 allows a lowercase t ...
        "2026-06-06 08:21:26Z",  # ... and a space as the date/time separator
    ],
)
def test_zones_and_separators_name_the_same_instant(text: str) -> None:
    assert parse_rfc3339_us(text) == T_EXAMPLE_S * US_PER_S


def test_offset_crossing_midnight_and_year() -> None:
    assert parse_rfc3339_us("2027-01-01T08:59:59+09:00") == _us(
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    )
    assert parse_rfc3339_us("2026-12-31T19:00:00-05:00") == _us(datetime(2027, 1, 1, tzinfo=UTC))


def test_epoch_and_pre_epoch() -> None:
    assert parse_rfc3339_us("1970-01-01T00:00:00Z") == 0
    assert parse_rfc3339_us("1970-01-01T00:00:00.000001Z") == 1
    assert parse_rfc3339_us("1969-12-31T23:59:59.999999Z") == -1


# --- parse_rfc3339_us: fractions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "micros"),
    [
        ("", 0),
        (".0", 0),
        (".3", 300_000),
        (".34", 340_000),
        (".343", 343_000),
        (".3438", 343_800),
        (".34387", 343_870),
        (".343874", 343_874),
        (".3438748", 343_874),  # sub-microsecond digits are truncated, never rounded
        (".34387483", 343_874),
        (".343874838", 343_874),
        (".999999999", 999_999),
        (".000000999", 0),
        (".343874838123", 343_874),  # more than nanoseconds: still truncated
    ],
)
@pytest.mark.parametrize("zone", ["Z", "z", "+00:00"])
def test_fraction_digits_truncate_to_microseconds(fraction: str, micros: int, zone: str) -> None:
    text = f"2026-06-06T08:21:26{fraction}{zone}"
    expected = T_EXAMPLE_S * US_PER_S + micros
    assert parse_rfc3339_us(text) == expected
    # Twice: the second parse may come from a cache and must agree with the first.
    assert parse_rfc3339_us(text) == expected


def test_fraction_with_offset() -> None:
    assert parse_rfc3339_us("2026-06-06T17:21:26.343874838+09:00") == T_EXAMPLE_S * US_PER_S + 343_874


def test_same_second_different_fractions_do_not_share_a_cached_fraction() -> None:
    base = parse_rfc3339_us("2031-03-04T05:06:07.5Z")
    assert parse_rfc3339_us("2031-03-04T05:06:07.25Z") == base - 250_000
    assert parse_rfc3339_us("2031-03-04T05:06:07.000001Z") == base - 499_999
    assert parse_rfc3339_us("2031-03-04T05:06:07Z") == base - 500_000
    assert parse_rfc3339_us("2031-03-04T05:06:07.5+01:00") == base - 3600 * US_PER_S


# --- parse_rfc3339_us: seconds, leap second -----------------------------------------------------------------


def test_second_60_is_accepted_as_the_next_minute() -> None:
    # The code accepts a leap second (":60") and counts it as the first second of the next minute.
    assert parse_rfc3339_us("2016-12-31T23:59:60Z") == parse_rfc3339_us("2017-01-01T00:00:00Z")
    assert parse_rfc3339_us("2016-12-31T23:59:60.5Z") == parse_rfc3339_us("2017-01-01T00:00:00.5Z")


def test_leap_day() -> None:
    assert parse_rfc3339_us("2028-02-29T12:00:00Z") == _us(datetime(2028, 2, 29, 12, tzinfo=UTC))
    assert parse_rfc3339_us("2000-02-29T00:00:00Z") == _us(datetime(2000, 2, 29, tzinfo=UTC))


# --- parse_rfc3339_us: invalid ------------------------------------------------------------------------------

INVALID_TIMESTAMPS = [
    "",
    "yesterday",
    "2026-06-06",
    "2026-06-06T08:21",
    "2026-06-06T08:21:26",  # no zone
    "2026-06-06T08:21:26.343874",  # no zone
    "2026-13-06T08:21:26Z",  # month 13
    "2026-00-06T08:21:26Z",  # month 0
    "2026-02-30T08:21:26Z",  # Feb 30
    "2026-02-29T08:21:26Z",  # not a leap year
    "2026-04-31T08:21:26Z",  # April has 30 days
    "2026-06-00T08:21:26Z",  # day 0
    "2026-06-32T08:21:26Z",
    "2026-06-06T24:00:00Z",
    "2026-06-06T08:60:00Z",
    "2026-06-06T08:21:61Z",
    "2026-06-06T08:21:2xZ",
    "2026-06-06T08:21:26.Z",  # a dot without digits
    "2026-06-06T08:21:26.12a3Z",
    "2026-06-06T08:21:26ZZ",
    "2026-06-06T08:21:26 Z",
    "2026-06-06T08:21:26+0900",  # offset without a colon
    "2026-06-06T08:21:26+09",
    "2026-06-06T08:21:26+09:00Z",
    "2026-06-06T08:21:26UTC",
    "2026/06/06T08:21:26Z",
    "2026-06-06X08:21:26Z",
    "0000-01-01T00:00:00Z",  # year 0 does not exist
    "abcd-06-06T08:21:26Z",
    "2026-06-06T08:21:26.343874838",
]


@pytest.mark.parametrize("text", INVALID_TIMESTAMPS)
def test_invalid_timestamps_raise_value_error(text: str) -> None:
    # Warm any cache with a valid timestamp of the same second first: a cache must not let junk through.
    parse_rfc3339_us("2026-06-06T08:21:26.5Z")
    parse_rfc3339_us("2026-06-06T08:21:26Z")
    for _ in range(2):
        with pytest.raises(ValueError):
            parse_rfc3339_us(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-06-06T 8:21:26Z",  # space inside the hour
        "2026-+6-06T08:21:26Z",  # sign inside the month
        " 202-06-06T08:21:26Z",  # space-padded year
        "2026-06-06T08:21:26+99:99",  # offset hours/minutes out of range
        "2026-06-06T08:21:\u0662\u0662Z",  # Arabic-Indic digits in the seconds
    ],
)
def test_non_rfc3339_numeric_fields_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339_us(text)


# --- parse_rfc3339_us vs datetime, property-based -----------------------------------------------------------

_offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)  # minutes


def _zone_text(offset_min: int) -> str:
    sign = "-" if offset_min < 0 else "+"
    hh, mm = divmod(abs(offset_min), 60)
    return f"{sign}{hh:02d}:{mm:02d}"


@settings(max_examples=300, deadline=None)
@given(
    naive=st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    nanos=st.integers(min_value=0, max_value=999_999_999),
    n_digits=st.integers(min_value=0, max_value=9),
    offset_min=_offsets,
    z=st.sampled_from(["Z", "z", "offset"]),
)
def test_random_timestamps_match_datetime(
    naive: datetime, nanos: int, n_digits: int, offset_min: int, z: str
) -> None:
    digits = f"{nanos:09d}"[:n_digits]
    fraction = f".{digits}" if digits else ""
    micros = int((digits + "000000")[:6]) if digits else 0
    zone = _zone_text(offset_min) if z == "offset" else z
    offset_s = offset_min * 60 if z == "offset" else 0
    text = (
        f"{naive.year:04d}-{naive.month:02d}-{naive.day:02d}T"
        f"{naive.hour:02d}:{naive.minute:02d}:{naive.second:02d}{fraction}{zone}"
    )
    whole = calendar.timegm(naive.replace(microsecond=0).timetuple())
    expected = (whole - offset_s) * US_PER_S + micros
    assert parse_rfc3339_us(text) == expected
    if n_digits == 6:  # an independent oracle where datetime can read the string
        assert parse_rfc3339_us(text) == _us(datetime.fromisoformat(text.replace("z", "Z")))


@settings(max_examples=200, deadline=None)
@given(
    aware=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
)
def test_isoformat_output_parses_to_the_same_instant(aware: datetime) -> None:
    text = aware.isoformat(timespec="microseconds")  # "...+00:00"
    assert parse_rfc3339_us(text) == _us(aware)
    assert parse_rfc3339_us(text.replace("+00:00", "Z")) == _us(aware)


# --- format_rfc3339 -----------------------------------------------------------------------------------------


def test_format_example() -> None:
    t = T_EXAMPLE_S * US_PER_S + 343_874
    assert format_rfc3339(t) == "2026-06-06T08:21:26.343874Z"
    assert format_rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert format_rfc3339(-1) == "1969-12-31T23:59:59.999999Z"


_T_MIN = _us(datetime(1000, 1, 1, tzinfo=UTC))
_T_MAX = _us(datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC))


@settings(max_examples=400, deadline=None)
@given(t_us=st.integers(min_value=_T_MIN, max_value=_T_MAX))
def test_format_parse_roundtrip(t_us: int) -> None:
    text = format_rfc3339(t_us)
    assert len(text) == 27 and text.endswith("Z")
    assert parse_rfc3339_us(text) == t_us
    assert datetime.fromisoformat(text) == EPOCH + timedelta(microseconds=t_us)


@settings(max_examples=200, deadline=None)
@given(t_us=st.integers(min_value=-(10**15), max_value=10**17))
def test_format_is_monotonic_in_text_order(t_us: int) -> None:
    # Fixed-width output: sorting the strings sorts the instants (years 1938..5138 here).
    assert format_rfc3339(t_us) < format_rfc3339(t_us + 1)


def test_format_pads_years_below_1000() -> None:
    t = _us(datetime(999, 1, 1, tzinfo=UTC))
    assert format_rfc3339(t) == "0999-01-01T00:00:00.000000Z"
    assert parse_rfc3339_us(format_rfc3339(t)) == t


# --- parse_duration_s ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.234s", 1.234),
        ("0.134s", 0.134),
        ("0s", 0.0),
        ("12s", 12.0),
        ("0.000001s", 0.000001),
        ("3600.5s", 3600.5),
    ],
)
def test_parse_duration_s(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds, rel=1e-12, abs=0)


@pytest.mark.parametrize("text", ["", "s", "1.234", "1.2ms", "abc", "1.2 S", "1,5s", "1.2.3s"])
def test_parse_duration_s_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(text)


# --- format_duration_ms -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        # the docstring's examples
        (340, "340 ms"),
        (8_400, "8.4 s"),
        (84_000, "84 s"),
        (720_000, "12 min"),
        (9_000_000, "2.5 h"),
        # ms below one second
        (0, "0 ms"),
        (0.4, "0 ms"),
        (999, "999 ms"),
        # one decimal below ten seconds
        (1_000, "1.0 s"),
        (1_049, "1.0 s"),
        (9_940, "9.9 s"),
        # whole seconds from ten up to 90 s
        (10_000, "10 s"),
        (89_000, "89 s"),
        # minutes: one decimal below ten, whole from ten up to 90 min
        (90_000, "1.5 min"),
        (594_000, "9.9 min"),
        (600_000, "10 min"),
        (5_340_000, "89 min"),
        # hours from 90 min
        (5_400_000, "1.5 h"),
        (36_000_000, "10.0 h"),
        (86_400_000, "24.0 h"),
    ],
)
def test_format_duration_ms(ms: float, text: str) -> None:
    assert format_duration_ms(ms) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(999.6, "1.0 s"), (9_960, "10 s"), (89_600, "1.5 min"), (599_999, "10 min"), (5_399_999, "1.5 h")],
)
def test_format_duration_ms_rounding_at_unit_boundaries(ms: float, text: str) -> None:
    assert format_duration_ms(ms) == text
