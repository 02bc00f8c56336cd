"""``stagewatch run``: the streaming job -- locally over a log file, or from Pub/Sub on a runner of Beam's.

The job's own flags are the template's parameters (``stream.parameters``), parsed here like every other command's;
whatever else is on the command line is Beam's (``--runner``, ``--project``, ``--region``, ...) and is passed on
to it untouched.
"""

from __future__ import annotations

import argparse
import sys
import time

from stagewatch.cli.common import for_terminal

__all__ = ["add", "pipeline_argv"]


def add(sub: argparse._SubParsersAction) -> None:
    from stagewatch.stream.parameters import PARAMETERS

    p = sub.add_parser(
        "run",
        allow_abbrev=False,  # a prefix of ours must not swallow one of Beam's flags
        help="run the streaming job (locally over --input_file, or from Pub/Sub on Dataflow)",
        description="Build and run the Beam pipeline. Locally: --input_file LOGS.jsonl --output_dir DIR. "
        "In production: --input_subscription projects/P/subscriptions/S with --output_topic and/or "
        "--bigquery_dataset, plus Beam's own options (--runner DataflowRunner, --project, --region, ...), which "
        "are passed on to Beam.",
    )
    for param in PARAMETERS:
        p.add_argument(f"--{param.name}", dest=param.name, metavar=param.name.upper(),
                       help=param.help + (f" (default {param.default})" if param.default else ""))
    p.set_defaults(func=_run, pipeline_args=[], passes_through=True)


def pipeline_argv(args: argparse.Namespace) -> list[str]:
    """The job's command line for Beam: the parameters given here, then Beam's own options as they came."""
    from stagewatch.stream.parameters import PARAMETERS

    ours = [f"--{p.name}={getattr(args, p.name)}" for p in PARAMETERS if getattr(args, p.name) is not None]
    return ours + list(args.pipeline_args)


def _run(args: argparse.Namespace) -> int:
    from stagewatch.cli.replay import TRUNCATED_INPUT
    from stagewatch.core.records import DeadLetter
    from stagewatch.stream.pipeline import run
    from stagewatch.stream.sinks import local_output_summary

    started = time.monotonic()
    broken_off: list[DeadLetter] = []
    run(pipeline_argv(args), broken_off=broken_off)
    if args.input_file and args.output_dir:
        print(f"stagewatch run: {args.input_file} in {time.monotonic() - started:.0f} s -> {args.output_dir}\n"
              + local_output_summary(args.output_dir), file=sys.stderr)
    if broken_off:
        print(for_terminal(f"stagewatch run: the input was truncated or corrupt ({broken_off[0].detail}): run up to "
                           f"the break (see the dead letters, reason truncated_input); exit status {TRUNCATED_INPUT}"),
              file=sys.stderr)
        return TRUNCATED_INPUT
    return 0
