"""``stagewatch simulate``: a simulated day of the eight-stage pipeline, with injected faults and their labels."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add"]


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="write a realistic simulated log stream with injected faults and labels",
        description="Write OUTDIR/logs.jsonl (LogEntry lines in delivery order), OUTDIR/labels.jsonl (the "
        "injected faults' expected anomalies) and OUTDIR/manifest.json. Seeded: same seed, same output.",
        epilog="example: stagewatch simulate sim --short --rate 6",
    )
    p.add_argument("outdir")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hours", type=float, help="simulated span (default 24; 3 with --short)")
    p.add_argument("--rate", type=float, default=30.0, help="files per minute at the daily peak (default 30)")
    p.add_argument("--start", help="RFC 3339 start of the simulated span (default 2026-06-06T00:00:00Z; "
                   "midday with --short)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-faults", action="store_true", help="normal behaviour only")
    g.add_argument("--short", action="store_true",
                   help="three hours from midday with the five standard faults packed into them (a quick demo)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from stagewatch.core.timeutil import parse_rfc3339_us
    from stagewatch.evaluation.simulate import (
        SHORT_FAULTS,
        SHORT_HOURS,
        SHORT_START,
        STANDARD_FAULTS,
        SimConfig,
        simulate_to_dir,
    )

    out = Path(args.outdir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{args.outdir} is a file: simulate writes a folder (logs.jsonl, labels.jsonl, "
                         "manifest.json); give a folder name, e.g. sim")
    start = args.start or (SHORT_START if args.short else "2026-06-06T00:00:00Z")
    hours = args.hours or (SHORT_HOURS if args.short else 24.0)
    parse_rfc3339_us(start)
    faults = () if args.no_faults else SHORT_FAULTS if args.short else STANDARD_FAULTS
    cfg = SimConfig(seed=args.seed, start=start, hours=hours, peak_rate_per_min=args.rate, faults=faults)
    manifest = simulate_to_dir(cfg, out)
    print(
        f"stagewatch simulate: {manifest['files']:,} files, {manifest['lines']:,} lines, "
        f"{manifest['labels']:,} labels, {len(manifest['faults'])} faults -> {args.outdir}/logs.jsonl",
        file=sys.stderr,
    )
    return 0
