"""The notifier's loop: incident events pulled from Pub/Sub, handed to Slack (``slack``) in each incident's order.

``notify`` posts an incident's update or resolution only after its opening, each event once, though Pub/Sub
delivers at least once and in any order; acknowledges a message once it is done with; and keeps its counts in a
``Tally`` the caller holds, so that they are true even after Ctrl-C. Why and how, with a timeline: below.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stagewatch.notify.slack import Webhook, format_incident

__all__ = ["WAIT_FOR_OPENING_S", "Tally", "notify"]

# Pub/Sub delivers at least once and in no set order: a message not acknowledged in time comes again with a new ack
# id, and so does one whose post Slack gave up on (the notifier lets it go at once: a nack). So an incident's update
# can come before its opening -- because the opening failed and comes again later, or just so. Posted then, it
# would precede its opening, and with a bot token it would be a message of its own instead of a reply in the
# opening's thread (there is none yet), and the resolution could not mark the opening resolved. So an update or a
# resolution whose opening is not posted yet waits for it, unacknowledged (its ack deadline stretched so that
# Pub/Sub does not hand it out again meanwhile), and follows it into its thread.
#
#     t=0    pull: opened, updated, resolved   opened: Slack gives up after its tries -> let go
#                                              updated, resolved: wait for it
#     t=35   pull: opened (again)              posted; then updated and resolved, in its thread, and the
#                                              opening marked resolved; all three acknowledged
#
# An opening that never comes (lost, dead-lettered, or posted by a notifier before this one started) is waited for
# ``wait_for_opening_s`` after the incident's first event came here, or after the opening last failed: long enough
# for Pub/Sub to hand a let-go opening out again (an ack deadline is at most 600 s). Then the incident's events go
# out alone, each saying its opening was not seen (or not posted): late and marked, rather than never. An opening
# Slack refused for good leaves nothing to wait for: its events go at once, saying so. An event posted already (a
# copy; the job publishing it twice) is acknowledged, not posted again: its key is the incident, the event, its
# time and its file count. An update that comes after its incident's resolution was posted says less than the
# resolution did and is not posted: it would be a stray message.

WAIT_FOR_OPENING_S = 600.0
_MAX_ACK_DEADLINE_S = 600  # Pub/Sub's longest
_REMEMBERED = 100_000  # event keys and message ids remembered, the oldest forgotten first: bounded memory
_INCIDENTS = 10_000  # incidents remembered (those with events waiting are never forgotten)
_RANK = {"opened": 0, "updated": 1, "resolved": 2}  # an incident's events in the order they are made
_NOT_SEEN = "Posted without its incident's opening, which the notifier did not see (lost, or posted before it started)."
_NOT_POSTED = "Posted without its incident's opening, which could not be posted."
_LISTED = 10  # what was not delivered, named in the summary at most


@dataclass
class Tally:
    """What ``notify`` has done so far, kept current as it goes: a caller interrupted (Ctrl-C) reads true counts."""

    messages: int = 0  # distinct Pub/Sub messages taken in
    copies: int = 0  # the same messages handed out again (not acknowledged in time, or let go after a failure)
    skipped: int = 0  # not incident events (per-file anomalies with --publish_anomalies, strangers)
    posted: int = 0  # incident events posted ...
    without_opening: int = 0  # ... of which alone, their incident's opening not posted
    duplicates: int = 0  # incident events published again once posted: acknowledged, not posted twice
    superseded: int = 0  # updates (or a late opening) after their incident's resolution: acknowledged, not posted
    refused: int = 0  # incident events Slack refused for good (a 4xx other than 429, ok=false)
    refused_names: list[str] = field(default_factory=list)  # "<event> <incident>", the first _LISTED of them
    # Messages taken in and not acknowledged: message id -> "<event> <incident> (why)". Left to Pub/Sub, which
    # hands them out again, if the notifier stops now.
    pending: dict[str, str] = field(default_factory=dict)

    def not_delivered(self) -> list[str]:
        """What was not delivered: refused for good, or left to Pub/Sub (one line for copies of one event)."""
        return [f"{name} (refused)" for name in self.refused_names] + sorted(set(self.pending.values()))

    def missing(self) -> int:
        return self.refused + len(set(self.pending.values()))

    def summary(self) -> str:
        parts = [f"{self.messages} messages", f"{self.skipped} not incidents", f"{self.posted} posted"
                 + (f" ({self.without_opening} without their opening)" if self.without_opening else "")]
        for count, what in ((self.duplicates, "published again, not posted twice"),
                            (self.superseded, "updates or openings after their resolution, not posted"),
                            (self.copies, "handed out again by Pub/Sub")):
            if count:
                parts.append(f"{count} {what}")
        return ", ".join(parts)


@dataclass
class _Waiting:
    """An incident event not posted yet, and the ack id of each Pub/Sub message that carries it."""

    event: dict[str, Any]
    ack_ids: dict[str, str] = field(default_factory=dict)  # message id -> the latest ack id Pub/Sub gave it


@dataclass
class _Incident:
    since: float  # its first event came here, or its opening last failed: the wait for the opening counts from then
    opening: str = "unseen"  # unseen, failing (Pub/Sub hands it out again), posted, refused, waited_out
    note: str | None = None  # what its events say when they go without their opening
    resolved: bool = False  # its resolution was posted
    waiting: dict[tuple[Any, ...], _Waiting] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether its updates and resolution may go: after the opening, or once there is none to wait for."""
        return self.opening in ("posted", "refused", "waited_out")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _key(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["incident_id"], event["event"], _text(event.get("at")), _text(event.get("files")))


