"""The flex template's launcher: Dataflow runs this file (``FLEX_TEMPLATE_PYTHON_PY_FILE``) on the launcher VM
with the template parameters as ``--name=value`` flags.

It validates the options, builds the streaming job, submits it and exits without waiting for the job: a
flex-template launch ends when this process exits, and a streaming job never finishes. If an option is bad,
it prints ``stagewatch: error: ...`` to stderr and exits with status 2, and the launch fails with that message.

The workers run the image this file runs in (templates/stagewatch/Dockerfile: its entrypoint is Beam's SDK boot,
and the package and every dependency are preinstalled), so nothing is staged for them to pip-install. Dataflow
does not tell the job which image launched it, and metadata.json is committed, the same for every build, while the
image's name changes with each; so this launcher names the image as ``--sdk_container_image``: the template
parameter ``sdk_container_image`` when the caller passed one (say, the image by digest), else
``$STAGEWATCH_SDK_CONTAINER_IMAGE``, which the image's build sets to the name it is pushed as. With neither it
stops: the workers would run Beam's stock container, which has no stagewatch, and a streaming job retries its
failing bundles forever instead of failing.
"""

from __future__ import annotations

import os
import sys

from stagewatch.stream.pipeline import run

# Set by the Dockerfile from its SDK_CONTAINER_IMAGE build argument.
IMAGE_ENV = "STAGEWATCH_SDK_CONTAINER_IMAGE"


def _flag(args: list[str], *names: str) -> str | None:
    """The last value given to any of ``names`` (as ``--name value`` or ``--name=value``), as argparse keeps it."""
    value = None
    for i, arg in enumerate(args):
        name, eq, rest = arg.partition("=")
        if name in names:
            value = rest if eq else (args[i + 1] if i + 1 < len(args) else "")
    return value


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # The launcher builds a Dataflow job, whatever the template's caller passed: without a --runner, the job's
    # own default (a local runner for a file, none for Pub/Sub) would not be Dataflow.
    runner = _flag(args, "--runner")
    if runner is None:
        runner = "DataflowRunner"
        args = [*args, f"--runner={runner}"]
    # Beam still reads the older name of the option; a value under either is the caller's choice.
    if "dataflow" in runner.lower() and not _flag(args, "--sdk_container_image", "--worker_harness_container_image"):
        image = os.environ.get(IMAGE_ENV, "").strip()
        if not image:
            print(f"stagewatch: error: no image for the workers: pass the template parameter sdk_container_image=IMAGE "
                  f"or build the image with --build-arg SDK_CONTAINER_IMAGE=IMAGE (sets ${IMAGE_ENV})", file=sys.stderr)
            return 2
        args = [*args, f"--sdk_container_image={image}"]
    try:
        run(args, wait=False)
    except ValueError as exc:
        print(f"stagewatch: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
