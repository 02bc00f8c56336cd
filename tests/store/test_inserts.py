"""Streaming inserts (``store/inserts.py``): what is retried, what is refused for good, and that a row sent again
always carries the same insert id. A scripted client stands in for BigQuery; the same rules against the emulator
behind a fault-injecting proxy: ``tests/stream/test_sink_faults.py``."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc

from stagewatch.store.inserts import Backoff, BigQueryUnavailable, insert_rows, is_transient, row_id

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
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def _insert(client: Scripted, clock: Clock | None = None, **backoff: float) -> Any:
    clock = clock or Clock()
    return insert_rows(client, "p.d.t", ROWS, IDS, Backoff(**backoff), sleep=clock.sleep, clock=lambda: clock.now)


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


def test_a_request_refused_outright_is_not_sent_again() -> None:
    client = Scripted(gexc.NotFound("Not found: table p.d.t"))
    out = _insert(client)
    assert out.written == 0 and out.retries == 0 and len(client.calls) == 1
    assert [r for r, _ in out.rejected] == ROWS and "NotFound" in out.rejected[0][1]


def test_giving_up_after_the_time_allowed_raises_for_the_runner_to_retry_the_bundle() -> None:
    clock = Clock()
    client = Scripted(*[gexc.ServiceUnavailable("down")] * 100)
    with pytest.raises(BigQueryUnavailable, match=r"p\.d\.t: still failing after .* ServiceUnavailable"):
        _insert(client, clock, first_s=1, max_s=8, give_up_s=60)
    assert clock.now <= 60 * 1.25 and max(clock.sleeps) <= 8 * 1.25


def test_the_insert_id_is_the_rows_content_and_its_table() -> None:
    assert row_id("t", {"a": 1, "b": "x"}) == row_id("t", {"b": "x", "a": 1})
    assert row_id("t", {"a": 1}) != row_id("t", {"a": 2}) != row_id("u", {"a": 2})
    assert len(row_id("t", {"a": 1})) == 32


def test_what_counts_as_transient() -> None:
    assert is_transient(gexc.GatewayTimeout("x")) and is_transient(ConnectionResetError())
    assert not is_transient(gexc.BadRequest("x")) and not is_transient(gexc.Forbidden("no access"))
    assert not is_transient(ValueError("a bug"))
