"""Backtest speed and memory, as ratios against a baseline measured in the same run.

    python benchmarks/backtest_speed.py [--events 1000000] [--workdir DIR]

1. Simulates a log stream of about ``--events`` lines (seed 42), once, into the work directory.
2. Times, over the same file and alternating three times each (these machines are shared and noisy; the best
   of three is reported): reading + decoding every line with a JSON library alone (``orjson.loads`` and
   msgspec's untyped decoder; the ratio is against the faster), and the backtest (``replay_files``: parse,
   dedup, ordering, traces, baselines, verdicts; no output files), in one process and in two (reading and
   parsing in a second process: what ``stagewatch replay`` does by default for inputs of 16 MB or more).
3. Peak RSS of a ``stagewatch replay`` subprocess over the whole file, in one process and in two (summed).
4. Memory per open trace: tracemalloc over 20,000 traces held open (three stages seen of eight).

Prints a table; ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson

from stagewatch.backtest.engine import Detector
from stagewatch.backtest.replay import replay_files
from stagewatch.core.events import StageEvent
from stagewatch.core.stages import StageOrder
from stagewatch.core.traces import TraceRules
from stagewatch.evaluation.simulate import STAGES, SimConfig, simulate_to_dir
from stagewatch.logfiles import iter_lines


def parse_only(path: Path, library: str) -> tuple[int, float]:
    """Every line read and decoded into Python objects by one JSON library, nothing else."""
    loads: Callable[[bytes], object] = orjson.loads if library == "orjson" else msgspec.json.Decoder().decode
    err = orjson.JSONDecodeError if library == "orjson" else (msgspec.DecodeError, UnicodeDecodeError)
    started = time.perf_counter()
    n = 0
    for line in iter_lines([str(path)]):
        n += 1
        try:  # noqa: SIM105 - contextlib.suppress costs more than the parse being measured
            loads(line)
        except err:
            pass
    return n, time.perf_counter() - started


def backtest(path: Path, processes: int) -> tuple[int, float]:
    started = time.perf_counter()
    stats = replay_files([str(path)], processes=processes, on_anomaly=lambda a: None)
    return stats.lines, time.perf_counter() - started


_CHILD = """
import resource, sys
from stagewatch.cli import main
main(["replay", sys.argv[1], "-o", "/dev/null", "--no-progress", "--processes", sys.argv[2]])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def peak_rss_mb(path: Path, processes: int) -> float:
    """Peak RSS of a separate ``stagewatch replay`` process, read from its own /proc/self/status (VmHWM),
    plus, with two processes, the peak of its reading child (the largest of its children's, from getrusage).

    Not getrusage(RUSAGE_CHILDREN) from here: that counts the forked copy of this process before exec.
    """
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(processes)], check=True, stderr=subprocess.DEVNULL,
        stdout=subprocess.PIPE, text=True,
    )
    own, child = (float(x) for x in done.stdout.strip().splitlines()[-2:])
    return own + (child if processes > 1 else 0.0)


def bytes_per_open_trace(n: int = 20_000) -> float:
    rules = TraceRules(StageOrder(STAGES))
    det = Detector(rules, keep_summaries=False)
    t0 = 1_780_000_000_000_000
    events = [
        StageEvent(f"f-{k:07d}", stage, t0 + k * 1000 + i * 10, "tenant-a", f"lot-{k // 20}", f"{k}-{i}", False, 12.5)
        for k in range(n)
        for i, stage in enumerate(STAGES[:3])
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for ev in events:
        det.push(ev)
    det.ingest.advance(det.max_seen)  # release everything (the watermark normally trails by the allowed lateness)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(det.traces) == n, len(det.traces)
    return (after - before) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/stagewatch-bench")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    work = Path(args.workdir) / f"sim-{args.events}"
    logs = work / "logs.jsonl"
    if not logs.exists():
        # About 8.1 lines per file over a simulated day; the peak rate sets the volume.
        rate = args.events / 8.1 / (24 * 60 * 0.45)
        simulate_to_dir(SimConfig(seed=42, peak_rate_per_min=rate), work)
    parse_runs: dict[str, list[float]] = {"orjson": [], "msgspec": []}
    replay_runs: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(3):
        for library, runs in parse_runs.items():
            n_lines, seconds = parse_only(logs, library)
            runs.append(seconds)
        for processes, runs in replay_runs.items():
            runs.append(backtest(logs, processes)[1])
    # The baseline is the faster library: the parser uses both (msgspec for the common line, orjson otherwise).
    library = min(parse_runs, key=lambda lib: min(parse_runs[lib]))
    parse_rate = n_lines / min(parse_runs[library])
    replay_rate = {processes: n_lines / min(runs) for processes, runs in replay_runs.items()}
    rss = {processes: peak_rss_mb(logs, processes) for processes in (1, 2)}
    per_trace = bytes_per_open_trace()
    figures = {
        "lines": n_lines,
        "parse_only_library": library,
        "parse_only_lines_per_s": round(parse_rate),
        "parse_only_lines_per_s_by_library": {lib: round(n_lines / min(r)) for lib, r in parse_runs.items()},
        "backtest_lines_per_s": round(replay_rate[2]),
        "ratio": round(replay_rate[2] / parse_rate, 3),
        "backtest_one_process_lines_per_s": round(replay_rate[1]),
        "ratio_one_process": round(replay_rate[1] / parse_rate, 3),
        "peak_rss_mb": round(rss[2], 1),
        "peak_rss_mb_one_process": round(rss[1], 1),
        "bytes_per_open_trace": round(per_trace),
    }
    print(f"lines                         {n_lines:,}")
    for lib, runs in parse_runs.items():
        print(f"parse only ({lib:7}) lines/s  {n_lines / min(runs):,.0f}")
    for processes, rate in replay_rate.items():
        print(f"backtest, {processes} process{'es' if processes > 1 else ''}  lines/s  {rate:,.0f}   "
              f"/ parse-only {rate / parse_rate:.3f}  (against {library}; target >= 0.25)")
    print(f"peak RSS, 1 process          {rss[1]:,.1f} MB  (target <= 300 MB)")
    print(f"peak RSS, 2 processes        {rss[2]:,.1f} MB  (both together; target <= 300 MB)")
    print(f"memory per open trace         {per_trace:,.0f} bytes")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
