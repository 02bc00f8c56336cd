"""``stagewatch evaluate``: detection measured against labels -- a simulated run's (``labels``), DeLag's
per-request labels (``delag``), NAB's anomaly windows (``nab``)."""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path
from typing import Any

import orjson

from stagewatch.core.lines import DEFAULT_LINE, LINE_RULES

__all__ = ["add"]


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score anomalies against labels, or measure detection on public labelled data",
        description="stagewatch evaluate labels LABELS ANOMALIES: trace-level precision / recall / F1 per kind. "
        "stagewatch evaluate delag CSV...: per-request scores on DeLag files, beside static p99 and Beam's "
        "RobustZScore and ZScore. stagewatch evaluate nab [NAB_DIR]: NAB's standard-profile score.",
    )
    modes = p.add_subparsers(dest="mode", required=True, metavar="{labels,delag,nab}")
    labels = modes.add_parser("labels", help="score anomalies against the labels of stagewatch simulate",
                              description="Trace-level precision, recall and F1 per anomaly kind, and the stall "
                              "detection delay.")
    labels.add_argument("labels", metavar="LABELS", help="labels.jsonl of stagewatch simulate")
    labels.add_argument("anomalies", metavar="ANOMALIES",
                        help="anomalies as JSON lines, or the --output_dir of stagewatch run")
    labels.add_argument("--json", action="store_true", help="print the scores as JSON")
    labels.set_defaults(func=_labels)

    delag = modes.add_parser("delag", help="per-request scores on DeLag files beside Beam's detectors",
                             description="Per-request precision / recall / F1 on DeLag files, beside a static p99 "
                             "alert and Beam's RobustZScore and ZScore (run through a real Beam pipeline).")
    delag.add_argument("csv", nargs="+", metavar="CSV",
                       help="DeLag files, e.g. ../shared/data/delag/trainticket/0*.csv")
    delag.add_argument("--no-beam", action="store_true", help="skip the Beam detectors (they take minutes)")
    delag.add_argument("--every", type=_spacing, action="append", default=[], metavar="SECONDS",
                       help="score stagewatch again with the requests SECONDS apart (repeatable), e.g. --every 0.25: "
                       "how soon verdicts start when files come in a burst")
    delag.add_argument("--markdown", metavar="FILE", help="write the tables here (markdown)")
    delag.add_argument("--beam-cache", metavar="DIR",
                       help="keep the Beam detectors' verdicts here and reuse them (they take minutes)")
    delag.set_defaults(func=_delag)

    nab = modes.add_parser("nab", help="NAB's standard-profile score beside the published detectors'",
                           description="NAB's standard-profile score on the AWS CloudWatch series and the EC2 "
                           "request-latency series, beside the published detectors' scores on the same series.")
    nab.add_argument("nab_dir", nargs="?", default="../shared/data/nab", metavar="NAB_DIR",
                     help="the NAB data folder (default ../shared/data/nab)")
    nab.add_argument("--line", choices=LINE_RULES, default=DEFAULT_LINE,
                     help=f"the alert line rule (default {DEFAULT_LINE}; docs/detection.md)")
    nab.add_argument("--markdown", metavar="FILE", help="write the tables here (markdown)")
    nab.set_defaults(func=_nab)


