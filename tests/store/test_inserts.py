"""Streaming inserts (``store/inserts.py``): what is retried, what is refused for good, and that a row sent again
always carries the same insert id. A scripted client stands in for BigQuery; the same rules against the emulator
behind a fault-injecting proxy: ``tests/stream/test_sink_faults.py``."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from stagewatch.store.inserts import Backoff, insert_rows, is_transient, row_id, wire_bytes

pytestmark = pytest.mark.unit

ROWS = [{"uid": f"f-{i}", "n": i} for i in range(4)]
IDS = [row_id("t", r) for r in ROWS]


class Scripted:
    """Answers each ``insert_rows_json`` with the next scripted answer (a list of row errors, or an exception
    to raise) and keeps what it was sent."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[dict[str, Any]], list[str], dict[str, Any]]] = []

    def insert_rows_json(self, table: str, rows: list[dict[str, Any]], row_ids: list[str], **kw: Any) -> Any:
        self.calls.append((rows, row_ids, kw))
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)


def _insert(client: Scripted, clock: Clock | None = None, **backoff: float) -> Any:
    clock = clock or Clock()
    return insert_rows(client, "p.d.t", ROWS, IDS, Backoff(**backoff), sleep=clock.sleep)


def _refused(status: int, reason: str, message: str) -> gexc.GoogleAPICallError:
    """The exception the BigQuery client raises for an HTTP error: the request's method and URL first."""
    return gexc.from_http_status(status, f"POST https://bigquery.googleapis.com/bigquery/v2/projects/p/datasets/d/"
                                         f"tables/t/insertAll?prettyPrint=false: {message}",
                                 errors=[{"reason": reason, "message": message}])


def test_all_written_at_once_with_their_insert_ids_and_the_clients_own_retry_off() -> None:
    client = Scripted([])
    out = _insert(client)
    assert (out.written, out.rejected, out.retries) == (4, [], 0)
    ((rows, ids, kw),) = client.calls
    assert rows == ROWS and ids == IDS and kw["retry"] is None


@pytest.mark.parametrize("failure", [
    gexc.ServiceUnavailable("down"), gexc.InternalServerError("oops"), gexc.TooManyRequests("slow down"),
    gexc.Forbidden("rate", errors=[{"reason": "rateLimitExceeded"}]), requests.exceptions.ConnectionError("cut"),
    requests.exceptions.ReadTimeout("slow"),
    requests.exceptions.ChunkedEncodingError("answer cut after the rows were written"),
    auth_exc.TransportError("metadata server: token not fetched"),
])
def test_transient_failures_are_sent_again_with_the_same_ids_after_a_growing_wait(failure: Exception) -> None:
    clock = Clock()
    client = Scripted(failure, failure, [])
    out = _insert(client, clock)
    assert (out.written, out.rejected, out.retries) == (4, [], 2)
    assert [ids for _, ids, _ in client.calls] == [IDS, IDS, IDS]
    assert len(clock.sleeps) == 2 and clock.sleeps[1] > clock.sleeps[0]


def test_a_refused_row_is_returned_with_its_reason_and_the_rows_stopped_for_it_are_sent_again() -> None:
    """BigQuery refuses a whole request for one invalid row: that row is ``invalid``, the others ``stopped``."""
    client = Scripted([
        {"index": 1, "errors": [{"reason": "invalid", "location": "n", "message": "no such field: n."}]},
        {"index": 0, "errors": [{"reason": "stopped", "message": ""}]},
        {"index": 2, "errors": [{"reason": "stopped", "message": ""}]},
        {"index": 3, "errors": [{"reason": "stopped", "message": ""}]},
    ], [])
    out = _insert(client)
    assert out.written == 3 and out.retries == 1
    assert out.rejected == [(ROWS[1], "invalid: no such field: n.")]
    assert client.calls[1][0] == [ROWS[0], ROWS[2], ROWS[3]] and client.calls[1][1] == [IDS[0], IDS[2], IDS[3]]


