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
    return parser


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
        print(f"stagewatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print(f"stagewatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
