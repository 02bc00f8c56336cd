"""A million hostile lines through the backtest: every line accounted for, peak memory, and throughput relative to
the clean input, in one process and in two.

    python benchmarks/hostile.py [--events 1000000] [--workdir DIR] [--json FILE] [--markdown FILE]

Inputs, from the simulated day of ``benchmarks/backtest_speed.py`` (seed 42, about ``--events`` lines):

* ``clean``: the day as simulated (its own junk lines included);
* ``mixed``: the same with every tenth line replaced by a hostile one (``tests/hostile.py``'s cases, in turn:
  times at the ends of time, absurd latencies, identifiers with terminal escapes, control and bidi characters, a
  100 KB uid, blank lines);
* ``hostile``: as many lines, every one hostile.

Each is replayed (``stagewatch replay --dead-letters``, so every rejected line is written) with ``--processes 1``
and ``2``, alternating, best of ``--repeats``; the process tree's peak RSS is sampled every 0.1 s. Accounting:
``lines == events + rejected - late + blank`` from ``--summary-json``. Throughput is lines per second, and its ratio
to the clean input's in the same invocation (these machines are shared and noisy; ratios are what compare).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.hostile: the cases the tests use

from tests.hostile import hostile_lines  # noqa: E402

from stagewatch.evaluation.simulate import SimConfig, simulate_to_dir  # noqa: E402


def _inputs(events: int, work: Path) -> dict[str, Path]:
    day = work / f"sim-{events}"
    logs = day / "logs.jsonl"
    if not logs.exists():
        simulate_to_dir(SimConfig(seed=42, peak_rate_per_min=events / 8.1 / (24 * 60 * 0.45)), day)
    valid = logs.read_bytes().splitlines()
    template = next(e for e in map(orjson.loads, valid[:200]) if e.get("jsonPayload", {}).get("stage") == "detect")
    cases = [line for _, _, line in hostile_lines(template)]
    cycle = itertools.cycle(cases)
    mixed = work / "mixed.jsonl"
    mixed.write_bytes(b"\n".join(next(cycle) if k % 10 == 9 else line for k, line in enumerate(valid)) + b"\n")
    hostile = work / "hostile.jsonl"
    cycle = itertools.cycle(cases)
    hostile.write_bytes(b"\n".join(next(cycle) for _ in range(len(valid))) + b"\n")
    return {"clean": logs, "mixed": mixed, "hostile": hostile}


def _tree(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *(p for k in kids for p in _tree(int(k)))]


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def replay(path: Path, processes: int, work: Path) -> dict[str, Any]:
    summary = work / f"summary-{path.stem}-{processes}.json"
    cmd = [sys.executable, "-m", "stagewatch", "replay", str(path), "-o", "/dev/null", "--dead-letters",
           str(work / "dead.jsonl"), "--summary-json", str(summary), "--processes", str(processes), "--no-progress"]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while child.poll() is None:
        peak = max(peak, sum(_rss_kb(p) for p in _tree(child.pid)))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if child.returncode not in (0, 2):  # 2: an input without a single event (the all-hostile one)
        raise SystemExit(f"hostile: {' '.join(cmd)} exited {child.returncode}")
    stats = orjson.loads(summary.read_bytes())
    balanced = stats["lines"] == stats["events"] + sum(stats["rejected"].values()) - stats["late"] + stats["blank"]
    return {"seconds": seconds, "peak_rss_mb": peak / 1024, "lines": stats["lines"], "events": stats["events"],
            "rejected": sum(stats["rejected"].values()) - stats["late"], "blank": stats["blank"],
            "accounted": balanced, "exit": child.returncode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/stagewatch-bench")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--markdown", help="write a markdown table here")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    inputs = _inputs(args.events, work)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="stagewatch-hostile-") as scratch:
        for _ in range(args.repeats):
            for name, path in inputs.items():
                for processes in (1, 2):
                    runs.setdefault((name, processes), []).append(replay(path, processes, Path(scratch)))
    best = {key: min(r, key=lambda x: x["seconds"]) for key, r in runs.items()}
    for key, b in best.items():
        b["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs[key])  # the worst peak of the repeats
        b["lines_per_s"] = b["lines"] / b["seconds"]
        b["ratio_to_clean"] = b["lines_per_s"] / (best[("clean", key[1])]["lines"] / best[("clean", key[1])]["seconds"])
    rows = [f"| {name} | {p} | {b['lines']:,} | {b['events']:,} | {b['rejected']:,} | {b['blank']:,} | "
            f"{'yes' if b['accounted'] else '**no**'} | {b['peak_rss_mb']:.0f} | {b['lines_per_s']:,.0f} | "
            f"{b['ratio_to_clean']:.2f} |" for (name, p), b in best.items()]
    table = "\n".join([
        "| input | processes | lines | events | rejected | blank | every line accounted for | peak RSS MB "
        "| lines/s | / clean |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|", *rows])
    print(table)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({f"{n}-{p}": b for (n, p), b in best.items()},
                                                 option=orjson.OPT_INDENT_2))
    if args.markdown:
        Path(args.markdown).write_text(
            "# Hostile input: accounting, memory, throughput\n\nProduced by `python benchmarks/hostile.py "
            f"--events {args.events} --json benchmarks/hostile.json --markdown benchmarks/hostile.md` on "
            f"{time.strftime('%Y-%m-%d')} (best of {args.repeats} alternating runs; peak RSS: the worst of them, "
            "the whole process tree). Method: the module docstring.\n\n" + table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
