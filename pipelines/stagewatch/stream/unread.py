"""What of ``stagewatch run``'s command line Beam would not read: on a local runner it drops an option it does not
know, a word that is no option's value and all after ``--``, with a warning in the log, and the job runs without
what they asked for (``run --line tail`` ran the body line). Other runners may hand such options on (Dataflow to
the service). Beam's own parser of every option it knows decides.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

__all__ = ["LOCAL_RUNNERS", "beam_options", "unknown_flags", "unread"]

#: The runners that drop what Beam does not read, lower case without "Runner" (none given: the job's local one).
LOCAL_RUNNERS = frozenset({"", "stagewatchlocal", "direct", "switchingdirect", "bundlebaseddirect"})


@contextmanager
def _quiet() -> Iterator[None]:
    """Beam's "Discarding unparseable args" warning, held back: the caller says it in one line."""
    log = logging.getLogger("apache_beam.options.pipeline_options")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def unknown_flags(argv: list[str]) -> list[str]:
    """What on ``argv`` neither the job nor the installed Beam reads, as typed: options it does not know (and the
    word after one), words that are no option's value, and all after ``--``."""
    parsers: list[argparse.ArgumentParser] = []  # Beam's parser of every option it knows, as it builds it
    with _quiet():
        PipelineOptions(argv).get_all_options(add_extra_args_fn=parsers.append)
    return parsers[0].parse_known_args(argv)[1]


def unread(job_argv: list[str], beam_argv: list[str]) -> list[str]:
    """``unknown_flags`` of ``beam_argv`` (Beam's part of the job's whole command line ``job_argv``) on a local
    runner; nothing on another."""
    with _quiet():
        runner = PipelineOptions(job_argv).view_as(StandardOptions).runner or ""
    return unknown_flags(beam_argv) if runner.lower().removesuffix("runner") in LOCAL_RUNNERS else []


def beam_options() -> list[str]:
    """Every option the installed Beam knows, as ``--name``."""
    with _quiet():
        return [f"--{name}" for name in PipelineOptions([]).get_all_options()]
