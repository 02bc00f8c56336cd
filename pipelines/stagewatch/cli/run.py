"""``stagewatch run``: the streaming job -- locally over a log file, or from Pub/Sub on a runner of Beam's.

The job's own flags are the template's parameters (``stream.parameters``), parsed here like every other command's;
whatever else is on the command line is Beam's (``--runner``, ``--project``, ``--region``, ...) and is passed on
to it -- on a local runner, once Beam is known to read all of it (``stream.unread``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from stagewatch.cli.common import for_terminal

__all__ = ["REPLAY_NAMES", "add", "pipeline_argv"]

#: The job's parameters that ``stagewatch replay`` calls otherwise (the same units), by the parameter's name.
REPLAY_NAMES = {"alert_line": ("line",), "half_life_s": ("half-life",), "baseline_interval_s": ("baseline-interval",),
                "max_ahead_s": ("max-ahead",), "max_age_s": ("max-age",), "allowed_lateness_s": ("allowed-lateness",)}


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
        epilog="example: stagewatch run --input_file sim/logs.jsonl --output_dir out",
    )
    for param in PARAMETERS:
        # Dashes or underscores: replay's flags have dashes, Beam's (and the template's) underscores; and replay's
        # own name where it has another (``--line tail`` was dropped by Beam as unknown: the job ran the body line).
        spellings = dict.fromkeys((f"--{param.name}", f"--{param.name.replace('_', '-')}",
                                   *(f"--{a}" for a in REPLAY_NAMES.get(param.name, ()))))
        text = param.help + (f" (default {param.default})" if param.default else "")
        p.add_argument(*spellings, dest=param.name, metavar=param.name.upper(),
                       help=text.replace("%", "%%"))  # argparse formats help with %: "30 %" crashed --help
    p.add_argument("--force", action="store_true",
                   help="run with the stages given even when the input file's first events contradict them "
                   "(local runs)")
    p.set_defaults(func=_run, pipeline_args=[], passes_through=True)


def pipeline_argv(args: argparse.Namespace) -> list[str]:
    """The job's command line for Beam: the parameters given here, then Beam's own options as they came."""
    from stagewatch.stream.parameters import PARAMETERS

    ours = [f"--{p.name}={getattr(args, p.name)}" for p in PARAMETERS if getattr(args, p.name) is not None]
    return ours + list(args.pipeline_args)


def _refuse_unknown(args: argparse.Namespace) -> None:
    import difflib

    from stagewatch.stream.parameters import PARAMETERS
    from stagewatch.stream.unread import beam_options, unread

    unknown = unread(pipeline_argv(args), list(args.pipeline_args))
    if not unknown:
        return
    what = unknown[0]
    if what == "--":
        raise ValueError(f"Beam reads no option after --, and would run without {' '.join(unknown[1:3])}: drop the --")
    if not what.startswith("-"):
        raise ValueError(f"{what} is the value of no option, and Beam would run without it (several log files: "
                         "give their folder as --input_file); stagewatch run --help lists the job's options")
    ours = [f"--{p.name}" for p in PARAMETERS]
    name = what.split("=", 1)[0]
    close = ["--output_dir (a folder)"] if name == "-o" else difflib.get_close_matches(  # replay's -o FILE
        "--" + name.lstrip("-").replace("-", "_"), [*ours, *beam_options()], n=1, cutoff=0.8)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ValueError(f"{name} is an option of neither stagewatch run nor Beam, which would drop it and run without it; "
                     f"{hint}stagewatch run --help lists the job's")


def _run(args: argparse.Namespace) -> int:
    from stagewatch.cli.replay import TRUNCATED_INPUT
    from stagewatch.core.records import DeadLetter
    from stagewatch.stream.options import validate_argv
    from stagewatch.stream.pipeline import run
    from stagewatch.stream.sinks import local_output_summary

    _refuse_unknown(args)
    opts = validate_argv(pipeline_argv(args))  # the flags first, then the input they name
    forced = None
    if opts.input_file:
        from stagewatch.cli.common import check_stages, log_inputs
        from stagewatch.core.events import FieldMapping

        files = log_inputs([opts.input_file])  # a file or a folder of them, each readable
        if opts.output_dir and os.path.exists(opts.output_dir) and not os.path.isdir(opts.output_dir):
            raise ValueError(f"--output_dir {opts.output_dir} is a file: give a folder for the job's JSONL "
                             "outputs, e.g. out")
        forced = check_stages(opts.stages, files, FieldMapping(), args.force)
    started = time.monotonic()
    broken_off: list[DeadLetter] = []
    run(pipeline_argv(args), broken_off=broken_off)
    if args.input_file and args.output_dir:
        print(f"stagewatch run: {args.input_file} in {time.monotonic() - started:.0f} s -> {args.output_dir}\n"
              + local_output_summary(args.output_dir), file=sys.stderr)
    if forced:
        print(for_terminal(f"stagewatch run: --force: ran with the stages given although {forced}"),
              file=sys.stderr)
    if broken_off:
        print(for_terminal(f"stagewatch run: the input was truncated or corrupt ({broken_off[0].detail}): run up to "
                           f"the break (see the dead letters, reason truncated_input); exit status {TRUNCATED_INPUT}"),
              file=sys.stderr)
        return TRUNCATED_INPUT
    return 0
