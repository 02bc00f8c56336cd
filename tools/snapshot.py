"""Behaviour snapshots: record what stagewatch writes for a fixed set of inputs, and compare two recordings byte
for byte. A refactor proves it changed nothing with one command::

    python tools/snapshot.py check --against REF      # REF: a commit, e.g. the one before the refactor

``check`` checks REF out into a temporary worktree, records the outputs of REF's stagewatch and of this checkout's
(each through ``python -m stagewatch`` with its own ``pipelines`` first on ``PYTHONPATH``), and compares them file
for file; it exits 1 on any difference and prints what differs. ``record DIR`` and ``compare A B`` do the halves.

What is recorded (the same commands for both; only the command-line spelling may differ between releases):

* three simulated days (seeds 101, 102, 103; 24 hours each, the five standard faults): ``simulate``'s files, and
  ``replay`` with every output flag (anomalies, traces, dead letters, incidents, lots, summary JSON and the closing
  summary) with ``--processes 1`` and with ``--processes 2``;
* the quickstart: ``simulate --short --rate 6``, ``run`` over it (each table's files concatenated in name order),
  ``evaluate`` (text and ``--json``), ``report`` (the HTML page), and ``explain`` for the first file of each
  anomaly kind.

Normalised before comparing, and only this: wall-clock figures (seconds, lines per second) and the recording's own
folder in paths ("paths aside").
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
DAYS = (101, 102, 103)
TABLES = ("anomalies", "traces", "dead_letters", "incidents", "lots")
_TIMING = [
    (re.compile(rb"lines in [0-9.]+ s \([0-9,]+ lines/s\)"), b"lines in <seconds>"),
    (re.compile(rb"in [0-9]+ s -> "), b"in <seconds> -> "),
    (re.compile(rb'"seconds": ?[0-9.e+-]+'), b'"seconds": 0'),
]


class Recorder:
    """Runs one stagewatch (the package under ``pipelines``) and writes what it produced under ``out``."""

    def __init__(self, pipelines: Path, out: Path) -> None:
        self.pipelines = pipelines.resolve()
        self.out = out.resolve()
        self.env = dict(os.environ, PYTHONPATH=str(self.pipelines), PYTHONHASHSEED="0")
        self.env.pop("PYTHONSTARTUP", None)

    def stagewatch(self, *args: str, name: str | None = None) -> bytes:
        """``python -m stagewatch ARGS`` with this recorder's package; stdout and stderr kept as ``name``."""
        done = subprocess.run([sys.executable, "-m", "stagewatch", *args], env=self.env, cwd=self.out,
                              capture_output=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"snapshot: stagewatch {' '.join(args)} exited {done.returncode} "
                             f"({self.pipelines}):\n{done.stderr.decode(errors='replace')[-3000:]}")
        if name is not None:
            (self.out / f"{name}.stdout").write_bytes(self._normal(done.stdout))
            (self.out / f"{name}.stderr").write_bytes(self._normal(done.stderr))
        return done.stdout

    def _normal(self, data: bytes) -> bytes:
        for pattern, replacement in _TIMING:
            data = pattern.sub(replacement, data)
        return data.replace(str(self.out).encode(), b"<out>")

    def which(self) -> str:
        code = "import stagewatch, sys; sys.stdout.write(stagewatch.__file__)"
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, check=True)
        return done.stdout.decode()

    def help_text(self, *words: str) -> bytes:
        done = subprocess.run([sys.executable, "-m", "stagewatch", *words, "--help"], env=self.env,
                              capture_output=True, check=False)
        return done.stdout

    def record(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        found = self.which()
        if not found.startswith(str(self.pipelines)):
            raise SystemExit(f"snapshot: python imports stagewatch from {found}, not from {self.pipelines}")
        for seed in DAYS:
            self.replay_day(seed)
        self.quickstart()
        for path in sorted(self.out.rglob("*")):
            if path.is_file():
                path.write_bytes(self._normal(path.read_bytes()))

    def replay_day(self, seed: int) -> None:
        day = f"day{seed}"
        self.stagewatch("simulate", f"{day}/sim", "--seed", str(seed), name=f"{day}/simulate")
        for processes in ("1", "2"):
            out = f"{day}/replay-p{processes}"
            (self.out / out).mkdir(parents=True, exist_ok=True)
            self.stagewatch(
                "replay", f"{day}/sim/logs.jsonl", "-o", f"{out}/anomalies.jsonl", "--traces", f"{out}/traces.jsonl",
                "--dead-letters", f"{out}/dead_letters.jsonl", "--incidents", f"{out}/incidents.jsonl",
                "--lots", f"{out}/lots.jsonl", "--summary-json", f"{out}/summary.json", "--no-progress",
                "--processes", processes, name=f"{out}/replay",
            )

    def quickstart(self) -> None:
        self.stagewatch("simulate", "demo", "--short", "--rate", "6", name="demo-simulate")
        self.stagewatch("run", "--input_file", "demo/logs.jsonl", "--output_dir", "demo/out", name="demo-run")
        run_dir = self.out / "demo" / "out"
        for table in TABLES:  # the writer's files are named for its process: concatenated, in name order
            parts = sorted(run_dir.glob(f"{table}*.jsonl"))
            (self.out / f"run-{table}.jsonl").write_bytes(b"".join(p.read_bytes() for p in parts))
        # Releases before 0.2 took the labels' mode from the first positional; since then it is a subcommand.
        evaluate = ("evaluate", "labels") if b"{labels" in self.help_text("evaluate") else ("evaluate",)
        self.stagewatch(*evaluate, "demo/labels.jsonl", "demo/out", name="evaluate")
        self.stagewatch(*evaluate, "demo/labels.jsonl", "demo/out", "--json", name="evaluate-json")
        self.stagewatch("report", "demo/out", "-o", "report.html", name="report")
        anomalies = [orjson.loads(line) for line in (self.out / "run-anomalies.jsonl").read_bytes().splitlines()]
        for kind in sorted({a["kind"] for a in anomalies}):
            uid = min(a["uid"] for a in anomalies if a["kind"] == kind)
            self.stagewatch("explain", uid, "--input", "demo/out", name=f"explain-{kind}")
        shutil.rmtree(run_dir)  # its file names carry a process id; the concatenations above stand for it


def compare(a: Path, b: Path, say: Callable[[str], None] = print) -> int:
    """Differences between two recordings (0: the same files with the same bytes)."""

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    fa, fb = files(a), files(b)
    differences = 0
    for name in sorted(fa ^ fb):
        say(f"  only in {'the first' if name in fa else 'the second'}: {name}")
        differences += 1
    for name in sorted(fa & fb):
        if not filecmp.cmp(a / name, b / name, shallow=False):
            say(f"  differs: {name}")
            differences += 1
    total = sum((a / n).stat().st_size for n in fa & fb)
    say(f"snapshot: {len(fa & fb)} files ({total / 1e6:.1f} MB) compared, {differences} differences")
    return differences


def check(ref: str, keep: Path | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="stagewatch-snapshot-")) if keep is None else keep
    tree = work / "ref"
    if tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref], check=True,
                   capture_output=True)
    try:
        print(f"snapshot: recording {ref} ({tree})", flush=True)
        Recorder(tree / "pipelines", work / "before").record()
        print(f"snapshot: recording this checkout ({REPO})", flush=True)
        Recorder(REPO / "pipelines", work / "after").record()
        return 1 if compare(work / "before", work / "after") else 0
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record this checkout's outputs (or those of --pipelines) into DIR")
    rec.add_argument("dir", type=Path)
    rec.add_argument("--pipelines", type=Path, default=REPO / "pipelines", help="the pipelines/ folder to run")
    cmp_ = sub.add_parser("compare", help="compare two recordings byte for byte")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    chk = sub.add_parser("check", help="record REF and this checkout, and compare")
    chk.add_argument("--against", required=True, metavar="REF", help="a git commit, e.g. HEAD~3")
    chk.add_argument("--keep", type=Path, metavar="DIR", help="keep both recordings here")
    args = parser.parse_args(argv)
    if args.command == "record":
        Recorder(args.pipelines, args.dir).record()
        return 0
    if args.command == "compare":
        return 1 if compare(args.a, args.b) else 0
    return check(args.against, args.keep)


if __name__ == "__main__":
    sys.exit(main())
