"""Slack: Block Kit messages, retries on 429/5xx only, the webhook URL kept secret, and the notifier end to end
(incident events through the Pub/Sub emulator to a local HTTP server standing in for Slack)."""

from __future__ import annotations

import base64
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
    for part in ("What\nslow_stage at analyse", "everyone", "worst 4.0 min (usually 30 s)", "7 files, 2 tenants of 12",
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


@pytest.mark.integration
def test_notifier_end_to_end_through_pubsub_to_a_local_slack(
    fake_slack: _FakeSlack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from google.cloud import pubsub_v1

    from stagewatch.cli import main
    from tests.emulators import PROJECT

    monkeypatch.setenv(WEBHOOK_ENV, fake_slack.url)
    monkeypatch.setattr("stagewatch.notify.slack.time.sleep", lambda s: None)  # the backoff, not the test, waits
    suffix = uuid.uuid4().hex[:8]
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, f"incidents-{suffix}")
    sub = subscriber.subscription_path(PROJECT, f"incidents-{suffix}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    try:
        resolved = {**EVENT, "event": "resolved", "resolved_at": "2026-06-06T10:45:00.000000Z", "files": 211,
                    "message": "resolved: analyse is slow for everyone (211 files, 12 tenants)"}
        anomaly = {"anomaly_id": "a1", "kind": "failed", "uid": "f-9", "stage": "b"}  # not an incident: skipped
        for record in (EVENT, anomaly, resolved):
            publisher.publish(topic, orjson.dumps(record)).result(timeout=30)
        assert main(["notify-slack", "--subscription", sub, "--max-messages", "3", "--idle-exit", "60"]) == 0
    finally:
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)
    # The first post met a 500, then a 429: posted on the third try; the resolution straight away.
    texts = [m["text"] for m in fake_slack.received]
    assert len(texts) == 4 and texts[0] == texts[1] == texts[2]
    assert {t.split(":")[1] for t in texts} == {"rotating_light", "white_check_mark"}
    for m in fake_slack.received:
        assert [b["type"] for b in m["blocks"]] == ["section", "section", "actions"]
    out = capsys.readouterr()
    assert fake_slack.url not in out.out + out.err
    assert "posted opened" in out.err and "posted resolved" in out.err and "retried 2" in out.err


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


@pytest.mark.unit
def test_max_messages_is_exact_even_within_a_pulled_batch() -> None:
    from stagewatch.notify.slack import notify

    class Received:
        def __init__(self, k: int) -> None:
            self.ack_id = f"a{k}"
            self.message = type("M", (), {"data": json.dumps({**EVENT, "incident_id": f"i{k}"}).encode()})()

    class Subscriber:
        def __init__(self) -> None:
            self.asked: list[int] = []
            self.acked: list[str] = []

        def pull(self, subscription: str, max_messages: int, timeout: float) -> Any:
            self.asked.append(max_messages)
            return type("R", (), {"received_messages": [Received(k) for k in range(max_messages)]})()

        def acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
            self.acked += ack_ids

    class Hook:
        def deliver(self, event: dict[str, Any], payload: dict[str, Any]) -> str:
            return "posted"

    sub = Subscriber()
    seen, skipped = notify(sub, "projects/p/subscriptions/s", Hook(), "p", max_messages=1,  # type: ignore[arg-type]
                           log=lambda line: None)
    assert (seen, skipped, sub.asked, sub.acked) == (1, 0, [1], ["a0"])