def _labels(args: argparse.Namespace) -> int:
    from stagewatch.cli.common import for_terminal, read_anomalies, read_jsonl
    from stagewatch.evaluation.scoring import score_kinds

    labels = read_jsonl(args.labels) if _looks_like_labels(args.labels) else None
    if labels is None:
        raise ValueError(f"{args.labels} holds no labels (rows with uid and kind, as simulate's labels.jsonl): give "
                         "LABELS first, then ANOMALIES (a JSONL file or a run's --output_dir)")
    anomalies = read_anomalies(args.anomalies)
    scores, delay = score_kinds(labels, anomalies)
    if args.json:
        print(orjson.dumps({"kinds": [s.to_dict() for s in scores], "stall_delay": delay}).decode())
        return 0
    found, labelled = sum(s.tp for s in scores), sum(s.tp + s.fn for s in scores)
    flagged = sum(s.tp + s.fp for s in scores)
    print(f"Found {found:,} of the {labelled:,} anomalies the labels expect; {flagged - found:,} of the {flagged:,} "
          "flagged were not expected. Per kind -- tp: expected and found, fp: found, not expected, fn: expected, "
          "missed:")
    print(f"{'kind':<12} {'tp':>6} {'fp':>6} {'fn':>6} {'precision':>10} {'recall':>8} {'f1':>6}")
    for s in scores:
        print(for_terminal(f"{s.kind:<12} {s.tp:>6} {s.fp:>6} {s.fn:>6} {s.precision:>10.3f} {s.recall:>8.3f} "
                           f"{s.f1:>6.3f}"))
    if delay["n"]:
        print(f"stall detection delay after the file's last event: median {delay['median_s']} s, "
              f"p95 {delay['p95_s']} s, max {delay['max_s']} s (n={delay['n']})")
    print(for_terminal(_by_fault(labels, anomalies, args.anomalies)))
    return 0


def _by_fault(labels: list[dict[str, Any]], anomalies: list[dict[str, Any]], where: str) -> str:
    """In words, per injected fault: how many of its files were flagged; and the incidents of a run's folder."""
    flagged = {a.get("uid") for a in anomalies}
    files: dict[str, set[str]] = {}
    for row in labels:
        files.setdefault(str(row.get("fault") or "unnamed"), set()).add(row["uid"])
    parts = [f"{name}: {len(uids & flagged)} of {len(uids)} files flagged" for name, uids in files.items()]
    text = "Faults -- " + "; ".join(parts) + "." if parts else "No fault in the labels."
    incidents = sorted(glob.glob(os.path.join(glob.escape(where), "incidents*.jsonl"))) if os.path.isdir(where) else []
    if incidents:
        from stagewatch.cli.common import read_jsonl

        opened = [e for f in incidents for e in read_jsonl(f) if e.get("event") == "opened"]
        text += f" {len(opened)} incident{'s' if len(opened) != 1 else ''} opened (stagewatch report {where} -o " \
                "report.html shows them)."
    return text


def _looks_like_labels(path: str) -> bool:
    """Its first row has a uid and a kind (a log line has neither at its top): the arguments were not swapped."""
    from stagewatch.cli.common import read_jsonl

    if not os.path.isfile(path):
        read_jsonl(path)  # says what is wrong with the path
    with open(path, "rb") as f:
        first = next((line for line in f if line.strip()), b"")
    try:
        row = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    return isinstance(row, dict) and "uid" in row and "kind" in row


def _spacing(text: str) -> float:
    """``--every``: seconds between requests, a number above 0 (a day at most)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, e.g. 0.25, not {text!r}") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 86400 seconds, not {text}")
    return value


def _delag(args: argparse.Namespace) -> int:
    from stagewatch.evaluation.delag_eval import evaluate_delag, markdown

    paths = args.csv
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"{path} does not exist")
    res = evaluate_delag(paths, beam=not args.no_beam, cache=args.beam_cache, spacings=tuple(args.every))
    # The command as a person types it: one glob per folder rather than forty file names.
    folders = sorted({str(Path(p).parent) for p in paths})
    shown = " ".join(f"{f}/*.csv" for f in folders) if len(paths) > 2 * len(folders) else " ".join(paths)
    command = "stagewatch evaluate delag " + shown + "".join(f" --every {e:g}" for e in args.every) + (
        " --no-beam" if args.no_beam else "")
    text = markdown(res, command)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(text)
    return 0


def _nab(args: argparse.Namespace) -> int:
    from stagewatch.evaluation.nab import evaluate_nab, markdown

    root = args.nab_dir
    if not (Path(root) / "labels" / "combined_windows.json").is_file():
        raise ValueError(f"{root} is not a NAB data folder (labels/combined_windows.json missing)")
    res = evaluate_nab(root, args.line)
    chosen = "" if args.line == DEFAULT_LINE else f" --line {args.line}"
    text = markdown(res, f"stagewatch evaluate nab {root}{chosen}")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    print(text)
    return 0
