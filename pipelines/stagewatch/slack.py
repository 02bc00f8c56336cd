"""Slack delivery of incident events: Block Kit messages, a webhook that never shows up in output, retries.

``format_incident`` turns an incident event into a Block Kit message: what, where (stage, scope), how bad
(observed vs usual), how many files and tenants, since when, and a Cloud Logging link filtered by the
incident's files (or its stage). ``Webhook.post`` sends it: 429 and 5xx are retried with exponential backoff
(honouring ``Retry-After``), other 4xx are counted and reported, never retried. The URL is a secret (it is
the credential): it is kept out of every message, exception and log line this module makes.

Incoming webhooks cannot edit or thread a message (they return no message id), so a resolution is posted as
its own message quoting the incident's id and opening time.
"""

from __future__ import annotations

import base64
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

from stagewatch.timeutil import format_duration_ms

__all__ = ["WEBHOOK_ENV", "Webhook", "format_incident", "logging_link", "notify", "webhook_url"]

WEBHOOK_ENV = "STAGEWATCH_SLACK_WEBHOOK"
_EMOJI = {"opened": ":rotating_light:", "updated": ":hourglass_flowing_sand:", "resolved": ":white_check_mark:"}


def webhook_url(secret: str | None = None, env: dict[str, str] | None = None, session: Any = None) -> str:
    """The webhook URL: from Secret Manager when ``secret`` (``projects/P/secrets/S[/versions/V]``) is given,
    else from ``$STAGEWATCH_SLACK_WEBHOOK``. Raises ``ValueError`` naming where it looked, never the value."""
    if secret:
        name = secret if "/versions/" in secret else f"{secret}/versions/latest"
        if session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            session = AuthorizedSession(credentials)
        resp = session.get(f"https://secretmanager.googleapis.com/v1/{name}:access", timeout=30)
        if resp.status_code != 200:
            raise ValueError(f"Secret Manager refused {name}: HTTP {resp.status_code}")
        return base64.b64decode(resp.json()["payload"]["data"]).decode().strip()
    value = (env if env is not None else os.environ).get(WEBHOOK_ENV, "").strip()
    if not value:
        raise ValueError(f"no Slack webhook: set ${WEBHOOK_ENV}, or give --webhook-secret projects/P/secrets/S")
    return value


def logging_link(event: dict[str, Any], project: str | None) -> str:
    """Cloud Logging's query page, filtered by the incident's files (or its stage), over its time span."""
    uids = event.get("sample_uids") or []
    if uids:
        query = "jsonPayload.uid=(" + " OR ".join(f'"{u}"' for u in uids) + ")"
    else:
        query = f'jsonPayload.stage="{event["stage"]}"'
    start = event["started_at"]
    end = event.get("resolved_at") or event["at"]
    path = f"query;query={urllib.parse.quote(query, safe='')};timeRange={start}%2F{end}"
    suffix = f"?project={urllib.parse.quote(project)}" if project else ""
    return f"https://console.cloud.google.com/logs/{path}{suffix}"


def format_incident(event: dict[str, Any], project: str | None = None) -> dict[str, Any]:
    """A Block Kit message (``text`` is the notification's fallback)."""
    where = {"global": "everyone", "tenant": f"tenant *{event.get('scope_key')}*", "lot":
             f"lot *{event.get('scope_key')}*", "trace": f"file *{event.get('scope_key')}*"}.get(event["scope"],
                                                                                                event["scope"])
    head = f"{_EMOJI.get(event['event'], '')} {event['event'].upper()}: {event['message']}".strip()
    how = "—"
    if event.get("worst_observed_ms") is not None and event.get("expected_ms"):
        how = (f"worst {format_duration_ms(event['worst_observed_ms'])} "
               f"(usually {format_duration_ms(event['expected_ms'])})")
    reach = f"{event['files']} files, {event['affected_tenants']} tenants"
    if event["scope"] == "global":
        reach += f" of {event['active_tenants']} active"
    since = event["started_at"] + (f" → resolved {event['resolved_at']}" if event.get("resolved_at") else "")
    fields = [
        ("What", f"{event['kind']} at *{event['stage']}*"),
        ("Where", where),
        ("How bad", how),
        ("How many", reach),
        ("Since", since),
        ("Incident", f"`{event['incident_id']}`"),
    ]
    return {
        "text": head,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{head}*"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields]},
            {"type": "actions", "elements": [{
                "type": "button", "text": {"type": "plain_text", "text": "Logs in Cloud Logging"},
                "url": logging_link(event, project),
            }]},
        ],
    }


