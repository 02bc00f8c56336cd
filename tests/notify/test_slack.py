"""Slack: Block Kit messages, retries on 429/5xx only, the webhook URL kept secret, and the notifier end to end
(incident events through the Pub/Sub emulator, or a hostile in-memory Pub/Sub, to a local HTTP server standing in
for Slack): each incident's events in order and once, whatever Pub/Sub hands out, and an honest exit status."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from stagewatch.notify.slack import WEBHOOK_ENV, Webhook, format_incident, logging_link, webhook_url

EVENT = {
    "incident_id": "slow_stage-analyse-global-all-2026-06-06T10:00:01.000000Z", "event": "opened",
    "kind": "slow_stage", "stage": "analyse", "scope": "global", "scope_key": None, "tenants": ["a", "b"],
    "affected_tenants": 2, "active_tenants": 12, "started_at": "2026-06-06T10:00:01.000000Z", "resolved_at": None,
    "at": "2026-06-06T10:04:00.000000Z", "files": 7, "sample_uids": ["f-1", "f-2"], "worst_observed_ms": 240_000.0,
    "expected_ms": 30_000.0,
    "message": "analyse is slow for everyone (7 files, 2 tenants); worst 4.0 min, usually 30 s",
}

UPDATED = {**EVENT, "event": "updated", "at": "2026-06-06T10:20:00.000000Z", "files": 40,
           "message": "analyse is slow for everyone (40 files, 5 tenants)"}
RESOLVED = {**EVENT, "event": "resolved", "resolved_at": "2026-06-06T10:45:00.000000Z",
            "at": "2026-06-06T10:45:00.000000Z", "files": 211,
            "message": "resolved: analyse is slow for everyone (211 files, 12 tenants)"}
ANOMALY = {"anomaly_id": "a1", "kind": "failed", "uid": "f-9", "stage": "b"}  # not an incident event


def _what(text: str) -> str:
    """``OPENED`` from ``:rotating_light: OPENED: ...``."""
    return text.split(" ", 2)[1].rstrip(":")


class _FakeSlack:
    """A local HTTP server standing in for Slack: replies with the queued statuses, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.received.append(json.loads(body))
                status = fake.statuses.pop(0) if fake.statuses else 200
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"error")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/{uuid.uuid4().hex}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_slack() -> Iterator[_FakeSlack]:
    fake = _FakeSlack([500, 429])
    yield fake
    fake.close()


@pytest.mark.unit
def test_block_kit_message_says_what_where_how_bad_how_many_since() -> None:
    msg = format_incident(EVENT, "demo-proj")
    assert msg["text"].startswith(":rotating_light: OPENED: analyse is slow for everyone")
    fields = " ".join(f["text"] for f in msg["blocks"][1]["fields"])
    # The page's words for it (the report's headline says "analyse slow" too): one story in both.
    for part in ("What\nanalyse slow", "everyone", "worst 4.0 min (usually 30 s)", "7 files, 2 tenants of 12",
                 "2026-06-06T10:00:01.000000Z", EVENT["incident_id"]):
        assert part in fields, part
    link = msg["blocks"][2]["elements"][0]["url"]
    assert link == logging_link(EVENT, "demo-proj")
    assert "f-1" in link and "project=demo-proj" in link and link.startswith("https://console.cloud.google.com/logs/")


@pytest.mark.unit
def test_no_mention_formatting_or_link_can_come_from_the_data() -> None:
    """A tenant, stage or message from someone's logs reaches Slack as text: every text carrying data is plain
    text, and the fallback goes with mrkdwn off and Slack's control characters escaped."""
    evil = "<!channel> *bold* _it_ ~st~ `code` <https://evil.example|click> & co"
    event = {**EVENT, "scope": "tenant", "scope_key": evil, "stage": evil, "message": f"{evil} is slow",
             "incident_id": evil}
    msg = format_incident(event, "demo-proj")
    assert msg["mrkdwn"] is False and "<" not in msg["text"] and "&lt;!channel&gt;" in msg["text"]
    texts = [msg["blocks"][0]["text"], *msg["blocks"][1]["fields"]]
    assert all(t["type"] == "plain_text" for t in texts)
    assert all(len(t["text"]) <= 3000 for t in texts)
    huge = format_incident({**EVENT, "message": "x" * 100_000}, None)
    assert len(huge["blocks"][0]["text"]["text"]) == 3000 and len(huge["text"]) <= 3000


@pytest.mark.unit
def test_the_logging_link_quotes_every_value_and_stays_within_slacks_limit() -> None:
    quoted = logging_link({**EVENT, "sample_uids": ['f"1) OR (severity>=DEFAULT', "f\\2"]}, None)
    from urllib.parse import unquote

    query = unquote(quoted.split("query=")[1].split(";timeRange")[0])
    assert query == 'jsonPayload.uid=("f\\"1) OR (severity>=DEFAULT" OR "f\\\\2")'
    long = logging_link({**EVENT, "sample_uids": ["u" * 100_000, *(f"f-{i:0180d}" for i in range(10))]}, "p")
    assert len(long) <= 3000 and "u" * 300 not in long
    none_fit = logging_link({**EVENT, "sample_uids": ["u" * 100_000]}, "p")
    assert "jsonPayload.stage%3D%22analyse%22" in none_fit
    # Hashed uids (--hash-uids) are in no log line: the link looks for the raw ones it can, else by stage.
    hashed = logging_link({**EVENT, "sample_uids": ["h-" + "0123456789abcdef" * 2, "f-7"]}, "p")
    assert unquote(hashed.split("query=")[1].split(";timeRange")[0]) == 'jsonPayload.uid=("f-7")'
    only_hashed = logging_link({**EVENT, "sample_uids": ["h-" + "fedcba9876543210" * 2]}, "p")
    assert "jsonPayload.stage%3D%22analyse%22" in only_hashed and "h-" not in only_hashed