def _name(event: dict[str, Any]) -> str:
    return f"{event['event']} {event['incident_id']}"


def _remember(seen: OrderedDict[Any, None], key: Any) -> None:
    seen[key] = None
    seen.move_to_end(key)
    if len(seen) > _REMEMBERED:
        seen.popitem(last=False)


class _Courier:
    """``notify``'s state: what was posted, what waits for which opening, and the Pub/Sub bookkeeping."""

    def __init__(self, subscriber: Any, subscription: str, hook: Webhook, project: str | None, tally: Tally,
                 log: Callable[[str], None], wait_s: float, clock: Callable[[], float]) -> None:
        self.subscriber, self.subscription, self.hook, self.project = subscriber, subscription, hook, project
        self.tally, self.log, self.wait_s, self.clock = tally, log, wait_s, clock
        self.incidents: OrderedDict[str, _Incident] = OrderedDict()
        self.done: OrderedDict[tuple[Any, ...], None] = OrderedDict()  # events posted or refused
        self.ids: OrderedDict[str, None] = OrderedDict()  # message ids taken in
        # A new message or a post tried (a failing one can take a minute of backoff): what --idle-exit waits for.
        self.progress = clock()

    def take(self, received: Any, room: bool) -> bool:
        """One message pulled; ``room``: a new one may be taken in (``--max-messages``). Whether it was taken."""
        message, ack_id = received.message, received.ack_id
        mid = str(getattr(message, "message_id", "") or ack_id)
        new = mid not in self.ids
        try:
            event = json.loads(message.data)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's stack: a stranger
            event = None
        if new and not room and not self._owed(event):
            self._deadline([ack_id], 0)  # beyond --max-messages: let go unposted, for the next notifier
            return False
        if new:
            _remember(self.ids, mid)
            self.tally.messages += 1
            self.progress = self.clock()
        else:
            self.tally.copies += 1
        if not isinstance(event, dict) or not isinstance(event.get("incident_id"), str) \
                or not isinstance(event.get("event"), str) or event["event"] not in _RANK:
            self.tally.skipped += new  # a per-file anomaly (--publish_anomalies) or a stranger: not for Slack
            self._ack([ack_id])
            return True
        key = _key(event)
        if key in self.done:
            self.tally.duplicates += new
            self.tally.pending.pop(mid, None)
            self._ack([ack_id])
            return True
        incident = self._incident(event["incident_id"])
        if event["event"] == "opened" and incident.resolved:
            # Its resolution went without it (it was waited out): posted now, it would read as a new incident.
            self.tally.superseded += new
            _remember(self.done, key)
            self._settle({mid: ack_id})
        elif event["event"] == "opened" and incident.opening == "posted":
            # Posted before this notifier started (its thread is in --thread-state); the ack was lost.
            self.tally.duplicates += new
            _remember(self.done, key)
            self._settle({mid: ack_id})
        elif event["event"] == "opened":
            self._open(incident, event, key, mid, ack_id)
        else:
            self._queue(incident, event, key, mid, ack_id, new)
        return True

    def expire(self) -> None:
        """Incidents that have waited ``wait_s`` for their opening (or for Pub/Sub to hand out again an event that
        failed): their events go now."""
        now = self.clock()
        for incident in list(self.incidents.values()):
            if incident.waiting and now - incident.since >= self.wait_s:
                if not incident.ready:
                    incident.note = _NOT_POSTED if incident.opening == "failing" else _NOT_SEEN
                    incident.opening = "waited_out"
                self._drain(incident)

    def _owed(self, event: Any) -> bool:
        """Whether ``event`` is the opening that events taken in wait for: taken beyond ``--max-messages`` (it
        completes what was taken; refused, the events would go alone once the wait is over)."""
        if not isinstance(event, dict) or event.get("event") != "opened":
            return False
        incident_id = event.get("incident_id")
        incident = self.incidents.get(incident_id) if isinstance(incident_id, str) else None
        return incident is not None and bool(incident.waiting) and not incident.ready

    def let_go(self) -> None:
        """Stopping: what still waits goes back to Pub/Sub now (not after its stretched deadline)."""
        self._deadline([a for i in self.incidents.values() for w in i.waiting.values() for a in w.ack_ids.values()],
                       0)

    def _incident(self, incident_id: str) -> _Incident:
        incident = self.incidents.get(incident_id)
        if incident is None:
            incident = _Incident(since=self.clock())
            if self.hook.knows_opening(incident_id):  # a thread from --thread-state
                incident.opening = "posted"
            self.incidents[incident_id] = incident
            if len(self.incidents) > _INCIDENTS:
                idle = [i for i, known in self.incidents.items() if not known.waiting and i != incident_id]
                for old in idle[: len(self.incidents) - _INCIDENTS]:
                    del self.incidents[old]
        else:
            self.incidents.move_to_end(incident_id)
        return incident

    def _open(self, incident: _Incident, event: dict[str, Any], key: tuple[Any, ...], mid: str, ack_id: str) -> None:
        outcome = self._post(incident, event, key, {mid: ack_id}, None)
        if outcome == "gave_up":
            if incident.opening != "waited_out":
                incident.opening, incident.since = "failing", self.clock()  # its events wait on
            return
        if outcome == "posted":
            incident.opening, incident.note = "posted", None
        elif not incident.ready:
            incident.opening, incident.note = "refused", _NOT_POSTED
        self._drain(incident)

    def _queue(self, incident: _Incident, event: dict[str, Any], key: tuple[Any, ...], mid: str, ack_id: str,
               new: bool) -> None:
        waiting = incident.waiting.setdefault(key, _Waiting(event))
        waiting.ack_ids[mid] = ack_id
        if incident.ready:
            self._drain(incident)
            return
        self.tally.pending[mid] = f"{_name(event)} (waiting for its opening)"
        self._deadline([ack_id], _MAX_ACK_DEADLINE_S)  # not handed out again while it waits
        if new:
            self.log(f"stagewatch notify-slack: waiting for its opening: {_name(event)}")

    def _drain(self, incident: _Incident) -> None:
        """Post what waits, in the order the incident made it; stop at a post Slack gave up on."""
        for key, waiting in sorted(incident.waiting.items(),
                                   key=lambda kv: (_text(kv[1].event.get("at")), _RANK[kv[1].event["event"]])):
            if incident.resolved and waiting.event["event"] == "updated":
                self.tally.superseded += 1
                _remember(self.done, key)
                self._settle(waiting.ack_ids)
            elif self._post(incident, waiting.event, key, waiting.ack_ids, incident.note) == "gave_up":
                incident.since = self.clock()  # tried again when Pub/Sub hands it out again, or after wait_s
                for later_key, later in incident.waiting.items():
                    for mid in later.ack_ids if later_key != key else ():
                        self.tally.pending[mid] = f"{_name(later.event)} (waiting behind an earlier event)"
                return
            del incident.waiting[key]

    def _post(self, incident: _Incident, event: dict[str, Any], key: tuple[Any, ...], ack_ids: dict[str, str],
              note: str | None) -> str:
        name = _name(event)
        for mid in ack_ids:  # what Ctrl-C during the post leaves
            self.tally.pending[mid] = f"{name} (interrupted while posting: maybe posted, left to Pub/Sub)"
        outcome = self.hook.deliver(event, format_incident(event, self.project, note))
        self.progress = self.clock()
        self.log(f"stagewatch notify-slack: {outcome} {name}" + (" (without its opening)" if note else ""))
        if outcome == "gave_up":
            for mid in ack_ids:
                self.tally.pending[mid] = f"{name} (Slack gave up; left to Pub/Sub to hand out again)"
            self._deadline(list(ack_ids.values()), 0)  # handed out again now, not after its ack deadline
            return outcome
        _remember(self.done, key)
        if outcome == "posted":
            self.tally.posted += 1
            self.tally.without_opening += note is not None
            incident.resolved = incident.resolved or event["event"] == "resolved"
        else:
            self.tally.refused += 1
            if len(self.tally.refused_names) < _LISTED:
                self.tally.refused_names.append(name)
        self._settle(ack_ids)
        return outcome

    def _settle(self, ack_ids: dict[str, str]) -> None:
        for mid in ack_ids:
            self.tally.pending.pop(mid, None)
        self._ack(list(ack_ids.values()))

    def _ack(self, ack_ids: list[str]) -> None:
        # One message at a time, as soon as it is done: a post can take a minute of retries, and an ack held back
        # for a batch would come after the deadline and be ignored -- the message then posted a second time.
        if ack_ids:
            self.subscriber.acknowledge(subscription=self.subscription, ack_ids=ack_ids)

    def _deadline(self, ack_ids: list[str], seconds: int) -> None:
        if ack_ids:
            self.subscriber.modify_ack_deadline(subscription=self.subscription, ack_ids=ack_ids,
                                                ack_deadline_seconds=seconds)


