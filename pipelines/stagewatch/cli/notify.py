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
        "resolution also marks resolved. 429 and 5xx are retried with backoff; other 4xx are counted and reported.",
    )
    p.add_argument("--subscription", required=True, help="projects/P/subscriptions/S (of the incident topic)")
    p.add_argument("--webhook-secret", help="Secret Manager secret holding the webhook URL: projects/P/secrets/S")
    p.add_argument("--channel", help="post with a bot token to this channel id (threads resolutions)")
    p.add_argument("--token-secret", help="Secret Manager secret holding the bot token: projects/P/secrets/S")
    p.add_argument("--thread-state", metavar="FILE",
                   help="JSON file remembering each open incident's message, so threads survive a restart")
    p.add_argument("--slack-api", default="https://slack.com/api", help=argparse.SUPPRESS)  # tests: a local fake
    p.add_argument("--project", help="project for the Cloud Logging links (default: the subscription's)")
    p.add_argument("--max-messages", type=int, help="stop after this many messages (default: run until stopped)")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS", help="stop after this long with no message")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from stagewatch.notify.slack import BOT_TOKEN_ENV, SlackApi, Webhook, notify, secret_value, webhook_url

    match = re.match(r"^projects/([^/]+)/subscriptions/[^/]+$", args.subscription)
    if not match:
        raise ValueError(f"--subscription must look like projects/PROJECT/subscriptions/NAME, got "
                         f"{args.subscription!r}")
    hook: Webhook
    if args.channel:
        hook = SlackApi(url=args.slack_api, channel=args.channel, state_path=args.thread_state,
                        token=secret_value(BOT_TOKEN_ENV, "--token-secret", args.token_secret))
    elif args.token_secret or args.thread_state:
        raise ValueError("--token-secret and --thread-state are for the bot-token mode: give --channel too")
    else:
        hook = Webhook(webhook_url(args.webhook_secret))
    subscriber = pubsub_v1.SubscriberClient()
    seen = skipped = 0
    try:
        seen, skipped = notify(subscriber, args.subscription, hook, args.project or match.group(1),
                               args.max_messages, args.idle_exit,
                               log=lambda line: print(for_terminal(line), file=sys.stderr))
    except KeyboardInterrupt:
        pass
    finally:
        subscriber.close()
    counts = " · ".join(f"{k} {v}" for k, v in sorted(hook.stats.items())) or "nothing posted"
    print(f"stagewatch notify-slack: {seen} messages, {skipped} not incidents; {counts}", file=sys.stderr)
    return 0 if not any(k.startswith("failed_") for k in hook.stats) else 1