@pytest.mark.unit
@pytest.mark.parametrize("url", ["hooks.slack.com/services/T0/B0/SECRETSECRET", "https://hooks.slack.com:port/SECRETSECRET",
                                 "ftp://hooks.slack.com/SECRETSECRET", "https:///SECRETSECRET", "SECRETSECRET"])
def test_a_malformed_webhook_url_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        Webhook(url)
    assert "SECRETSECRET" not in str(refused.value) and "not shown" in str(refused.value)


@pytest.mark.unit
def test_retries_429_and_5xx_with_backoff_but_not_other_4xx(fake_slack: _FakeSlack) -> None:
    slept: list[float] = []
    hook = Webhook(fake_slack.url, sleep=slept.append)
    assert hook.post({"text": "x"}) == "posted"
    assert hook.stats == {"posted": 1, "retried": 2}
    assert slept == [1.0, 0.0]  # exponential backoff for the 500; the 429's Retry-After
    fake_slack.statuses = [404]
    assert hook.post({"text": "y"}) == "refused"
    assert hook.stats["failed_404"] == 1 and hook.stats["retried"] == 2  # not retried
    assert fake_slack.url not in repr(hook)


@pytest.mark.unit
def test_webhook_url_from_env_or_secret_manager_never_in_errors() -> None:
    assert webhook_url(env={WEBHOOK_ENV: " https://hooks.slack.com/services/X "}) == "https://hooks.slack.com/services/X"
    with pytest.raises(ValueError, match=WEBHOOK_ENV):
        webhook_url(env={})

    class Resp:
        def __init__(self, status: int, data: str = "") -> None:
            self.status_code = status
            self._data = data

        def json(self) -> dict[str, Any]:
            return {"payload": {"data": base64.b64encode(self._data.encode()).decode()}}

    class Session:
        def __init__(self, resp: Resp) -> None:
            self.resp, self.urls = resp, []

        def get(self, url: str, timeout: float) -> Resp:
            self.urls.append(url)
            return self.resp

    ok = Session(Resp(200, "https://hooks.slack.com/services/SECRET\n"))
    assert webhook_url("projects/p/secrets/slack", session=ok) == "https://hooks.slack.com/services/SECRET"
    assert ok.urls == ["https://secretmanager.googleapis.com/v1/projects/p/secrets/slack/versions/latest:access"]
    with pytest.raises(ValueError, match="HTTP 403"):
        webhook_url("projects/p/secrets/slack/versions/3", session=Session(Resp(403)))

    class Odd(Resp):
        def __init__(self, answer: Any) -> None:
            super().__init__(200)
            self.answer = answer

        def json(self) -> Any:
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    secret_bytes = base64.b64encode(b"SECRET\xff\xfeSECRET").decode()
    for answer in ({"payload": {"data": secret_bytes}}, {"payload": {}}, {}, [], {"payload": {"data": "%%%"}},
                   ValueError("Expecting value: line 1 column 1")):
        with pytest.raises(ValueError, match="holds no UTF-8 text") as caught:
            webhook_url("projects/p/secrets/slack", session=Session(Odd(answer)))
        assert "SECRET" not in str(caught.value) and "0xff" not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__

    class Down(Session):
        def get(self, url: str, timeout: float) -> Resp:
            raise ConnectionError(f"Max retries exceeded with url: {url}")

    with pytest.raises(ValueError, match="could not reach Secret Manager for projects/p/secrets/slack/versions/"
                                         "latest: ConnectionError"):
        webhook_url("projects/p/secrets/slack", session=Down(Resp(200)))


@contextlib.contextmanager
def _incident_topic() -> Iterator[tuple[Any, Any, str, str]]:
    """A topic and its subscription on the Pub/Sub emulator, removed afterwards: (publisher, subscriber, topic,
    subscription)."""
    from google.cloud import pubsub_v1

    from tests.emulators import PROJECT

    suffix = uuid.uuid4().hex[:8]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, f"incidents-{suffix}")
    sub = subscriber.subscription_path(PROJECT, f"incidents-{suffix}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    try:
        yield publisher, subscriber, topic, sub
    finally:
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)