def notify(
    subscriber: Any, subscription: str, hook: Webhook, project: str | None, max_messages: int | None = None,
    idle_exit_s: float | None = None, log: Callable[[str], None] = print, tally: Tally | None = None,
    wait_for_opening_s: float = WAIT_FOR_OPENING_S, clock: Callable[[], float] | None = None,
) -> Tally:
    """Pull incident events from ``subscription`` and post each, in its incident's order (see above); returns
    ``tally`` (a new one if none is given), which is kept current, so a caller interrupted by Ctrl-C reads it too.

    A message is acknowledged once posted, refused for good (counted in ``hook.stats``), or known to be posted
    already; one Slack gave up on after retries is let go for Pub/Sub to hand out again. Stops once
    ``max_messages`` distinct messages are taken in and done with (copies handed out again are not counted; a
    message beyond them is let go unposted, unless it is the opening that taken events wait for), or after
    ``idle_exit_s`` with no new message and no post tried; else runs until interrupted. What still waits for its
    opening then is let go, and is in ``tally.pending``.
    """
    tally = Tally() if tally is None else tally
    clock = clock or time.monotonic
    courier = _Courier(subscriber, subscription, hook, project, tally, log, wait_for_opening_s, clock)
    try:
        _loop(subscriber, subscription, courier, tally, max_messages, idle_exit_s, clock)
    finally:  # Ctrl-C too: what waits for its opening goes back to Pub/Sub now, not when its deadline ends
        courier.let_go()
    return tally


def _loop(subscriber: Any, subscription: str, courier: _Courier, tally: Tally, max_messages: int | None,
          idle_exit_s: float | None, clock: Callable[[], float]) -> None:
    while True:
        full = max_messages is not None and tally.messages >= max_messages
        if full and not tally.pending:
            break
        if idle_exit_s is not None and clock() - courier.progress > idle_exit_s:
            break
        if max_messages is None:
            room = 10
        elif not full:
            room = min(10, max_messages - tally.messages)  # never more new messages than asked for
        else:
            room = 10  # only what is owed is taken: copies of what is pending, and the openings it waits for
        resp = subscriber.pull(subscription=subscription, max_messages=room, timeout=30)
        taken = [courier.take(received, max_messages is None or tally.messages < max_messages)
                 for received in resp.received_messages]
        courier.expire()
        if taken and not any(taken):
            time.sleep(1.0)  # only new messages, let go: do not pull them again and again while waiting