@dataclass
class Webhook:
    """POSTs JSON to the webhook; ``stats`` counts posted, retried, failed_<status>."""

    url: str
    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float = 15.0
    sleep: Callable[[float], None] = time.sleep
    stats: Counter[str] = field(default_factory=Counter)

    def __repr__(self) -> str:  # the URL is the credential
        return f"Webhook(url=<redacted>, stats={dict(self.stats)})"

    def post(self, payload: dict[str, Any]) -> str:
        """``posted``; ``refused`` (a 4xx other than 429: retrying will not help); or ``gave_up`` (429, 5xx or
        the network, retries exhausted: worth another try later). Never raises with the URL in the message."""
        body = json.dumps(payload).encode()
        for attempt in range(1, self.max_attempts + 1):
            status, retry_after = self._send(body)
            if 200 <= status < 300:
                self.stats["posted"] += 1
                return "posted"
            retryable = status == 429 or status >= 500 or status == 0
            if not retryable or attempt == self.max_attempts:
                self.stats[f"failed_{status or 'network'}"] += 1
                return "gave_up" if retryable else "refused"
            self.stats["retried"] += 1
            delay = retry_after if retry_after is not None else self.base_delay_s * 2 ** (attempt - 1)
            self.sleep(min(delay, self.max_delay_s))
        return "gave_up"


    def _send(self, body: bytes) -> tuple[int, float | None]:
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, None
        except urllib.error.HTTPError as err:
            retry = err.headers.get("Retry-After") if err.headers else None
            return err.code, float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
        except (urllib.error.URLError, TimeoutError, OSError):
            return 0, None  # network trouble: retried; the error text (which can hold the URL) is dropped


def notify(
    subscriber: Any, subscription: str, hook: Webhook, project: str | None, max_messages: int | None = None,
    idle_exit_s: float | None = None, log: Callable[[str], None] = print,
) -> tuple[int, int]:
    """Pull incident events from ``subscription`` and post each; returns (messages, skipped non-incidents).

    A message is acknowledged once posted, or refused for good (counted in ``hook.stats``); one Slack gave up
    on after retries is left for Pub/Sub to deliver again. Stops after ``max_messages``, or after
    ``idle_exit_s`` without a message; else runs until interrupted.
    """
    seen = skipped = 0
    last_message = time.monotonic()
    while max_messages is None or seen < max_messages:
        if idle_exit_s is not None and time.monotonic() - last_message > idle_exit_s:
            break
        resp = subscriber.pull(subscription=subscription, max_messages=10, timeout=30)
        ack = []
        for received in resp.received_messages:
            seen += 1
            last_message = time.monotonic()
            try:
                event = json.loads(received.message.data)
            except ValueError:
                event = None
            if not isinstance(event, dict) or "incident_id" not in event:
                skipped += 1  # a per-file anomaly (--publish_anomalies) or a stranger: not for Slack
                ack.append(received.ack_id)
                continue
            outcome = hook.post(format_incident(event, project))
            log(f"stagewatch notify-slack: {outcome} {event['event']} {event['incident_id']}")
            if outcome != "gave_up":
                ack.append(received.ack_id)
        if ack:
            subscriber.acknowledge(subscription=subscription, ack_ids=ack)
    return seen, skipped
