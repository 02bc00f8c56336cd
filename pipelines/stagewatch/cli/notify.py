"""``stagewatch notify-slack``: incident events from a subscription of the job's topic, posted to Slack."""

from __future__ import annotations

import argparse
import re
import sys

from stagewatch.cli.common import for_terminal

__all__ = ["add"]


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "notify-slack",
        help="post the job's incident events to Slack (Block Kit, via an incoming webhook or a bot token)",
        description="Pull incident events from a subscription of the job's topic and post each to Slack. The "
        "webhook URL comes from ${STAGEWATCH_SLACK_WEBHOOK} or --webhook-secret (Secret Manager) and is never "
        "printed. With --channel, a bot token (${STAGEWATCH_SLACK_BOT_TOKEN} or --token-secret) posts through "
        "Slack's Web API instead: updates and the resolution thread onto the opening message, which the "
        "resolution also marks resolved. An incident's updates and resolution are never posted before its opening "
        "(they wait for it, at most --wait-for-opening), and each event is posted once however often Pub/Sub "
        "delivers it. 429 and 5xx are retried with backoff, then left to Pub/Sub to deliver again; other 4xx are "
        "counted and reported. Exit status 1 when something was not delivered in the end (the summary names it).",
    )
    p.add_argument("--subscription", required=True, help="projects/P/subscriptions/S (of the incident topic)")
    p.add_argument("--webhook-secret", help="Secret Manager secret holding the webhook URL: projects/P/secrets/S")
    p.add_argument("--channel", help="post with a bot token to this channel id (threads resolutions)")
    p.add_argument("--token-secret", help="Secret Manager secret holding the bot token: projects/P/secrets/S")
    p.add_argument("--thread-state", metavar="FILE",
                   help="JSON file remembering each open incident's message, so threads survive a restart")
    p.add_argument("--slack-api", default="https://slack.com/api", help=argparse.SUPPRESS)  # tests: a local fake
    p.add_argument("--project", help="project for the Cloud Logging links (default: the subscription's)")
    p.add_argument("--max-messages", type=int,
                   help="stop once this many messages are taken in and done with (default: run until stopped)")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="stop after this long with no new message and no post tried")
    p.add_argument("--wait-for-opening", type=float, metavar="SECONDS", default=None,
                   help="how long an incident's updates wait for an opening not yet posted before going alone, "
                   "saying so (default: 600, the longest Pub/Sub takes to deliver a message again)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from stagewatch.notify import courier, slack
    from stagewatch.secrets import secret_value

    match = re.match(r"^projects/([^/]+)/subscriptions/[^/]+$", args.subscription)
    if not match:
        raise ValueError(f"--subscription must look like projects/PROJECT/subscriptions/NAME, got "
                         f"{args.subscription!r}")
    if args.max_messages is not None and args.max_messages < 1:
        raise ValueError(f"--max-messages must be at least 1, got {args.max_messages}")
    wait = courier.WAIT_FOR_OPENING_S if args.wait_for_opening is None else args.wait_for_opening
    if not wait >= 0:  # also refuses nan
        raise ValueError(f"--wait-for-opening must be 0 or more seconds, got {args.wait_for_opening}")
    hook: slack.Webhook
    if args.channel:
        hook = slack.SlackApi(url=args.slack_api, channel=args.channel, state_path=args.thread_state,
                              token=secret_value(slack.BOT_TOKEN_ENV, "--token-secret", args.token_secret,
                                                   what="Slack credential"))
    elif args.token_secret or args.thread_state:
        raise ValueError("--token-secret and --thread-state are for the bot-token mode: give --channel too")
    else:
        hook = slack.Webhook(slack.webhook_url(args.webhook_secret))
    subscriber = pubsub_v1.SubscriberClient()
    tally = courier.Tally()  # notify keeps it current: after Ctrl-C it still says what was done
    try:
        courier.notify(subscriber, args.subscription, hook, args.project or match.group(1), args.max_messages,
                       args.idle_exit, log=lambda line: print(for_terminal(line), file=sys.stderr), tally=tally,
                       wait_for_opening_s=wait)
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()
    # Slack's answers (a failed_500 followed by a success is a retry that worked, not a failure) ...
    counts = " · ".join(f"{k} {v}" for k, v in sorted(hook.stats.items())) or "nothing posted"
    print(for_terminal(f"stagewatch notify-slack: {tally.summary()}; Slack: {counts}"), file=sys.stderr)
    # ... and what counts for the exit status: was every incident event delivered in the end?
    missing = tally.not_delivered()
    if not missing:
        return 0
    more = tally.missing() - len(missing[:10])
    listed = "; ".join(missing[:10]) + (f"; and {more} more" if more > 0 else "")
    print(for_terminal(f"stagewatch notify-slack: not delivered: {tally.missing()} -- {listed}"), file=sys.stderr)
    return 1