def test_a_request_refused_outright_is_not_sent_again_and_its_rows_carry_bigquerys_reason() -> None:
    client = Scripted(_refused(404, "notFound", "Not found: Table p:d.t"))
    out = _insert(client)
    assert out.written == 0 and out.retries == 0 and len(client.calls) == 1
    assert [r for r, _ in out.rejected] == ROWS
    assert out.rejected[0][1] == "404 NotFound: Not found: Table p:d.t"


def test_a_request_too_big_is_split_until_it_fits() -> None:
    """BigQuery refuses a request over its size limit: the halves are sent, and a single row still too big is
    refused alone."""
    too_big = _refused(400, "invalid", "Request payload size exceeds the limit: 10485760 bytes.")

    class SizeLimited(Scripted):
        def insert_rows_json(self, table: str, rows: list[dict[str, Any]], row_ids: list[str], **kw: Any) -> Any:
            self.calls.append((rows, row_ids, kw))
            if len(rows) > 1 or rows[0]["n"] == 2:
                raise too_big
            return []

    client = SizeLimited()
    out = _insert(client)
    assert out.written == 3 and [r for r, _ in out.rejected] == [ROWS[2]] and out.retries == 0
    assert "payload size exceeds the limit" in out.rejected[0][1]
    assert sorted(ids[0] for rows, ids, _ in client.calls if len(rows) == 1) == sorted(IDS)


@pytest.mark.parametrize("errors", [[{"reason": "accessDenied", "message": "x"}], [{"message": "no reason"}], []])
def test_a_row_refused_for_a_reason_not_known_to_pass_is_dead_lettered_not_retried_for_ever(
        errors: list[dict[str, str]]) -> None:
    client = Scripted([{"index": 0, "errors": errors}])
    out = _insert(client)
    assert [r for r, _ in out.rejected] == [ROWS[0]] and out.written == 3 and out.retries == 0


@pytest.mark.parametrize("entry", [{"errors": [{"reason": "invalid"}]}, {"index": 9, "errors": []},
                                   {"index": "0", "errors": []}])
def test_an_answer_naming_no_row_sent_is_taken_as_no_answer_three_times_then_the_rows_are_returned(
        entry: dict[str, Any]) -> None:
    client = Scripted([entry], [entry], [entry])
    out = _insert(client)
    assert out.written == 0 and out.retries == 2 and len(client.calls) == 3
    assert [r for r, _ in out.rejected] == ROWS and "did not say which rows" in out.rejected[0][1]
    assert _insert(Scripted([entry], [])).written == 4  # understood the second time


def test_a_long_outage_is_waited_out_in_place_with_the_wait_capped() -> None:
    clock = Clock()
    client = Scripted(*[gexc.ServiceUnavailable("down")] * 40)
    out = _insert(client, clock, first_s=1, max_s=8)
    assert out.written == 4 and out.retries == 40 and max(clock.sleeps) <= 8 * 1.25
    assert all(ids == IDS for _, ids, _ in client.calls)


def test_a_rows_size_is_counted_as_the_client_sends_it() -> None:
    """The client escapes non-ASCII characters: an emoji is 12 bytes on the wire, 4 in UTF-8."""
    row = {"tenant": "\U0001F600" * 100}
    assert wire_bytes(row, "x" * 32) >= 1200 + 32


def test_the_insert_id_is_the_rows_content_and_its_table() -> None:
    assert row_id("t", {"a": 1, "b": "x"}) == row_id("t", {"b": "x", "a": 1})
    assert row_id("t", {"a": 1, "at": "now"}, ignore=("at",)) == row_id("t", {"a": 1, "at": "later"}, ignore=("at",))
    assert row_id("t", {"a": 1}) != row_id("t", {"a": 2}) != row_id("u", {"a": 2})
    assert len(row_id("t", {"a": 1})) == 32


def test_what_counts_as_transient() -> None:
    assert is_transient(gexc.GatewayTimeout("x")) and is_transient(ConnectionResetError())
    assert not is_transient(gexc.BadRequest("x")) and not is_transient(gexc.Forbidden("no access"))
    assert not is_transient(_refused(403, "accessDenied", "Access Denied: Table p:d.t"))
    assert is_transient(_refused(403, "rateLimitExceeded", "Exceeded rate limits"))
    assert not is_transient(ValueError("a bug"))
