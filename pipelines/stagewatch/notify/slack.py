"""Slack delivery of incident events: Block Kit messages, a webhook that never shows up in output, retries.

``format_incident`` turns an incident event into a Block Kit message: what, where (stage, scope), how bad
(observed vs usual), how many files and tenants, since when, and a Cloud Logging link filtered by the
incident's files (or its stage). ``Webhook.post`` sends it: 429 and 5xx are retried with exponential backoff
(honouring ``Retry-After``), other 4xx are counted and reported, never retried. The URL is a secret (it is
the credential): it is kept out of every message, exception and log line this module makes.

Two ways to post. An incoming webhook (``Webhook``) cannot edit or thread a message (it returns no message
id), so every event is a message of its own quoting the incident's id. With a bot token (``SlackApi``:
``chat.postMessage`` / ``chat.update``, scope ``chat:write``) the opening is the channel message, updates and
the resolution are replies in its thread, and the resolution also rewrites the opening message so the
channel shows it resolved. The opening's message id (``ts``) per incident is kept in memory and, with a state
file, across restarts.

``stagewatch.notify.courier`` pulls the events from Pub/Sub and hands them to ``deliver`` in each incident's order.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stagewatch.core.kinds import brief
from stagewatch.core.privacy import is_pseudonym
from stagewatch.core.timeutil import format_duration_ms
from stagewatch.secrets import secret_value

__all__ = ["BOT_TOKEN_ENV", "WEBHOOK_ENV", "SlackApi", "Webhook", "format_incident", "logging_link", "secret_value",
           "webhook_url"]

WEBHOOK_ENV = "STAGEWATCH_SLACK_WEBHOOK"
BOT_TOKEN_ENV = "STAGEWATCH_SLACK_BOT_TOKEN"
_EMOJI = {"opened": ":rotating_light:", "updated": ":hourglass_flowing_sand:", "resolved": ":white_check_mark:"}


def webhook_url(secret: str | None = None, env: dict[str, str] | None = None, session: Any = None) -> str:
    """The webhook URL: from Secret Manager when ``secret`` (``projects/P/secrets/S[/versions/V]``) is given,
    else from ``$STAGEWATCH_SLACK_WEBHOOK``. Raises ``ValueError`` naming where it looked, never the value."""
    return secret_value(WEBHOOK_ENV, "--webhook-secret", secret, env, session, what="Slack credential")


# Slack's limits: a button's URL, a section's text, a field's text (characters).
MAX_URL = 3000
MAX_SECTION = 3000
MAX_FIELD = 2000
_MAX_LINK_UID = 200


def _filter_string(value: str) -> str:
    """A value as a Cloud Logging query string: in double quotes, its backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def logging_link(event: dict[str, Any], project: str | None) -> str:
    """Cloud Logging's query page, filtered by the incident's files (or its stage, when their uids are hashed),
    over its time span; each value quoted in the query, and the whole within Slack's limit for a button's URL
    (files left out to fit)."""
    start = _text(event.get("started_at"))
    end = _text(event.get("resolved_at") or event.get("at"))
    suffix = f"?project={urllib.parse.quote(project)}" if project else ""

    def url(query: str) -> str:
        path = f"query;query={urllib.parse.quote(query, safe='')};timeRange={urllib.parse.quote(start, safe='')}%2F" \
               f"{urllib.parse.quote(end, safe='')}"
        return f"https://console.cloud.google.com/logs/{path}{suffix}"

    # A hashed uid (--hash-uids) is in no log line: such files are found by their stage and time instead.
    uids = [u for u in event.get("sample_uids") or []
            if isinstance(u, str) and len(u) <= _MAX_LINK_UID and not is_pseudonym(u)]
    while uids:
        link = url("jsonPayload.uid=(" + " OR ".join(_filter_string(u) for u in uids) + ")")
        if len(link) <= MAX_URL:
            return link
        uids.pop()
    return url("jsonPayload.stage=" + _filter_string(_text(event.get("stage"))[:_MAX_LINK_UID]))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn_escaped(text: str) -> str:
    """Text for a field Slack may read as mrkdwn, with Slack's three control characters escaped: no mention
    (``<!channel>``), link or user reference can come from it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, limit: int) -> dict[str, Any]:
    """A plain_text object: Slack neither formats it nor reads mentions in it -- what carries values from logs."""
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": True}


def format_incident(event: dict[str, Any], project: str | None = None, note: str | None = None) -> dict[str, Any]:
    """A Block Kit message (``text`` is the notification's fallback). Every text that carries a value from the
    logs (stage, tenant, lot, the message) is plain text, and the fallback is sent with mrkdwn off and Slack's
    control characters escaped, so no mention or formatting can come from data. ``note`` (the notifier's own
    words, e.g. that the incident's opening was not seen) goes under the headline and into the fallback."""
    scope, key = _text(event.get("scope")), _text(event.get("scope_key"))
    where = {"global": "everyone", "tenant": f"tenant {key}", "lot": f"lot {key}", "trace": f"file {key}"}.get(
        scope, scope)
    what = _text(event.get("event"))
    head = f"{_EMOJI.get(what, '')} {what.upper()}: {_text(event.get('message'))}".strip()
    how = "—"
    if event.get("worst_observed_ms") is not None and event.get("expected_ms"):
        how = (f"worst {format_duration_ms(event['worst_observed_ms'])} "
               f"(usually {format_duration_ms(event['expected_ms'])})")
    tenants = event.get("affected_tenants")
    reach = f"{event.get('files')} files, {tenants} tenant{'' if tenants == 1 else 's'}"
    if scope == "global":
        reach += f" of {event.get('active_tenants')} active"
    since = _text(event.get("started_at")) + (f" → resolved {event['resolved_at']}" if event.get("resolved_at") else "")
    fields = [
        # The words of the report's page ("upload slow", "stalls before download"): one story in both.
        ("What", brief(_text(event.get("kind")), _text(event.get("stage")))),
        ("Where", where),
        ("How bad", how),
        ("How many", reach),
        ("Since", since),
        ("Incident", _text(event.get("incident_id"))),
    ]
    noted = [{"type": "context", "elements": [_plain(note, MAX_FIELD)]}] if note else []
    tail = f" — {note}" if note else ""
    return {
        "text": _mrkdwn_escaped(_cut(head, MAX_SECTION - len(tail)) + tail),
        "mrkdwn": False,
        "blocks": [
            {"type": "section", "text": _plain(head, MAX_SECTION)},
            *noted,
            {"type": "section", "fields": [_plain(f"{k}\n{v}", MAX_FIELD) for k, v in fields]},
            {"type": "actions", "elements": [{
                "type": "button", "text": {"type": "plain_text", "text": "Logs in Cloud Logging"},
                "url": logging_link(event, project),
            }]},
        ],
    }


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up when called, so that a test can take the waiting out of the backoff


@dataclass
class Webhook:
    """POSTs JSON to the webhook; ``stats`` counts posted, retried, failed_<status>."""

    url: str
    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float = 15.0
    sleep: Callable[[float], None] = _sleep
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        _check_url(self.url)

    def __repr__(self) -> str:  # the URL is the credential
        return f"{type(self).__name__}(<redacted>, stats={dict(self.stats)})"

    def deliver(self, event: dict[str, Any], payload: dict[str, Any]) -> str:
        """Post one incident event's message: ``posted``, ``refused`` or ``gave_up`` (see ``post``)."""
        return self.post(payload)

    def knows_opening(self, incident_id: str) -> bool:
        """Whether the incident's opening was posted before this notifier started. A webhook keeps no record."""
        return False

    def post(self, payload: dict[str, Any]) -> str:
        """``posted``; ``refused`` (a 4xx other than 429: retrying will not help); or ``gave_up`` (429, 5xx or
        the network, retries exhausted: worth another try later). Never raises with the URL in the message."""
        return self._call(self.url, payload, {})[0]

    def _call(self, url: str, payload: dict[str, Any], headers: dict[str, str]) -> tuple[str, bytes]:
        body = json.dumps(payload).encode()
        for attempt in range(1, self.max_attempts + 1):
            status, retry_after, answer = self._send(url, body, headers)
            if 200 <= status < 300:
                self.stats["posted"] += 1
                return "posted", answer
            retryable = status == 429 or status >= 500 or status == 0
            if not retryable or attempt == self.max_attempts:
                self.stats[f"failed_{status or 'network'}"] += 1
                return ("gave_up" if retryable else "refused"), answer
            self.stats["retried"] += 1
            delay = retry_after if retry_after is not None else self.base_delay_s * 2 ** (attempt - 1)
            self.sleep(min(delay, self.max_delay_s))
        return "gave_up", b""

    def _send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float | None, bytes]:
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json; charset=utf-8",
                                                              **headers})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, None, resp.read()
        except urllib.error.HTTPError as err:
            retry = err.headers.get("Retry-After") if err.headers else None
            return err.code, float(retry) if retry and retry.replace(".", "", 1).isdigit() else None, b""
        except (urllib.error.URLError, TimeoutError, OSError):
            return 0, None, b""  # network trouble: retried; the error text (which can hold the URL) is dropped


