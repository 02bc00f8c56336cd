"""The flex template's launcher: Dataflow runs this file (``FLEX_TEMPLATE_PYTHON_PY_FILE``) on the launcher VM
with the template parameters as ``--name=value`` flags.

It validates the options, builds the streaming job, submits it and exits without waiting for the job: a
flex-template launch ends when this process exits, and a streaming job never finishes. If an option is bad,
it prints ``stagewatch: error: ...`` to stderr and exits with status 2, and the launch fails with that message.
"""

from __future__ import annotations

import sys

from stagewatch.stream.pipeline import run


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # The launcher builds a Dataflow job, whatever the template's caller passed: without a --runner, the job's
    # own default (a local runner for a file, none for Pub/Sub) would not be Dataflow.
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args = [*args, "--runner=DataflowRunner"]
    try:
        run(args, wait=False)
    except ValueError as exc:
        print(f"stagewatch: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