@pytest.mark.integration
def test_notifier_end_to_end_through_pubsub_to_a_local_slack(
    fake_slack: _FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stagewatch.cli import main

    monkeypatch.setenv(WEBHOOK_ENV, fake_slack.url)
    monkeypatch.setattr("stagewatch.notify.slack.time.sleep", lambda s: None)  # the backoff, not the test, waits
    with _incident_topic() as (publisher, _subscriber, topic, sub):
        resolved = {**EVENT, "event": "resolved", "resolved_at": "2026-06-06T10:45:00.000000Z", "files": 211,
                    "message": "resolved: analyse is slow for everyone (211 files, 12 tenants)"}
        anomaly = {"anomaly_id": "a1", "kind": "failed", "uid": "f-9", "stage": "b"}  # not an incident: skipped
        for record in (EVENT, anomaly, resolved):
            publisher.publish(topic, orjson.dumps(record)).result(timeout=30)
        assert main(["notify-slack", "--subscription", sub, "--max-messages", "3", "--idle-exit", "60"]) == 0
    # The first post met a 500, then a 429: posted on the third try; the resolution straight away.
    texts = [m["text"] for m in fake_slack.received]
    assert len(texts) == 4 and texts[0] == texts[1] == texts[2]
    assert {t.split(":")[1] for t in texts} == {"rotating_light", "white_check_mark"}
    for m in fake_slack.received:
        assert [b["type"] for b in m["blocks"]] == ["section", "section", "actions"]
    out = capsys.readouterr()
    assert fake_slack.url not in out.out + out.err
    assert "posted opened" in out.err and "posted resolved" in out.err and "retried 2" in out.err


@pytest.mark.integration
def test_notifier_through_pubsub_posts_the_opening_first_after_it_failed_and_exits_0(
    fake_slack: _FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hostile tester's case on the real emulator: the first posts fail until Slack is given up on. The
    opening is let go and Pub/Sub delivers it again; the update and the resolution wait for it, however the
    emulator orders them; nothing is posted twice; everything was delivered in the end: exit 0."""
    from stagewatch.cli import main

    fake_slack.statuses = [500] * 6  # every try of the first post
    monkeypatch.setenv(WEBHOOK_ENV, fake_slack.url)
    monkeypatch.setattr("stagewatch.notify.slack.time.sleep", lambda s: None)
    with _incident_topic() as (publisher, subscriber, topic, sub):
        for record in (EVENT, UPDATED, RESOLVED):
            publisher.publish(topic, orjson.dumps(record)).result(timeout=30)
        assert main(["notify-slack", "--subscription", sub, "--max-messages", "3", "--idle-exit", "30"]) == 0
        left = subscriber.pull(subscription=sub, max_messages=10, timeout=5)
        assert list(left.received_messages) == []  # every message acknowledged
    assert [_what(m["text"]) for m in fake_slack.received] == ["OPENED"] * 7 + ["UPDATED", "RESOLVED"]
    err = capsys.readouterr().err
    assert "stagewatch notify-slack: 3 messages" in err and "3 posted" in err and "not delivered" not in err
    assert fake_slack.url not in err


class _FakeSlackApi:
    """A local stand-in for Slack's Web API: chat.postMessage answers a new ts, chat.update ok; a queue of
    statuses to answer first, and ok=false for the channel ``C-NOPE``."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (method, authorization, body)
        self.epoch = int(time.time())
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                method = self.path.rsplit("/", 1)[-1]
                fake.calls.append((method, self.headers.get("Authorization", ""), body))
                status = fake.statuses.pop(0) if fake.statuses else 200
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                if status == 200:
                    ok = body.get("channel") != "C-NOPE"
                    reply = {"ok": ok, "channel": "C123ID", "ts": f"{fake.epoch}.{len(fake.calls):06d}"} if ok else {
                        "ok": False, "error": "channel_not_found"}
                    self.wfile.write(json.dumps(reply).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api() -> Iterator[_FakeSlackApi]:
    fake = _FakeSlackApi([429])
    yield fake
    fake.close()


TOKEN = "xoxb-test-" + uuid.uuid4().hex


@pytest.mark.unit
def test_with_a_bot_token_the_resolution_threads_onto_the_opening_and_marks_it(
        fake_api: _FakeSlackApi, tmp_path: Any) -> None:
    from stagewatch.notify.slack import SlackApi

    state = str(tmp_path / "threads.json")
    api = SlackApi(url=fake_api.url, token=TOKEN, channel="#incidents", state_path=state, sleep=lambda s: None)
    assert api.deliver(EVENT, format_incident(EVENT)) == "posted"  # after one 429
    opening_ts = f"{fake_api.epoch}.000002"
    assert api.threads == {EVENT["incident_id"]: {"channel": "C123ID", "ts": opening_ts}}
    # A new notifier (a restart) finds the thread in the state file.
    again = SlackApi(url=fake_api.url, token=TOKEN, channel="#incidents", state_path=state, sleep=lambda s: None)
    updated = {**EVENT, "event": "updated", "files": 40}
    resolved = {**EVENT, "event": "resolved", "resolved_at": "2026-06-06T10:45:00.000000Z", "files": 211,
                "message": "resolved: analyse is slow for everyone (211 files, 12 tenants)"}
    assert again.deliver(updated, format_incident(updated)) == "posted"
    assert again.deliver(resolved, format_incident(resolved)) == "posted"
    methods = [(m, b.get("thread_ts"), b.get("ts")) for m, _, b in fake_api.calls]
    assert fake_api.calls[-1][2]["channel"] == "C123ID"  # chat.update takes the id the opening's reply gave
    assert methods == [
        ("chat.postMessage", None, None), ("chat.postMessage", None, None),  # the 429, then the opening
        ("chat.postMessage", opening_ts, None),  # the update, in the thread
        ("chat.postMessage", opening_ts, None),  # the resolution, in the thread
        ("chat.update", None, opening_ts),  # ... and the opening message now says resolved
    ]
    assert fake_api.calls[-1][2]["text"].startswith(":white_check_mark: RESOLVED")
    assert all(auth == f"Bearer {TOKEN}" for _, auth, _ in fake_api.calls)
    assert again.threads == {} and json.loads(Path(state).read_text()) == {}  # resolved: forgotten
    assert TOKEN not in repr(again) + repr(api)
    # What the Web API refuses (HTTP 200, ok=false) is refused, counted by its error, not retried.
    nope = SlackApi(url=fake_api.url, token=TOKEN, channel="C-NOPE", sleep=lambda s: None)
    assert nope.deliver(EVENT, format_incident(EVENT)) == "refused"
    assert nope.stats["failed_channel_not_found"] == 1 and nope.stats["posted"] == 0


@pytest.mark.unit
def test_thread_state_is_checked_bounded_and_never_crashes_the_notifier(
        fake_api: _FakeSlackApi, tmp_path: Path) -> None:
    from stagewatch.notify.slack import SlackApi

    def api(state: Path | str | None, **kw: Any) -> SlackApi:
        return SlackApi(url=fake_api.url, token=TOKEN, channel="C1", state_path=None if state is None else str(state),
                        sleep=lambda s: None, **kw)

    for content, says in (("[1, 2]", "not a notifier's state file"), ("{oops", "not readable JSON")):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(ValueError, match=says):
            api(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="does not exist"):
        api(tmp_path / "no-such-folder" / "t.json")
    lone = api(None)
    resolved = {**EVENT, "event": "resolved", "resolved_at": "2026-06-06T10:45:00.000000Z"}
    assert lone.deliver(resolved, format_incident(resolved)) == "posted"  # after the fixture's 429
    assert lone.threads == {}  # a resolution with no known opening is its own message, not a thread to keep
    stale = api(None, forget_after_s=-1.0)
    stale.deliver(EVENT, format_incident(EVENT))
    assert stale.threads == {}  # an opening older than forget_after_s is forgotten
    saved = api(tmp_path / "t.json")
    (tmp_path / "t.json").mkdir()  # the state cannot be written (a folder in its way): counted, posting goes on
    assert saved.deliver(EVENT, format_incident(EVENT)) == "posted" and saved.stats["state_not_saved"] == 1


@pytest.mark.unit
def test_the_bot_token_mode_needs_a_channel_and_a_token(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from stagewatch.cli import main
    from stagewatch.notify.slack import BOT_TOKEN_ENV

    monkeypatch.delenv(BOT_TOKEN_ENV, raising=False)
    sub = "projects/p/subscriptions/s"
    assert main(["notify-slack", "--subscription", sub, "--channel", "C1"]) == 2
    assert f"${BOT_TOKEN_ENV}" in capsys.readouterr().err
    assert main(["notify-slack", "--subscription", sub, "--thread-state", "x.json"]) == 2
    assert "give --channel too" in capsys.readouterr().err


# -- the notifier after failures, redeliveries and interruptions ------------------------------------------------------
#
# A stand-in for Pub/Sub as the notifier meets it, and a hostile one: a message not acknowledged by the next pull is
# handed out again with a new ack id (its ack deadline ran out), an ack with an old ack id is ignored, and a script
# can hand out messages out of order and copies of ones acknowledged already (Pub/Sub delivers at least once).


class _Received:
    def __init__(self, ack_id: str, message_id: str, data: bytes) -> None:
        self.ack_id = ack_id
        self.message = type("PubsubMessage", (), {"message_id": message_id, "data": data})()


class _FakePubSub:
    """``pull`` hands out the messages neither acknowledged nor on loan, in publish order (or, first, the batches of
    message numbers in ``script``). A message handed out is on loan until the next pull -- unless its deadline is
    extended, then until a nack (deadline 0). Only the latest ack id of a message acknowledges it. Each pull moves
    ``now`` on by ``tick`` seconds; pull number ``interrupt_at`` raises KeyboardInterrupt (Ctrl-C)."""

    def __init__(self, records: list[dict[str, Any]], script: list[list[int]] | None = None, tick: float = 0.0,
                 interrupt_at: int | None = None) -> None:
        self.data = [orjson.dumps(r) for r in records]
        self.script = [list(batch) for batch in script or []]
        self.tick, self.interrupt_at, self.now = tick, interrupt_at, 0.0
        self.acked: set[int] = set()
        self.loaned: dict[int, float] = {}  # message -> pulls left on loan
        self.current: dict[int, str] = {}  # message -> its latest ack id
        self.asked: list[int] = []
        self.handed: list[list[int]] = []
        self.nacked: list[int] = []
        self.extended: list[int] = []
        self.closed = False

    def clock(self) -> float:
        return self.now

    def pull(self, subscription: str, max_messages: int, timeout: float) -> Any:
        self.asked.append(max_messages)
        if len(self.asked) == self.interrupt_at:
            raise KeyboardInterrupt
        assert len(self.asked) < 500, "the notifier does not stop"
        self.now += self.tick
        self.loaned = {m: left - 1 for m, left in self.loaned.items() if left > 1}
        if self.script:
            batch = self.script.pop(0)
        else:
            batch = [m for m in range(len(self.data)) if m not in self.acked and m not in self.loaned][:max_messages]
        assert len(batch) <= max_messages
        out = []
        for m in batch:
            ack_id = f"ack-{m}-{uuid.uuid4().hex[:6]}"
            self.current[m], self.loaned[m] = ack_id, 1
            out.append(_Received(ack_id, f"msg-{m}", self.data[m]))
        self.handed.append(batch)
        return type("PullResponse", (), {"received_messages": out})()

    def _valid(self, ack_ids: list[str]) -> list[int]:
        return [m for m, current in self.current.items() if current in ack_ids]

    def acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        for m in self._valid(ack_ids):
            self.acked.add(m)
            self.loaned.pop(m, None)

    def modify_ack_deadline(self, subscription: str, ack_ids: list[str], ack_deadline_seconds: int) -> None:
        for m in self._valid(ack_ids):
            if ack_deadline_seconds == 0:
                self.nacked.append(m)
                self.loaned.pop(m, None)
            else:
                self.extended.append(m)
                self.loaned[m] = float("inf")

    def close(self) -> None:
        self.closed = True


def _other(event: dict[str, Any], incident: str) -> dict[str, Any]:
    return {**event, "incident_id": incident}


def _incident_of(body: dict[str, Any]) -> str:
    """The incident id a message names (its ``Incident`` field)."""
    fields = next(b for b in body["blocks"] if "fields" in b)["fields"]
    return str(fields[-1]["text"].split("\n", 1)[1])


def _run_cli(monkeypatch: pytest.MonkeyPatch, pubsub: _FakePubSub, *args: str) -> int:
    """``stagewatch notify-slack`` with the fake Pub/Sub in place of the client, and backoff that does not wait."""
    from google.cloud import pubsub_v1

    from stagewatch.cli import main

    monkeypatch.setattr(pubsub_v1, "SubscriberClient", lambda: pubsub)
    monkeypatch.setattr("stagewatch.notify.slack.time.sleep", lambda s: None)
    monkeypatch.setattr("stagewatch.notify.slack.time.monotonic", pubsub.clock)
    return main(["notify-slack", "--subscription", "projects/p/subscriptions/s", *args])


@pytest.mark.cli
def test_with_a_bot_token_updates_wait_for_a_failed_opening_and_thread_onto_it_when_it_comes_again(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The opening fails (Slack gives up after its six tries): the update and the resolution pulled with it are
    not posted ahead of it. Pub/Sub delivers the opening again, it is posted, and then the update and the
    resolution go into its thread and the opening is marked resolved. Everything was delivered: exit 0."""
    fake_api = _FakeSlackApi([500] * 6)
    monkeypatch.setenv("STAGEWATCH_SLACK_BOT_TOKEN", TOKEN)
    pubsub = _FakePubSub([EVENT, UPDATED, RESOLVED])
    try:
        status = _run_cli(monkeypatch, pubsub, "--channel", "C1", "--slack-api", fake_api.url, "--max-messages", "3")
    finally:
        fake_api.close()
    calls = [(m, _what(b["text"]), b.get("thread_ts"), b.get("ts")) for m, _, b in fake_api.calls]
    opening_ts = f"{fake_api.epoch}.000007"
    assert calls == [("chat.postMessage", "OPENED", None, None)] * 7 + [  # six failed tries, then posted
        ("chat.postMessage", "UPDATED", opening_ts, None),
        ("chat.postMessage", "RESOLVED", opening_ts, None),
        ("chat.update", "RESOLVED", None, opening_ts),
    ]
    assert status == 0 and pubsub.acked == {0, 1, 2} and pubsub.closed
    err = capsys.readouterr().err
    assert "stagewatch notify-slack: 3 messages" in err and "3 posted" in err and "not delivered" not in err
    assert TOKEN not in err


@pytest.mark.unit
def test_out_of_order_redelivered_and_duplicated_events_are_posted_once_each_opening_first(
        fake_slack: _FakeSlack) -> None:
    """Pub/Sub hands out the resolution and the update before the opening, copies of messages already
    acknowledged, and the job published the update twice: one opening, one update, one resolution, in that
    order, and every message acknowledged (with its latest ack id)."""
    from stagewatch.notify.courier import Tally, notify

    fake_slack.statuses = []
    pubsub = _FakePubSub([EVENT, UPDATED, RESOLVED, UPDATED], script=[[2, 1], [1], [0, 0], [1], [2], [0], [3]])
    hook = Webhook(fake_slack.url, sleep=lambda s: None)
    tally = Tally()
    notify(pubsub, "projects/p/subscriptions/s", hook, "p", max_messages=4, log=lambda line: None,
           tally=tally, clock=pubsub.clock)
    assert [_what(m["text"]) for m in fake_slack.received] == ["OPENED", "UPDATED", "RESOLVED"]
    assert pubsub.acked == {0, 1, 2, 3} and pubsub.extended  # the waiting ones were kept from coming back
    assert (tally.messages, tally.posted, tally.duplicates, tally.not_delivered()) == (4, 3, 1, [])
    assert tally.copies == 5


@pytest.mark.unit
def test_an_update_that_comes_after_its_incidents_resolution_is_not_posted(fake_api: _FakeSlackApi) -> None:
    """Out of order: the resolution (which says everything the update did, and more) came first and closed the
    thread; the late update is acknowledged, not posted as a stray message in the channel."""
    from stagewatch.notify.courier import Tally, notify
    from stagewatch.notify.slack import SlackApi

    api = SlackApi(url=fake_api.url, token=TOKEN, channel="C1", sleep=lambda s: None)
    pubsub = _FakePubSub([EVENT, UPDATED, RESOLVED], script=[[0], [2], [1]])
    tally = Tally()
    notify(pubsub, "projects/p/subscriptions/s", api, "p", max_messages=3, log=lambda line: None, tally=tally,
           clock=pubsub.clock)
    posts = [(_what(b["text"]), b.get("thread_ts") is not None) for m, _, b in fake_api.calls
             if m == "chat.postMessage"]
    assert posts == [("OPENED", False), ("OPENED", False), ("RESOLVED", True)]  # the fixture's 429, then posted
    assert (tally.posted, tally.superseded, tally.not_delivered()) == (2, 1, []) and pubsub.acked == {0, 1, 2}


@pytest.mark.unit
def test_events_whose_opening_never_comes_are_waited_for_then_posted_saying_so(fake_api: _FakeSlackApi) -> None:
    """Incident i1's opening never comes (lost, or posted by a notifier before this one): its update and
    resolution wait ``wait_for_opening_s``, then go to the channel alone, saying their opening was not seen. The
    opening of i2, meanwhile, comes late, and i2's update goes into its thread at once."""
    from stagewatch.notify.courier import Tally, notify
    from stagewatch.notify.slack import SlackApi

    api = SlackApi(url=fake_api.url, token=TOKEN, channel="C1", sleep=lambda s: None)
    records = [_other(UPDATED, "i1"), _other(RESOLVED, "i1"), _other(UPDATED, "i2"), _other(EVENT, "i2")]
    pubsub = _FakePubSub(records, script=[[0, 1, 2], [3]], tick=25.0)
    tally = Tally()
    lines: list[str] = []
    notify(pubsub, "projects/p/subscriptions/s", api, "p", max_messages=4, log=lines.append, tally=tally,
           wait_for_opening_s=60.0, clock=pubsub.clock)
    posts = [(m, _incident_of(b), _what(b["text"]), "thread_ts" in b) for m, _, b in fake_api.calls[1:]]
    assert posts == [
        ("chat.postMessage", "i2", "OPENED", False), ("chat.postMessage", "i2", "UPDATED", True),
        ("chat.postMessage", "i1", "UPDATED", False), ("chat.postMessage", "i1", "RESOLVED", False),
    ]
    alone = fake_api.calls[-1][2]
    assert "which the notifier did not see" in alone["text"]
    assert any(b["type"] == "context" and "which the notifier did not see" in b["elements"][0]["text"]
               for b in alone["blocks"])
    assert pubsub.now >= 60.0 and pubsub.acked == {0, 1, 2, 3}
    assert (tally.posted, tally.without_opening, tally.not_delivered()) == (4, 2, [])
    assert any("waiting for its opening" in line for line in lines)


@pytest.mark.cli
def test_exit_1_names_what_was_not_delivered(fake_slack: _FakeSlack, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Incident i1's opening is refused (404): its update goes alone, saying the opening could not be posted.
    Incident i2's update waits for an opening that has not come when the notifier stops: it is left to Pub/Sub
    (let go, to come again at once to the next notifier). Exit 1, and the summary says which."""
    fake_slack.statuses = [404]
    monkeypatch.setenv(WEBHOOK_ENV, fake_slack.url)
    pubsub = _FakePubSub([_other(EVENT, "i1"), _other(UPDATED, "i1"), _other(UPDATED, "i2"), ANOMALY], tick=1.0)
    status = _run_cli(monkeypatch, pubsub, "--idle-exit", "5")
    assert status == 1
    assert [_what(m["text"]) for m in fake_slack.received] == ["OPENED", "UPDATED"]
    assert "could not be posted" in fake_slack.received[1]["text"]
    assert pubsub.acked == {0, 1, 3} and 2 in pubsub.nacked and 2 not in pubsub.loaned
    err = capsys.readouterr().err
    summary = err[err.index("stagewatch notify-slack: 4 messages"):]
    assert "1 not incidents" in summary and "not delivered: 2" in summary
    assert "opened i1 (refused)" in summary and "updated i2 (waiting for its opening" in summary
    assert fake_slack.url not in err


@pytest.mark.cli
def test_after_ctrl_c_the_summary_gives_the_true_counts(fake_slack: _FakeSlack, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    fake_slack.statuses = []
    monkeypatch.setenv(WEBHOOK_ENV, fake_slack.url)
    pubsub = _FakePubSub([EVENT, ANOMALY, UPDATED], script=[[0], [1, 2]], interrupt_at=3)
    assert _run_cli(monkeypatch, pubsub) == 0  # interrupted with everything delivered
    err = capsys.readouterr().err
    assert "stagewatch notify-slack: 3 messages, 1 not incidents, 2 posted" in err and "not delivered" not in err
    assert pubsub.closed


@pytest.mark.cli
def test_ctrl_c_while_posting_is_said_and_exits_1(fake_slack: _FakeSlack, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, fake_slack.url)  # the fixture answers 500 first: the notifier backs off ...
    pubsub = _FakePubSub([EVENT])
    from google.cloud import pubsub_v1

    from stagewatch.cli import main

    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt  # ... and is interrupted while it waits

    monkeypatch.setattr(pubsub_v1, "SubscriberClient", lambda: pubsub)
    monkeypatch.setattr("stagewatch.notify.slack.time.sleep", ctrl_c)
    assert main(["notify-slack", "--subscription", "projects/p/subscriptions/s"]) == 1
    err = capsys.readouterr().err
    assert "stagewatch notify-slack: 1 messages, 0 not incidents, 0 posted" in err
    assert f"not delivered: 1 -- opened {EVENT['incident_id']} (interrupted while posting" in err


@pytest.mark.unit
def test_max_messages_is_exact_even_within_a_pulled_batch() -> None:
    from stagewatch.notify.courier import notify

    class Hook:
        def deliver(self, event: dict[str, Any], payload: dict[str, Any]) -> str:
            return "posted"

        def knows_opening(self, incident: str) -> bool:
            return False

    pubsub = _FakePubSub([_other(EVENT, f"i{k}") for k in range(10)])
    tally = notify(pubsub, "projects/p/subscriptions/s", Hook(), "p", max_messages=1,  # type: ignore[arg-type]
                   log=lambda line: None)
    assert (tally.messages, tally.skipped, pubsub.asked, pubsub.acked) == (1, 0, [1], {0})


@pytest.mark.unit
def test_max_messages_counts_messages_not_deliveries_and_lets_the_rest_go(fake_slack: _FakeSlack) -> None:
    """``--max-messages 2``: the opening fails once and comes again (the same message, not a third); a message
    pulled while waiting for it is let go unposted for the next notifier."""
    from stagewatch.notify.courier import notify

    fake_slack.statuses = [500]
    pubsub = _FakePubSub([EVENT, UPDATED, _other(EVENT, "i3")], script=[[0, 1], [2, 0]])
    hook = Webhook(fake_slack.url, max_attempts=1, sleep=lambda s: None)  # one try: Slack gives up on the 500
    tally = notify(pubsub, "projects/p/subscriptions/s", hook, "p", max_messages=2, log=lambda line: None,
                   clock=pubsub.clock)
    assert [_what(m["text"]) for m in fake_slack.received] == ["OPENED", "OPENED", "UPDATED"]
    assert (tally.messages, tally.copies, tally.posted, tally.not_delivered()) == (2, 1, 2, [])
    assert pubsub.acked == {0, 1} and 2 in pubsub.nacked


@pytest.mark.unit
def test_a_resolution_whose_mark_failed_retries_the_mark_only(fake_api: _FakeSlackApi) -> None:
    """The resolution went into the thread but chat.update gave up: delivered again, the notifier marks the
    opening resolved without posting the resolution in the thread a second time."""
    from stagewatch.notify.slack import SlackApi

    api = SlackApi(url=fake_api.url, token=TOKEN, channel="C1", max_attempts=2, sleep=lambda s: None)
    assert api.deliver(EVENT, format_incident(EVENT)) == "posted"  # after the fixture's 429
    fake_api.statuses = [200, 500, 500]  # the reply in the thread; the mark fails twice
    assert api.deliver(RESOLVED, format_incident(RESOLVED)) == "gave_up"
    assert api.knows_opening(EVENT["incident_id"])  # the thread is kept for the retry
    assert api.deliver(RESOLVED, format_incident(RESOLVED)) == "posted"
    methods = [m for m, _, _ in fake_api.calls]
    assert methods == ["chat.postMessage"] * 3 + ["chat.update"] * 3
    assert not api.knows_opening(EVENT["incident_id"])


@pytest.mark.unit
def test_idle_exit_does_not_count_the_backoff_of_a_failing_post() -> None:
    """Slack gives up on the opening after a long backoff (longer than --idle-exit): the notifier still takes
    the opening Pub/Sub hands out again, posts it and its update, and only then goes idle."""
    from stagewatch.notify.courier import notify

    pubsub = _FakePubSub([EVENT, UPDATED], script=[[0]], tick=1.0)  # the opening alone first

    class Hook:
        def __init__(self) -> None:
            self.posted: list[str] = []

        def deliver(self, event: dict[str, Any], payload: dict[str, Any]) -> str:
            pubsub.now += 40.0  # a minute of retries, nearly
            if not self.posted and len(pubsub.nacked) == 0:
                return "gave_up"
            self.posted.append(event["event"])
            return "posted"

        def knows_opening(self, incident: str) -> bool:
            return False

    hook = Hook()
    tally = notify(pubsub, "projects/p/subscriptions/s", hook, "p", idle_exit_s=10.0,  # type: ignore[arg-type]
                   log=lambda line: None, clock=pubsub.clock)
    assert hook.posted == ["opened", "updated"] and tally.not_delivered() == [] and pubsub.acked == {0, 1}


@pytest.mark.unit
def test_a_thread_remembered_from_before_a_restart_counts_as_the_opening(
        fake_api: _FakeSlackApi, tmp_path: Path) -> None:
    from stagewatch.notify.courier import notify
    from stagewatch.notify.slack import SlackApi

    state = tmp_path / "threads.json"
    state.write_text(json.dumps({EVENT["incident_id"]: {"channel": "C123ID", "ts": f"{fake_api.epoch}.000001"}}))
    api = SlackApi(url=fake_api.url, token=TOKEN, channel="C1", state_path=str(state), sleep=lambda s: None)
    pubsub = _FakePubSub([UPDATED, EVENT])  # and the opening again: its ack was lost before the restart
    tally = notify(pubsub, "projects/p/subscriptions/s", api, "p", max_messages=2, log=lambda line: None,
                   clock=pubsub.clock)
    assert [b.get("thread_ts") for _, _, b in fake_api.calls] == [f"{fake_api.epoch}.000001"] * 2  # 429, posted
    assert (tally.posted, tally.duplicates, tally.without_opening, len(pubsub.asked)) == (1, 1, 0, 1)
    assert pubsub.acked == {0, 1}


@pytest.mark.unit
@pytest.mark.parametrize("argv", [["--max-messages", "0"], ["--wait-for-opening", "-1"],
                                  ["--wait-for-opening", "nan"]])
def test_notifier_options_out_of_range_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from stagewatch.cli import main

    assert main(["notify-slack", "--subscription", "projects/p/subscriptions/s", *argv]) == 2
    assert argv[0] in capsys.readouterr().err


@pytest.mark.unit
def test_a_malformed_message_is_skipped_not_a_crash(fake_slack: _FakeSlack) -> None:
    """An event that is a list or a dict, and JSON nested beyond Python's stack, are strangers: acknowledged and
    counted, and the incident after them is posted (they raised, unacknowledged, at every restart)."""
    from stagewatch.notify.courier import Tally, notify

    fake_slack.statuses = []
    pubsub = _FakePubSub([{**EVENT, "event": ["opened"]}, {**EVENT, "event": {"a": 1}}, {}, EVENT])
    pubsub.data[2] = b"[" * 100_000
    tally = Tally()
    notify(pubsub, "projects/p/subscriptions/s", Webhook(fake_slack.url, sleep=lambda s: None), "p",
           max_messages=4, log=lambda line: None, tally=tally, clock=pubsub.clock)
    assert [_what(m["text"]) for m in fake_slack.received] == ["OPENED"]
    assert (tally.skipped, tally.posted, tally.not_delivered()) == (3, 1, []) and pubsub.acked == {0, 1, 2, 3}


@pytest.mark.unit
def test_ctrl_c_lets_go_of_what_waits_for_its_opening(fake_slack: _FakeSlack) -> None:
    """An update waiting for its opening has its ack deadline stretched; stopped with Ctrl-C, the notifier hands it
    back to Pub/Sub at once (deadline 0) for the next notifier, as docs/slack.md says (review finding)."""
    from stagewatch.notify.courier import Tally, notify

    fake_slack.statuses = []
    pubsub = _FakePubSub([UPDATED], interrupt_at=3)
    tally = Tally()
    with pytest.raises(KeyboardInterrupt):
        notify(pubsub, "projects/p/subscriptions/s", Webhook(fake_slack.url, sleep=lambda s: None), "p",
               log=lambda line: None, tally=tally, clock=pubsub.clock)
    assert fake_slack.received == [] and pubsub.extended == [0] and pubsub.nacked == [0]


@pytest.mark.unit
def test_an_opening_that_comes_after_its_events_went_alone_is_not_posted(fake_api: _FakeSlackApi) -> None:
    """i1's update and resolution waited out their opening and went alone; the opening, handed out at last, is
    acknowledged and not posted -- last in the channel, it would read as a new incident."""
    from stagewatch.notify.courier import Tally, notify
    from stagewatch.notify.slack import SlackApi

    api = SlackApi(url=fake_api.url, token=TOKEN, channel="C1", sleep=lambda s: None)
    records = [_other(UPDATED, "i1"), _other(RESOLVED, "i1"), _other(EVENT, "i1")]
    pubsub = _FakePubSub(records, script=[[0, 1], [], [], [], [2]], tick=25.0)
    tally = Tally()
    notify(pubsub, "projects/p/subscriptions/s", api, "p", max_messages=3, log=lambda line: None, tally=tally,
           wait_for_opening_s=60.0, clock=pubsub.clock)
    posts = [_what(b["text"]) for m, _, b in fake_api.calls if m == "chat.postMessage"]
    assert posts[-2:] == ["UPDATED", "RESOLVED"] and "OPENED" not in posts
    assert (tally.posted, tally.without_opening, tally.superseded, tally.not_delivered()) == (2, 2, 1, [])
    assert pubsub.acked == {0, 1, 2}


@pytest.mark.unit
def test_max_messages_takes_the_opening_its_update_waits_for() -> None:
    """``--max-messages 1`` and the one message is an update whose opening is the next: the opening is taken too
    (beyond the count, which says 2) and posted first, not refused while the update waits and goes alone."""
    from stagewatch.notify.courier import notify

    class Hook:
        def __init__(self) -> None:
            self.posted: list[str] = []

        def deliver(self, event: dict[str, Any], payload: dict[str, Any]) -> str:
            self.posted.append(event["event"])
            return "posted"

        def knows_opening(self, incident: str) -> bool:
            return False

    hook = Hook()
    pubsub = _FakePubSub([_other(UPDATED, "i1"), _other(EVENT, "i2"), _other(EVENT, "i1")], tick=25.0)
    tally = notify(pubsub, "projects/p/subscriptions/s", hook, "p", max_messages=1,  # type: ignore[arg-type]
                   log=lambda line: None, wait_for_opening_s=60.0, clock=pubsub.clock)
    assert hook.posted == ["opened", "updated"] and pubsub.acked == {0, 2} and 1 in pubsub.nacked
    assert (tally.messages, tally.without_opening, tally.not_delivered()) == (2, 0, [])