@dataclass(repr=False)
class SlackApi(Webhook):
    """Slack's Web API with a bot token: the opening in the channel, the rest in its thread (see the module).

    ``url`` is the API base (``https://slack.com/api``); the token, not the URL, is the credential here."""

    url: str = "https://slack.com/api"
    token: str = ""
    channel: str = ""
    state_path: str | None = None  # JSON {incident_id: {"channel", "ts"}}: threads survive a restart
    # An opening whose resolution never came is forgotten after this long (its thread is stale by then).
    forget_after_s: float = 7 * 86400.0
    threads: dict[str, dict[str, str]] = field(default_factory=dict)
    # Incidents whose resolution is in the thread but whose opening is not marked resolved yet (chat.update gave up).
    unmarked: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.token or not self.channel:
            raise ValueError("the Slack Web API needs a bot token and a --channel")
        if self.state_path:
            folder = os.path.dirname(os.path.abspath(self.state_path))
            if not os.path.isdir(folder):
                raise ValueError(f"--thread-state {self.state_path}: folder {folder} does not exist")
            if os.path.exists(self.state_path):
                try:
                    with open(self.state_path, encoding="utf-8") as f:
                        threads = json.load(f)
                except (OSError, ValueError) as exc:
                    raise ValueError(f"--thread-state {self.state_path} is not readable JSON: {exc}") from None
                if not isinstance(threads, dict) or not all(
                        isinstance(v, dict) and {"channel", "ts"} <= v.keys() for v in threads.values()):
                    raise ValueError(f"--thread-state {self.state_path} is not a notifier's state file "
                                     "({incident_id: {channel, ts}})")
                self.threads = threads

    def knows_opening(self, incident_id: str) -> bool:
        return incident_id in self.threads

    def deliver(self, event: dict[str, Any], payload: dict[str, Any]) -> str:
        incident, what = event["incident_id"], event["event"]
        parent = self.threads.get(incident)
        if what == "resolved" and incident in self.unmarked and parent is not None:
            outcome = "posted"  # in the thread on an earlier try: only the mark is left to do
        else:
            message = {"channel": self.channel, **payload}
            if parent is not None and what != "opened":
                message["thread_ts"] = parent["ts"]
            outcome, reply = self._api("chat.postMessage", message)
            if outcome == "posted" and what == "opened" and reply.get("ts"):
                # chat.update needs the channel's id, which the reply gives even when --channel is a name.
                self.threads[incident] = {"channel": str(reply.get("channel") or self.channel),
                                          "ts": str(reply["ts"])}
        if outcome == "posted" and parent is not None and what == "resolved":
            # The channel shows the opening message: make it say it is over. A refusal here (a deleted
            # message, a missing scope) still posted the resolution in the thread, which is what counts; when
            # Slack gave up, the event comes again from Pub/Sub and then only the mark is tried again.
            marked, _ = self._api("chat.update", {"channel": parent["channel"], "ts": parent["ts"], **payload})
            if marked == "gave_up":
                self.unmarked.add(incident)
                outcome = "gave_up"
            else:
                self.unmarked.discard(incident)
        if what == "resolved" and outcome != "gave_up":
            self.threads.pop(incident, None)  # kept while the resolution has yet to come again
        self._forget_stale()
        self._save()
        return outcome

    def _api(self, method: str, message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        outcome, answer = self._call(f"{self.url.rstrip('/')}/{method}", message,
                                     {"Authorization": f"Bearer {self.token}"})
        if outcome != "posted":
            return outcome, {}
        try:
            reply = json.loads(answer)
        except ValueError:
            reply = {}
        if not isinstance(reply, dict) or not reply.get("ok"):
            # The Web API answers 200 with ok=false for what it refuses (bad channel, missing scope, ...).
            error = reply.get("error", "unreadable_reply") if isinstance(reply, dict) else "unreadable_reply"
            self.stats["posted"] -= 1
            self.stats[f"failed_{error}"] += 1
            return "refused", {}
        return "posted", reply

    def _forget_stale(self) -> None:
        horizon = time.time() - self.forget_after_s
        for incident in [i for i, m in self.threads.items() if _ts_seconds(m["ts"]) < horizon]:
            del self.threads[incident]
        self.unmarked &= self.threads.keys()

    def _save(self) -> None:
        if not self.state_path:
            return
        tmp = f"{self.state_path}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.threads, f)
            os.replace(tmp, self.state_path)  # never a half-written state file
        except OSError:
            # Posting goes on; a restart then posts updates of these incidents as messages of their own.
            self.stats["state_not_saved"] += 1


def _check_url(url: str) -> None:
    """An http(s) URL with a host and, if any, a numeric port -- said without showing it: a webhook's URL is the
    credential, and the errors urllib raises for a malformed one quote it whole."""
    try:
        parts = urllib.parse.urlsplit(url)
        ok = parts.scheme in ("https", "http") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # a port that is not a number, a malformed IPv6 host, ...
        ok = False
    if not ok:
        raise ValueError("the Slack URL is not an http(s) URL with a host (it is not shown: it is the credential); "
                         "a webhook looks like https://hooks.slack.com/services/T.../B.../...")


def _ts_seconds(ts: str) -> float:
    try:
        return float(ts)  # Slack's message ids are epoch seconds
    except ValueError:
        return 0.0
