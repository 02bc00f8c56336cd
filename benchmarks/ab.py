"""A/B timing of one stagewatch command: a commit against this checkout, alternating, in one invocation.

    python benchmarks/ab.py --against REF [--repeats 3] -- replay LOGS --processes 1 -o /dev/null --no-progress

Checks REF out into a temporary worktree and runs ``python -m stagewatch ARGS`` with REF's package, then with this
checkout's, ``--repeats`` times, alternating (these machines are shared and noisy: the two sides see the same
noise). Prints each run's wall clock, and each side's median and best, and the ratio after / before. A run that
fails stops the comparison. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent


def _time(pipelines: Path, args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(pipelines))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stagewatch", *args], env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ab: stagewatch {' '.join(args)} exited {done.returncode} ({pipelines}):\n"
                         f"{done.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, metavar="REF", help="the commit to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="write the figures here")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="stagewatch's arguments, after --")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the stagewatch command to time after --")
    with tempfile.TemporaryDirectory(prefix="stagewatch-ab-") as work:
        tree = Path(work) / "ref"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.against], check=True,
                       capture_output=True)
        try:
            sides = {"before": tree / "pipelines", "after": REPO / "pipelines"}
            times: dict[str, list[float]] = {side: [] for side in sides}
            for k in range(args.repeats):
                for side, pipelines in sides.items():
                    times[side].append(_time(pipelines, command))
                    print(f"round {k + 1}  {side:<6} {times[side][-1]:7.2f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    figures = {side: {"seconds": t, "median": statistics.median(t), "best": min(t)} for side, t in times.items()}
    for side, f in figures.items():
        print(f"{side:<6} median {f['median']:.2f} s, best {f['best']:.2f} s")
    ratio = figures["after"]["median"] / figures["before"]["median"]
    print(f"after / before (medians): {ratio:.3f}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"against": args.against, "command": command, "figures": figures,
                                                  "ratio_of_medians": ratio}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
