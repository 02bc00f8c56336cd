"""The ``stagewatch`` command: one module per command family, each adding its subcommand (``add``), and one exit
policy for all of them (``main``): a user's mistake is one line on stderr and exit status 2; Ctrl-C is
"interrupted" and 130; a closed stdout (``| head``) ends quietly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from stagewatch import __version__
from stagewatch.cli import bigquery, evaluate, explain, notify, replay, report, run, simulate

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stagewatch",
        description="Per-file latency anomaly detection for multi-service pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"stagewatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (replay, simulate, evaluate, run, notify, explain, report, bigquery):
        command.add(sub)
    for name, example in _EXAMPLES.items():
        sub.choices[name].epilog = sub.choices[name].epilog or f"example: {example}"
    return parser


# One example in each command's help (replay, simulate and run set theirs where they are defined).
_EXAMPLES = {
    "evaluate": "stagewatch evaluate labels demo/labels.jsonl demo/out",
    "notify-slack": "stagewatch notify-slack --subscription projects/my-proj/subscriptions/stagewatch-slack "
                    "(the webhook URL in $STAGEWATCH_SLACK_WEBHOOK)",
    "explain": "stagewatch explain f-20260606-000123 --input demo/out",
    "report": "stagewatch report demo/out -o demo/report.html",
    "bigquery": "stagewatch bigquery query incidents --dataset my-proj.stagewatch --param day=2026-06-06",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            if not getattr(args, "passes_through", False):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.pipeline_args = extra  # another program's options (Beam's, for run)
    except SystemExit as exc:  # argparse said what was wrong (or printed the help); its status, returned
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args))
    except ValueError as exc:
        from stagewatch.cli.common import for_terminal

        # One line, escaped: a message may name what someone else's logs hold (the stages the data shows).
        print(for_terminal(f"stagewatch {args.command}: error: {exc}").replace("\n", "\\n"), file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(f"stagewatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
