"""A soak of the streaming job: simulated logs published to the Pub/Sub emulator at a steady rate into
``stagewatch run --input_subscription`` on the local runner, every published line accounted for.

    python benchmarks/soak.py [--rate 200] [--minutes 10] [--seed 7] [--workdir DIR] [--json F] [--markdown F]

A benchmark, not a test: it measures and reports; it exits non-zero only when it could not run.

What it does, in order:

1. Starts its own Pub/Sub emulator on a free port (``tests.emulators.start_pubsub``; stopped by PID at the end,
   whatever happens), and creates the input topic and subscription, the output topic and a subscription on it.
2. Simulates ``--minutes`` of the eight-stage pipeline (``stagewatch.evaluation.simulate``, the generator behind
   ``stagewatch simulate``: duplicates, out-of-order delivery up to 45 s, skewed customer clocks, junk lines)
   at a files-per-minute rate that gives ``--rate`` lines/s at the daily peak (14:00, where the diurnal load is
   1), with the five standard faults moved into the second half of the soak (the first half is for the
   baselines to learn): 30 % of queue messages lost (``stalled`` download), half the lot checks never logged
   (``stalled`` lot_check), 40 % of analyses failing (``failed``), ``analyse`` 8x slower (``slow_stage``), one
   tenant's uploads 30x slower. Whole files are simulated: the lines of files still in flight when the span ends
   are published after it, at a falling rate (the tail).
3. Launches the job as a child process: ``stagewatch run --input_subscription ... --output_topic ...
   --publish_anomalies true --stages <the simulated order> --runner StagewatchLocalRunner --output_dir DIR
   --session_gap_s <--session-gap>`` with ``PUBSUB_EMULATOR_HOST`` set. It is the ``stagewatch`` command's own
   ``main``, run through this script (``soak.py _job``) so that one hook can be installed first: it wraps
   google-cloud-pubsub's ``SubscriberClient.pull``, which Beam's in-process Pub/Sub reader calls (10 messages a
   pull, acknowledged at once), and appends the receive time and message id of every message the job pulled
   to a file. The emulator has no metrics API; this is how the backlog is measured: messages published minus
   distinct messages the job has pulled. Nothing else in the job is changed.
4. Waits for the job's first pull, then publishes every simulated line at its simulated delivery time (offset so
   that the span starts now), with its event times (``timestamp``, ``receiveTimestamp`` and the
   ``logging.googleapis.com/timestamp`` attribute the job reads its event time from, as a Cloud Logging sink
   sets it) shifted by the same offset: event time is wall-clock time, as in production. The publish time of
   every line is recorded (``time.time()`` at the publish call).
5. A streaming-pull subscriber on the output topic records the receive time of every anomaly and incident
   message. Every ``--sample-seconds`` the job's RSS (``/proc/PID/status`` VmRSS of it and its descendants),
   the backlog, the read rate and what the job has written are sampled.
6. When everything is published: drains (at least ``--drain-min`` seconds — by default one baseline interval
   plus its fold's grace, so slow-stage verdicts held for the end of their interval can come — then until every
   line is accounted for or nothing new was written for ``--quiet`` seconds, at most ``--drain-max``), stops the
   job (SIGINT, then SIGTERM, then SIGKILL of its process group), and accounts for every published line from the
   job's ``traces*.jsonl`` and ``dead_letters*.jsonl``.

Accounting, per published message: a line with a uid and a stage is accounted when its (uid, stage) is in one of
its file's trace summaries (``stages``), or when a dead letter carries its ``insertId``; a second copy of a line
(the simulator's at-least-once duplicates: the same ``insertId``) is accounted as dropped by ``Dedup`` when its
first copy is accounted (``Dedup`` counts duplicates, it writes no record of them); any other line is accounted
by a dead letter whose ``line`` starts as it does (compared on the first 200 characters). What is left is
reported, with the state of its file.

Detection latency: receive time on the output topic minus the moment the verdict became possible:

* ``failed``, ``slow_stage`` judged on a stage's line (``measure`` ``wait`` or ``latency``): the publish time of
  that line (uid, stage);
* ``slow_trace``: the publish time of the line that ended the trace (uid, ``last_stage``);
* ``stalled`` and ``slow_stage`` with ``measure`` ``in_progress``: the verdict is a deadline passing, not a line;
  from the deadline (``event_time``, which is wall-clock time here since event times were shifted to now);
* incident ``opened``: from ``started_at``, the first anomaly's event time.

Also reported: the share of it spent before the job pulled the line (the queue) for line-triggered kinds.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.emulators: the emulator helpers the tests use

TIMESTAMP_ATTRIBUTE = "logging.googleapis.com/timestamp"
SIM_START = "2026-06-06T14:00:00Z"  # the diurnal peak: load 1.0, so the rate is the rate asked for
LINES_PER_FILE = 8 * 1.01  # eight stages, 1 % duplicated (the simulator's default)
INTERVAL_S = 300  # BaselineConfig.interval_s: a slow-stage verdict waits for its interval's end + half of one
# A rejected line carries its insertId as written; an event set aside after parsing (late, after_close) is the
# event as JSON, with "insert_id":"..." (before 2026-12-05 the StageEvent's repr, with insert_id='...').
_INSERT_ID = re.compile(r'"insertId":"([^"]+)"|"insert_id":"([^"]+)"|insert_id=\'([^\']+)\'')
_MATCH_CHARS = 200


# --- the job's child process: one hook, then ``stagewatch run`` ---------------------------------------------------


def _job_child(reads_path: str, argv: list[str]) -> int:
    """``stagewatch run`` with a record of every message it pulls (time, message id), for the backlog."""
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    original = pubsub_v1.SubscriberClient.pull
    lock = threading.Lock()
    out = open(reads_path, "a", encoding="ascii")  # noqa: SIM115 -- open for the life of the process

    def pull(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = original(self, *args, **kwargs)
        now = time.time()
        ids = [rm.message.message_id for rm in response.received_messages]
        with lock:
            out.write("".join(f"{now:.4f} {mid}\n" for mid in ids) if ids else f"{now:.4f} -\n")
            out.flush()
        return response

    pubsub_v1.SubscriberClient.pull = pull
    from stagewatch.cli import main

    return main(argv)


# --- small helpers ------------------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _rfc3339_s(text: str) -> float:
    from stagewatch.core.timeutil import US_PER_S, parse_rfc3339_us

    return parse_rfc3339_us(text) / US_PER_S


def _proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[ppid].append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, []))
    return tree


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` and its descendants, MB: now and the kernel's own peak per process."""
    tree = _proc_tree(pid)
    return (sum(_status_kb(p, "VmRSS") for p in tree) / 1024, sum(_status_kb(p, "VmHWM") for p in tree) / 1024)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far."""
    total = 0
    for p in _proc_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


class _JsonlTail:
    """New complete lines of ``<dir>/<table>*.jsonl`` since the last call (the job appends to them)."""

    def __init__(self, folder: Path, table: str) -> None:
        self._folder, self._table = folder, table
        self._offsets: dict[Path, int] = {}

    def new(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for path in sorted(self._folder.glob(f"{self._table}*.jsonl")):
            start = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(start)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._offsets[path] = start + end
            rows.extend(orjson.loads(line) for line in chunk[:end].splitlines() if line.strip())
        return rows


# --- the published lines --------------------------------------------------------------------------------------------


@dataclass
class Line:
    due_s: float  # when it is published, seconds after the start
    data: bytes
    attrs: dict[str, str]
    uid: str | None
    stage: str | None
    insert_id: str | None
    text: str  # the first _MATCH_CHARS characters, decoded as a dead letter's line would be


def _fault_plan(minutes: float) -> tuple[Any, ...]:
    """The simulator's five standard faults, in the second half of the soak (fractions of the span)."""
    from stagewatch.core.kinds import FAILED, SLOW_STAGE, STALLED
    from stagewatch.evaluation.simulate import Fault

    m = minutes

    def at(start: float, end: float) -> tuple[float, float]:
        return start * m / 60, (end - start) * m

    plan = (
        ("lost_messages", 0.50, 0.58, STALLED, "download"),
        ("missing_completion", 0.58, 0.66, STALLED, "lot_check"),
        ("failure_burst", 0.66, 0.74, FAILED, "analyse"),
        ("stage_slowdown", 0.74, 0.84, SLOW_STAGE, "analyse"),
        ("tenant_slow_upload", 0.50, 0.90, SLOW_STAGE, "upload"),
    )
    return tuple(Fault(name, *at(a, b), kind, stage) for name, a, b, kind, stage in plan)


def _shift_ts(ts: str, offset_us: int) -> str | None:
    """``ts`` moved by ``offset_us``, keeping digits below the microsecond; None when it is no timestamp."""
    from stagewatch.core.timeutil import format_rfc3339, parse_rfc3339_us

    try:
        us = parse_rfc3339_us(ts)
    except (ValueError, TypeError):
        return None
    out = format_rfc3339(us + offset_us)
    extra = re.search(r"\.\d{6}(\d+)Z$", ts)
    if extra and re.search(r"\.\d{6}Z$", out):
        out = out[:-1] + extra.group(1) + "Z"
    return out


def _simulate(cfg: Any) -> tuple[list[tuple[float, bytes]], dict[str, Any]]:
    """(delivery time in seconds since the start, line) in delivery order, and what was simulated.

    What ``Simulation.lines()`` (and so ``stagewatch simulate``) does, keeping the delivery times it sorts by."""
    from stagewatch.evaluation.simulate import Simulation

    sim = Simulation(cfg)
    delivered: list[tuple[float, int, bytes]] = []
    seq = 0
    for delivery, entry in sim.events():
        seq += 1
        delivered.append((delivery, seq, orjson.dumps(entry)))
        if sim.rng.random() < cfg.junk_rate:
            seq += 1
            delivered.append((delivery, seq, sim.junk(delivery)))
    seq += 1  # the simulator's one oversized line: a stack trace dumped whole
    big = orjson.dumps({"timestamp": cfg.start, "jsonPayload": {"message": "x" * 300_000}})
    delivered.append((cfg.hours * 1800, seq, big))
    delivered.sort()
    info = {"files": sim.n_files, "lines": len(delivered), "labels": len(sim.labels),
            "labels_by_kind": dict(Counter(lab["kind"] for lab in sim.labels)),
            "label_keys": sorted({(lab["kind"], lab["uid"], lab["stage"]) for lab in sim.labels}),
            "faults": [{"name": f.name, "kind": f.kind, "stage": f.stage, "start_s": round(f.start_h * 3600, 1),
                        "end_s": round(f.start_h * 3600 + f.minutes * 60, 1)} for f in cfg.faults]}
    return [(d, line) for d, _, line in delivered], info


def _prepare(delivered: list[tuple[float, bytes]], offset_us: int) -> list[Line]:
    """The lines to publish: due at their delivery time, event times shifted by ``offset_us``."""
    lines: list[Line] = []
    for due_s, raw in delivered:
        data, attrs = raw, {}
        uid = stage = insert_id = None
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            entry = None
        if isinstance(entry, dict):
            ts = entry.get("timestamp")
            shifted = _shift_ts(ts, offset_us) if isinstance(ts, str) else None
            if shifted is not None:
                entry["timestamp"] = shifted
                attrs[TIMESTAMP_ATTRIBUTE] = shifted  # what a Cloud Logging sink sets: the entry's time
                rts = entry.get("receiveTimestamp")
                if isinstance(rts, str):
                    entry["receiveTimestamp"] = _shift_ts(rts, offset_us) or rts
            payload = entry.get("jsonPayload")
            if isinstance(payload, dict) and shifted is not None:
                u, s = payload.get("uid"), payload.get("stage")
                if isinstance(u, str) and isinstance(s, str):
                    uid, stage = u, s
            iid = entry.get("insertId")
            insert_id = iid if isinstance(iid, str) else None
            data = orjson.dumps(entry)
        lines.append(Line(due_s, data, attrs, uid, stage, insert_id, data.decode("utf-8", "replace")[:_MATCH_CHARS]))
    return lines


# --- the run --------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    out_dir: Path
    reads_path: Path
    lines: list[Line] = field(default_factory=list)
    publish_t: list[float] = field(default_factory=list)
    message_ids: list[str | None] = field(default_factory=list)
    publish_errors: list[str] = field(default_factory=list)
    received: list[tuple[float, bytes, dict[str, str]]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    start_wall: float = 0.0
    published_until: float = 0.0
    job_rc: int | None = None
    job_stop: str = ""
    stopped_at: float = 0.0
    rss_hwm_mb: float = 0.0


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(f"signal {signum}")


def _reads(path: Path) -> list[tuple[float, str]]:
    """(time, message id) of every message the job pulled, in order; '-' marks an empty pull."""
    out = []
    with contextlib.suppress(FileNotFoundError), path.open("r", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                out.append((float(parts[0]), parts[1]))
    return out


def _publish(run: Run, topic: str, stop: threading.Event) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.01))
    lock = threading.Lock()
    pending: list[Any] = []

    def done(i: int) -> Any:
        def callback(fut: Any) -> None:
            try:
                run.message_ids[i] = fut.result()
            except Exception as exc:  # a failed publish is a finding, reported; the soak goes on
                with lock:
                    run.publish_errors.append(f"line {i}: {exc!r}")
        return callback

    try:
        for i, line in enumerate(run.lines):
            wait = run.start_wall + line.due_s - time.time()
            if wait > 0 and stop.wait(wait):
                return
            if stop.is_set():
                return
            run.publish_t[i] = time.time()
            fut = publisher.publish(topic, line.data, **line.attrs)
            fut.add_done_callback(done(i))
            pending.append(fut)
            if len(pending) > 5000:
                pending = [f for f in pending if not f.done()]
        for fut in pending:
            with contextlib.suppress(Exception):
                fut.result(timeout=60)
    finally:
        run.published_until = time.time()
        publisher.stop()


def _stop_job(job: subprocess.Popen[bytes]) -> str:
    """SIGINT (the job's own way out), then SIGTERM, then SIGKILL of its process group (its own session)."""
    if job.poll() is not None:
        return f"had exited by itself with code {job.returncode}"
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if sig == signal.SIGINT:
                job.send_signal(sig)
            else:
                os.killpg(job.pid, sig)
        try:
            job.wait(timeout=wait)
            return f"{sig.name}: exited with code {job.returncode}"
        except subprocess.TimeoutExpired:
            continue
    return "did not exit after SIGKILL"


class _ReadsTail:
    """New (time, message id) lines of the job's record of its pulls since the last call."""

    def __init__(self, path: Path) -> None:
        self._path, self._offset = path, 0

    def new(self) -> list[tuple[float, str]]:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        out = []
        for line in chunk[:end].decode("ascii").splitlines():
            parts = line.split()
            if len(parts) == 2:
                out.append((float(parts[0]), parts[1]))
        return out


def _sample(run: Run, job: subprocess.Popen[bytes], tails: dict[str, _JsonlTail],
            written: dict[str, list[dict[str, Any]]], read_ids: set[str], reads: _ReadsTail) -> dict[str, Any]:
    now = time.time()
    for table, tail in tails.items():
        written[table].extend(tail.new())
    pulled = 0
    for _, mid in reads.new():
        if mid != "-":
            read_ids.add(mid)
            pulled += 1
    published = sum(1 for t in run.publish_t if t > 0)
    rss, hwm = _rss_mb(job.pid)
    run.rss_hwm_mb = max(run.rss_hwm_mb, hwm)
    sample = {
        "t_s": round(now - run.start_wall, 1),
        "published": published,
        "read": len(read_ids),
        "pulled_messages": pulled,  # in this sample's span (redeliveries included)
        "backlog": published - len(read_ids),
        "rss_mb": round(rss, 1),
        "cpu_s": round(_cpu_s(job.pid), 1),
        "traces": len(written["traces"]),
        "dead_letters": len(written["dead_letters"]),
        "anomalies_written": len(written["anomalies"]),
        "received_on_topic": len(run.received),
    }
    run.samples.append(sample)
    return sample


def soak(args: argparse.Namespace) -> dict[str, Any]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]
    from tests import emulators

    from stagewatch.evaluation.simulate import STAGES, SimConfig
    from stagewatch.stream.local import NAME as LOCAL_RUNNER

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stagewatch-soak-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(args, workdir, workdir / "out", workdir / "job_reads.txt")
    with contextlib.suppress(FileNotFoundError):
        run.reads_path.unlink()
    _say(f"workdir {workdir}")

    files_per_min = args.rate * 60 / LINES_PER_FILE
    cfg = SimConfig(seed=args.seed, start=SIM_START, hours=args.minutes / 60, peak_rate_per_min=files_per_min,
                    faults=() if args.no_faults else _fault_plan(args.minutes))
    delivered, manifest = _simulate(cfg)
    _say(f"simulated {manifest['files']:,} files, {manifest['lines']:,} lines ({files_per_min:,.0f} files/min)")

    emu = job = None
    job_log = None
    subscriber = publisher_admin = None
    streaming = None
    stop_publishing = threading.Event()
    publisher_thread = None
    old_term = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        emu = emulators.start_pubsub(emulators.free_port(), workdir)
        os.environ[emulators.PUBSUB_ENV] = emu.env_value
        _say(f"Pub/Sub emulator at {emu.env_value} (pid {emu.popen.pid})")
        project = emulators.PROJECT
        publisher_admin, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        logs_topic = publisher_admin.topic_path(project, "soak-logs")
        logs_sub = subscriber.subscription_path(project, "soak-logs")
        out_topic = publisher_admin.topic_path(project, "soak-anomalies")
        out_sub = subscriber.subscription_path(project, "soak-anomalies")
        for topic, sub in ((logs_topic, logs_sub), (out_topic, out_sub)):
            publisher_admin.create_topic(name=topic)
            subscriber.create_subscription(name=sub, topic=topic, ack_deadline_seconds=60)

        lock = threading.Lock()

        def on_message(message: Any) -> None:
            now = time.time()
            with lock:
                run.received.append((now, bytes(message.data), dict(message.attributes)))
            message.ack()

        streaming = subscriber.subscribe(out_sub, callback=on_message)

        run_args = [
            "run", "--input_subscription", logs_sub, "--output_topic", out_topic, "--publish_anomalies", "true",
            "--stages", ",".join(STAGES), "--runner", LOCAL_RUNNER, "--output_dir", str(run.out_dir),
            "--session_gap_s", str(args.session_gap),
        ]
        run.out_dir.mkdir(exist_ok=True)
        job_log = (workdir / "job.log").open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cmd = [sys.executable, str(Path(__file__).resolve()), "_job", str(run.reads_path), "--", *run_args]
        job = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=job_log, stderr=subprocess.STDOUT, env=env,
                               cwd=str(REPO), start_new_session=True)
        _say(f"job started (pid {job.pid}): stagewatch {' '.join(run_args)}")
        deadline = time.time() + 180
        while not _reads(run.reads_path):
            if job.poll() is not None:
                raise RuntimeError(f"the job exited with code {job.returncode} before its first pull; "
                                   f"its log ({workdir / 'job.log'}):\n{_tail(workdir / 'job.log')}")
            if time.time() > deadline:
                raise RuntimeError(f"the job did not pull from its subscription within 180 s; its log:\n"
                                   f"{_tail(workdir / 'job.log')}")
            time.sleep(0.5)
        rss0, _ = _rss_mb(job.pid)
        _say(f"job pulling; RSS {rss0:.0f} MB")

        from stagewatch.core.timeutil import US_PER_S, parse_rfc3339_us

        start = time.time() + 3.0
        run.lines = _prepare(delivered, int(start * US_PER_S) - parse_rfc3339_us(SIM_START))
        run.publish_t = [0.0] * len(run.lines)
        run.message_ids = [None] * len(run.lines)
        run.start_wall = start
        at = time.strftime("%H:%M:%S", time.localtime(start))
        _say(f"publishing {len(run.lines):,} lines over {run.lines[-1].due_s:.0f} s from {at}")
        publisher_thread = threading.Thread(target=_publish, args=(run, logs_topic, stop_publishing), daemon=True)
        publisher_thread.start()

        tails = {t: _JsonlTail(run.out_dir, t) for t in ("traces", "dead_letters", "anomalies", "incidents")}
        written: dict[str, list[dict[str, Any]]] = {t: [] for t in tails}
        read_ids: set[str] = set()
        reads = _ReadsTail(run.reads_path)
        sample = _sample(run, job, tails, written, read_ids, reads)
        sample.update(rss_mb=round(rss0, 1))
        drain_started: float | None = None
        last_change, last_written = time.time(), -1
        while True:
            time.sleep(max(0.0, args.sample_seconds - (time.time() - run.start_wall) % args.sample_seconds))
            if job.poll() is not None:
                raise RuntimeError(f"the job exited with code {job.returncode} during the soak; its log:\n"
                                   f"{_tail(workdir / 'job.log')}")
            s = _sample(run, job, tails, written, read_ids, reads)
            total_written = s["traces"] + s["dead_letters"] + s["anomalies_written"] + s["received_on_topic"]
            if total_written != last_written:
                last_change, last_written = time.time(), total_written
            phase = "publishing" if publisher_thread.is_alive() else "draining"
            _say(f"t={s['t_s']:>6.0f}s {phase}: published {s['published']:,} read {s['read']:,} backlog "
                 f"{s['backlog']:,} RSS {s['rss_mb']:.0f} MB CPU {s['cpu_s']:.0f}s traces {s['traces']:,} "
                 f"dead {s['dead_letters']:,} anomalies {s['anomalies_written']:,} topic {s['received_on_topic']:,}")
            if publisher_thread.is_alive():
                continue
            if drain_started is None:
                drain_started = run.published_until
                _say(f"all published ({sum(1 for t in run.publish_t if t > 0):,}); draining")
            drained = time.time() - drain_started
            if drained >= args.drain_max:
                _say(f"drain: stopping at --drain-max {args.drain_max:.0f} s")
                break
            if drained < args.drain_min or s["backlog"] > 0:
                continue
            left = len(_account(run, written["traces"], written["dead_letters"], read_ids)["unaccounted_lines"])
            if left == 0 and time.time() - last_change >= min(args.quiet, 30):
                _say("drain: every line accounted for")
                break
            if time.time() - last_change >= args.quiet:
                _say(f"drain: nothing new for {args.quiet:.0f} s ({left:,} lines not accounted for yet)")
                break
        run.rss_hwm_mb = max(run.rss_hwm_mb, _rss_mb(job.pid)[1])
        end_rss = run.samples[-1]["rss_mb"]
        run.stopped_at = time.time()
        run.job_stop = _stop_job(job)
        run.job_rc = job.returncode
        _say(f"job stopped: {run.job_stop}")
        time.sleep(2)  # the subscriber's last messages
        for table, tail in tails.items():
            written[table].extend(tail.new())
        return _results(run, manifest, cfg, written, read_ids, rss0, end_rss)
    finally:
        stop_publishing.set()
        if job is not None and job.poll() is None:
            _say(f"stopping the job: {_stop_job(job)}")
        if streaming is not None:
            streaming.cancel()
            with contextlib.suppress(Exception):
                streaming.result(timeout=10)
        for client in (subscriber, publisher_admin):
            if client is not None and hasattr(client, "close"):
                with contextlib.suppress(Exception):
                    client.close()
        if publisher_thread is not None:
            publisher_thread.join(timeout=30)
        if emu is not None:
            emulators.stop(emu)
            _say("Pub/Sub emulator stopped")
        if job_log is not None:
            job_log.close()
        signal.signal(signal.SIGTERM, old_term)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"(no log: {exc})"


# --- accounting and figures ---------------------------------------------------------------------------------------


def _account(run: Run, traces: list[dict[str, Any]], dead: list[dict[str, Any]], pulled: set[str]) -> dict[str, Any]:
    """Every published line: in a trace, a dead letter, dropped as a duplicate, or not accounted for (and then:
    was it pulled by the job, and how many trace summaries did its file come out as)."""
    in_trace: set[tuple[str, str]] = set()
    summaries: Counter[str] = Counter()
    for t in traces:
        summaries[t.get("uid", "")] += 1
        for st in t.get("stages") or []:
            in_trace.add((t.get("uid", ""), st.get("stage", "")))
    by_insert: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_text: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in dead:
        text = d.get("line") or ""
        m = _INSERT_ID.search(text)
        if m:
            by_insert[next(g for g in m.groups() if g)].append(d)
        else:
            by_text[text[:_MATCH_CHARS]].append(d)
    verdict: list[str] = [""] * len(run.lines)
    accounted_ids: set[str] = set()
    # First copies first: a duplicate is accounted through its first copy.
    seen_ids: set[str] = set()
    for i, line in enumerate(run.lines):
        if run.publish_t and run.publish_t[i] == 0:
            verdict[i] = "not published"
            continue
        iid = line.insert_id
        first = iid is None or iid not in seen_ids
        if iid is not None:
            seen_ids.add(iid)
        if line.uid is not None and line.stage is not None and first and (line.uid, line.stage) in in_trace:
            verdict[i] = "trace"
        elif iid is not None and by_insert.get(iid):
            verdict[i] = "dead letter: " + str(by_insert[iid].pop().get("reason"))
        elif iid is not None and not first and iid in accounted_ids:
            verdict[i] = "duplicate (dropped by Dedup)"
        elif by_text.get(line.text):
            verdict[i] = "dead letter: " + str(by_text[line.text].pop().get("reason"))
        elif run.message_ids[i] not in pulled:
            verdict[i] = "unaccounted: not pulled by the job before it was stopped (backlog)"
        elif line.uid is None:
            verdict[i] = "unaccounted: pulled; a junk line without a dead letter"
        elif summaries[line.uid] == 0:
            verdict[i] = "unaccounted: pulled; its file has no trace summary (open when the job was stopped)"
        elif summaries[line.uid] == 1:
            verdict[i] = "unaccounted: pulled; its file's one trace summary lacks this line"
        else:
            verdict[i] = "unaccounted: pulled; its file came out as several trace summaries, none with this line"
        if iid is not None and not verdict[i].startswith("unaccounted"):
            accounted_ids.add(iid)
    counts = Counter(verdict)
    unmatched_dead = sum(len(v) for v in by_insert.values()) + sum(len(v) for v in by_text.values())
    return {
        "by_verdict": dict(sorted(counts.items())),
        "unaccounted_lines": [i for i, v in enumerate(verdict) if v.startswith("unaccounted")],
        "dead_letters_not_matched": unmatched_dead,
        "verdicts": verdict,
    }


def _latencies(run: Run, read_time: dict[str, float]) -> dict[str, Any]:
    first_publish: dict[tuple[str, str], int] = {}
    for i, line in enumerate(run.lines):
        if line.uid is not None and line.stage is not None and run.publish_t[i] > 0:
            first_publish.setdefault((line.uid, line.stage), i)
    by_kind: dict[str, list[float]] = defaultdict(list)
    queue: dict[str, list[float]] = defaultdict(list)
    event_lag: dict[str, list[float]] = defaultdict(list)
    missing: Counter[str] = Counter()
    anomaly_ids: Counter[str] = Counter()
    incidents: Counter[str] = Counter()
    for recv, data, _attrs in run.received:
        body = orjson.loads(data)
        if "incident_id" in body:
            event = str(body.get("event"))
            incidents[event] += 1
            if event == "opened" and body.get("started_at"):
                by_kind["incident opened (from started_at)"].append(recv - _rfc3339_s(body["started_at"]))
            continue
        anomaly_ids[body.get("anomaly_id")] += 1
        kind, measure = str(body.get("kind")), body.get("measure")
        label = f"{kind} ({measure})" if kind == "slow_stage" else kind
        if body.get("event_time"):
            event_lag[label].append(recv - _rfc3339_s(body["event_time"]))
        if kind == "stalled" or measure == "in_progress":
            by_kind[label].append(recv - _rfc3339_s(body["event_time"]))
            continue
        stage = body.get("last_stage") if kind == "slow_trace" else body.get("stage")
        found = first_publish.get((str(body.get("uid")), str(stage)))
        if found is None:
            missing[label] += 1
            continue
        by_kind[label].append(recv - run.publish_t[found])
        mid = run.message_ids[found]
        if mid is not None and mid in read_time:
            queue[label].append(read_time[mid] - run.publish_t[found])

    def stats(values: list[float]) -> dict[str, Any]:
        return {"n": len(values), "p50_s": _r(_pct(values, 50)), "p90_s": _r(_pct(values, 90)),
                "p99_s": _r(_pct(values, 99)), "max_s": _r(max(values) if values else None)}

    every = [v for k, vs in by_kind.items() if not k.startswith("incident") for v in vs]
    return {
        "by_kind": {k: stats(v) for k, v in sorted(by_kind.items())},
        "all_anomalies": stats(every),
        "queue_before_read": {k: stats(v) for k, v in sorted(queue.items())},
        "receive_minus_event_time": {k: stats(v) for k, v in sorted(event_lag.items())},
        "trigger_line_not_found": dict(missing),
        "anomalies_received": sum(anomaly_ids.values()),
        "distinct_anomalies_received": len(anomaly_ids),
        "incident_events_received": dict(incidents),
    }


def _detection(anomalies: list[dict[str, Any]], labels: set[tuple[str, str, str]],
               late_uids: set[str] | None = None) -> dict[str, Any]:
    """Per kind: anomalies, how many match a simulated fault's label (kind, uid, stage), labels found; and how
    many were made on a file one of whose lines was dead-lettered ``late`` (its trace lacks that stage)."""
    keys = {(str(a.get("kind")), str(a.get("uid")), str(a.get("stage"))) for a in anomalies}
    out: dict[str, Any] = {}
    for kind in sorted({k for k, _, _ in keys} | {k for k, _, _ in labels}):
        mine = {k for k in keys if k[0] == kind}
        theirs = {k for k in labels if k[0] == kind}
        row = {"anomalies": len(mine), "labelled": len(mine & theirs), "labels": len(theirs),
               "labels_found": len(theirs & mine)}
        if late_uids is not None:
            row["on_files_with_a_late_line"] = sum(1 for k in mine if k[1] in late_uids)
        out[kind] = row
    return out


def _replay_reference(run: Run, stages: str) -> dict[str, Any]:
    """The same published lines, in publish order, through ``stagewatch replay`` (the backtest: event-time order,
    the watermark 60 s behind the newest event) with the job's session gap as its TTL: what the detection core
    makes of them with time to order them."""
    folder = run.workdir / "replay"
    folder.mkdir(exist_ok=True)
    config = folder / "config.toml"
    config.write_text(f"[detector]\nttl_s = {run.args.session_gap:g}\n")
    published = folder / "published.jsonl"
    with published.open("wb") as f:
        for i in sorted(range(len(run.lines)), key=lambda i: run.publish_t[i]):
            if run.publish_t[i] > 0:
                f.write(run.lines[i].data + b"\n")
    cmd = [sys.executable, "-c", "import sys; from stagewatch.cli import main; sys.exit(main())", "replay",
           str(published), "--stages", stages, "-o", str(folder / "anomalies.jsonl"), "--traces",
           str(folder / "traces.jsonl"), "--dead-letters", str(folder / "dead_letters.jsonl"), "--incidents",
           str(folder / "incidents.jsonl"), "--config", str(config), "--no-progress"]
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=str(REPO), timeout=1800)
    if done.returncode != 0:
        return {"error": f"replay exited {done.returncode}: {done.stderr[-2000:]}"}

    def rows(name: str) -> list[dict[str, Any]]:
        path = folder / f"{name}.jsonl"
        return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()] if path.exists() else []

    return {"seconds": round(time.time() - started, 1), "anomalies": rows("anomalies"),
            "traces": rows("traces"), "dead_letters": rows("dead_letters"), "incidents": rows("incidents")}


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def _results(run: Run, manifest: dict[str, Any], cfg: Any, written: dict[str, list[dict[str, Any]]],
             read_ids: set[str], rss0: float, end_rss: float) -> dict[str, Any]:
    reads = _reads(run.reads_path)
    read_time: dict[str, float] = {}
    redelivered = 0
    for t, mid in reads:
        if mid == "-":
            continue
        if mid in read_time:
            redelivered += 1
        else:
            read_time[mid] = t
    published = [i for i, t in enumerate(run.publish_t) if t > 0]
    labels = {tuple(k) for k in manifest.pop("label_keys")}
    late_uids = {m.group(1) or m.group(2) for d in written["dead_letters"] if d.get("reason") == "late"
                 for m in [re.search(r"^\{\"uid\":\"([^\"]+)\"|uid='([^']+)'", d.get("line") or "")] if m}
    from stagewatch.evaluation.simulate import STAGES

    _say("replaying the published lines through the backtest for reference")
    ref = _replay_reference(run, ",".join(STAGES))
    if "error" in ref:
        reference: dict[str, Any] = {"error": ref["error"]}
    else:
        reference = {
            "seconds": ref["seconds"],
            "dead_letters_by_reason": dict(Counter(d.get("reason") for d in ref["dead_letters"])),
            "traces_by_status": dict(Counter(t.get("status") for t in ref["traces"])),
            "incident_events": dict(Counter(i.get("event") for i in ref["incidents"])),
            "detection": _detection(ref["anomalies"], labels),
        }
    acc = _account(run, written["traces"], written["dead_letters"], set(read_time))
    verdicts = acc.pop("verdicts")
    unacc = acc.pop("unaccounted_lines")
    by_why: dict[str, list[int]] = defaultdict(list)
    for i in unacc:
        by_why[verdicts[i]].append(i)
    unaccounted_sample = [
        {"uid": run.lines[i].uid, "stage": run.lines[i].stage, "insert_id": run.lines[i].insert_id,
         "why": verdicts[i], "read_by_job": run.message_ids[i] in read_time}
        for why in sorted(by_why) for i in by_why[why][:4]]
    with (run.workdir / "lines.jsonl").open("wb") as f:  # every line's fate, for a closer look afterwards
        for i, line in enumerate(run.lines):
            msg_id = run.message_ids[i]
            f.write(orjson.dumps({"i": i, "uid": line.uid, "stage": line.stage, "insert_id": line.insert_id,
                                  "due_s": round(line.due_s, 3), "published": run.publish_t[i],
                                  "message_id": msg_id, "pulled": read_time.get(msg_id) if msg_id else None,
                                  "verdict": verdicts[i]}) + b"\n")
    per_file = Counter(t.get("uid") for t in written["traces"])
    # The longest stretch in which the job pulled nothing although messages were waiting.
    starved, since = 0.0, None
    for prev, cur in itertools.pairwise(run.samples):
        if cur["read"] == prev["read"] and prev["backlog"] > 0:
            since = prev["t_s"] if since is None else since
            starved = max(starved, cur["t_s"] - since)
        else:
            since = None
    lat = _latencies(run, read_time)
    written_ids = Counter(a.get("anomaly_id") for a in written["anomalies"])
    topic_ids = Counter(orjson.loads(d).get("anomaly_id") for _, d, _ in run.received
                        if b'"anomaly_id"' in d)
    behind = [run.publish_t[i] - (run.start_wall + run.lines[i].due_s) for i in published]
    pub_span = max(run.publish_t) - run.start_wall if published else 0.0
    samples = run.samples
    rates = []
    for a, b in itertools.pairwise(samples):
        dt = b["t_s"] - a["t_s"]
        if dt > 0:
            rates.append({"t_s": b["t_s"], "publish_per_s": round((b["published"] - a["published"]) / dt, 1),
                          "read_per_s": round((b["read"] - a["read"]) / dt, 1)})
    steady = [r for r in rates if 60 <= r["t_s"] <= run.args.minutes * 60]
    return {
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "beam": _beam_version(),
                    "note": "2 CPUs shared with other work; the job, the emulator (Java) and this script share them"},
        "config": {"rate_lines_per_s": run.args.rate, "minutes": run.args.minutes, "seed": run.args.seed,
                   "files_per_min": round(cfg.peak_rate_per_min, 1), "session_gap_s": run.args.session_gap,
                   "faults": manifest["faults"], "workdir": str(run.workdir)},
        "simulated": {"files": manifest["files"], "lines": manifest["lines"], "labels": manifest["labels"]},
        "published": {
            "lines": len(published), "errors": len(run.publish_errors), "error_sample": run.publish_errors[:5],
            "span_s": round(pub_span, 1),
            "behind_schedule_p50_s": _r(_pct(behind, 50), 3), "behind_schedule_max_s": _r(max(behind or [0]), 3),
            "steady_publish_per_s_mean": _r(float(np.mean([r["publish_per_s"] for r in steady])) if steady else None),
        },
        "read": {"distinct": len(read_time), "redelivered": redelivered,
                 "steady_read_per_s_mean": _r(float(np.mean([r["read_per_s"] for r in steady])) if steady else None),
                 "read_per_s_max": max((r["read_per_s"] for r in rates), default=None),
                 "backlog_max": max((s["backlog"] for s in samples), default=0),
                 "backlog_at_end_of_publishing": next((s["backlog"] for s in samples
                                                       if s["t_s"] >= pub_span), None),
                 "backlog_when_stopped": samples[-1]["backlog"] if samples else None,
                 "longest_stretch_without_a_pull_while_backlogged_s": round(starved, 1)},
        "accounting": {**acc, "published": len(published), "unaccounted": len(unacc),
                       "unaccounted_sample": unaccounted_sample},
        "outputs": {"traces": len(written["traces"]),
                    "files_with_a_trace": len(per_file),
                    "files_by_number_of_trace_summaries": dict(sorted(Counter(per_file.values()).items())),
                    "traces_by_status": dict(Counter(t.get("status") for t in written["traces"])),
                    "dead_letters_by_reason": dict(Counter(d.get("reason") for d in written["dead_letters"])),
                    "anomalies_written": sum(written_ids.values()),
                    "anomalies_by_kind": dict(Counter(a.get("kind") for a in written["anomalies"])),
                    "incidents_written": len(written["incidents"]),
                    "anomalies_written_not_on_topic": len(set(written_ids) - set(topic_ids)),
                    "anomalies_on_topic_not_written": len(set(topic_ids) - set(written_ids)),
                    "anomalies_on_topic_more_than_once": sum(1 for n in topic_ids.values() if n > 1)},
        "detection": _detection(written["anomalies"], labels, late_uids),
        "replay_reference": reference,
        "latency": lat,
        "rss_mb": {"after_start": round(rss0, 1), "peak_sampled": max((s["rss_mb"] for s in samples), default=None),
                   "peak_kernel_hwm": round(run.rss_hwm_mb, 1), "end": end_rss},
        "job": {"stop": run.job_stop, "cpu_s": samples[-1]["cpu_s"] if samples else None,
                "wall_s": round(run.stopped_at - run.start_wall, 1)},
        "samples": samples,
        "rates": rates,
    }


def _beam_version() -> str:
    import apache_beam

    return str(apache_beam.__version__)


# --- the report ---------------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def markdown(res: dict[str, Any]) -> str:
    c, p, r, a, o, lat = (res["config"], res["published"], res["read"], res["accounting"], res["outputs"],
                          res["latency"])
    out = [
        "# Soak: the streaming job on the local runner, fed through the Pub/Sub emulator",
        "",
        f"Produced by `{res['command']}` on {res['date']}. Machine: {res['machine']['cpus']} CPUs, shared (the "
        f"job, the Java emulator and the publishing script run on them together); Python "
        f"{res['machine']['python']}, Beam {res['machine']['beam']}. Method: the module docstring of "
        "`benchmarks/soak.py`.",
        "",
        f"Input: {res['simulated']['files']:,} simulated files, {res['simulated']['lines']:,} lines "
        f"(`stagewatch.evaluation.simulate`, seed {c['seed']}, {c['files_per_min']:,.0f} files/min at the daily "
        f"peak = {c['rate_lines_per_s']:g} lines/s for {c['minutes']:g} min, plus the tail of files in flight), "
        "event times shifted to now; faults in the second half: "
        + ", ".join(f"{f['name']} ({f['kind']} {f['stage']})" for f in c["faults"])
        + f". Job: `stagewatch run --input_subscription … --output_topic … --publish_anomalies true --stages "
        f"detect,…,lot_check --runner StagewatchLocalRunner --output_dir … --session_gap_s {c['session_gap_s']:g}`.",
        "",
        "## Headline",
        "",
        "| | |",
        "|---|---:|",
        f"| lines published | {_fmt(p['lines'])} (errors {p['errors']}) over {_fmt(p['span_s'])} s |",
        f"| publish rate, steady part (mean) | {_fmt(p['steady_publish_per_s_mean'])} lines/s |",
        f"| job read rate, steady part (mean) / best 10 s | {_fmt(r['steady_read_per_s_mean'])} / "
        f"{_fmt(r['read_per_s_max'])} lines/s |",
        f"| backlog: max / when publishing ended | {_fmt(r['backlog_max'])} / "
        f"{_fmt(r['backlog_at_end_of_publishing'])} lines |",
        f"| longest stretch without a pull while messages waited | "
        f"{_fmt(r['longest_stretch_without_a_pull_while_backlogged_s'])} s |",
        f"| backlog when the job was stopped | {_fmt(r['backlog_when_stopped'])} lines |",
        f"| lines accounted for | {_fmt(a['published'] - a['unaccounted'])} of {_fmt(a['published'])} |",
        f"| **lines not accounted for** | **{_fmt(a['unaccounted'])}** |",
        f"| RSS after start / peak (kernel's high-water mark) / end | {_fmt(res['rss_mb']['after_start'])} / "
        f"{_fmt(res['rss_mb']['peak_kernel_hwm'])} / {_fmt(res['rss_mb']['end'])} MB |",
        f"| job CPU / wall | {_fmt(res['job']['cpu_s'])} s / {_fmt(res['job']['wall_s'])} s |",
        "",
        "## Every line accounted for",
        "",
        "| where the line is | lines |",
        "|---|---:|",
        *[f"| {k} | {_fmt(v)} |" for k, v in a["by_verdict"].items()],
        "",
        f"Dead letters not matched to a published line: {a['dead_letters_not_matched']}. Redelivered messages "
        f"(pulled twice by the job): {r['redelivered']}.",
        "",
        "Outputs: traces " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(o["traces_by_status"].items()))
        + "; dead letters " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(o["dead_letters_by_reason"].items()))
        + "; anomalies " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(o["anomalies_by_kind"].items()))
        + f"; incidents {_fmt(o['incidents_written'])}. Files by the number of trace summaries they came out as: "
        + ", ".join(f"{k}: {_fmt(v)}" for k, v in o["files_by_number_of_trace_summaries"].items())
        + ". Anomalies written but not received on the topic: "
        f"{o['anomalies_written_not_on_topic']}; received but not written: {o['anomalies_on_topic_not_written']};"
        f" received more than once: {o['anomalies_on_topic_more_than_once']}.",
        "",
    ]
    if a["unaccounted_sample"]:
        out += ["Unaccounted lines (up to four of each kind):", "",
                "| uid | stage | insertId | why | pulled by the job |", "|---|---|---|---|---|"]
        out += [f"| {u['uid']} | {u['stage']} | {u['insert_id']} | {u['why']} | {u['read_by_job']} |"
                for u in a["unaccounted_sample"]]
        out.append("")
    det, ref = res["detection"], res["replay_reference"]
    out += ["## What was detected, beside the backtest on the same lines", "",
            "Labels: the simulated faults' expected anomalies (kind, uid, stage). The backtest is `stagewatch replay` "
            "of the published lines in publish order (event-time order, watermark 60 s behind the newest event, "
            "TTL = the job's session gap)"
            + (f"; it took {ref['seconds']:g} s." if "seconds" in ref else f": failed ({ref.get('error')})."), "",
            "| kind | stream: anomalies | matching a label | on files with a late line | labels | found by the "
            "stream | backtest: anomalies | matching a label | found by the backtest |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rdet = ref.get("detection", {})
    for kind in sorted(set(det) | set(rdet)):
        d, r2 = det.get(kind, {}), rdet.get(kind, {})
        out.append(f"| {kind} | {_fmt(d.get('anomalies', 0))} | {_fmt(d.get('labelled', 0))} | "
                   f"{_fmt(d.get('on_files_with_a_late_line', 0))} | {_fmt(d.get('labels', r2.get('labels', 0)))} | "
                   f"{_fmt(d.get('labels_found', 0))} | {_fmt(r2.get('anomalies', 0))} | {_fmt(r2.get('labelled', 0))}"
                   f" | {_fmt(r2.get('labels_found', 0))} |")
    if "dead_letters_by_reason" in ref:
        out += ["", "Backtest dead letters: " + ", ".join(f"{k} {_fmt(v)}" for k, v in
                                                         sorted(ref["dead_letters_by_reason"].items()))
                + "; traces " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(ref["traces_by_status"].items()))
                + "."]
    out.append("")
    out += [
        "## Detection latency",
        "",
        "Receive time on the output topic minus: the publish time of the line that made the verdict (`failed`, "
        "`slow_stage` on a line, `slow_trace`: its last line); the deadline (`stalled`, `slow_stage` "
        "`in_progress`); the first anomaly's event time (incident opened). Queue: publish to the job's pull of "
        "that line.",
        "",
        "| kind | n | p50 s | p90 s | p99 s | max s | queue p50 s | queue p99 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, v in lat["by_kind"].items():
        q = lat["queue_before_read"].get(k, {})
        out.append(f"| {k} | {v['n']:,} | {_fmt(v['p50_s'])} | {_fmt(v['p90_s'])} | {_fmt(v['p99_s'])} | "
                   f"{_fmt(v['max_s'])} | {_fmt(q.get('p50_s'))} | {_fmt(q.get('p99_s'))} |")
    v = lat["all_anomalies"]
    out += [f"| all anomalies | {v['n']:,} | {_fmt(v['p50_s'])} | {_fmt(v['p90_s'])} | {_fmt(v['p99_s'])} | "
            f"{_fmt(v['max_s'])} | | |", ""]
    if lat["trigger_line_not_found"]:
        out += [f"Anomalies whose triggering line was not found among the published: {lat['trigger_line_not_found']}",
                ""]
    out += ["## Backlog and memory over time", "",
            "| t s | published | read by the job | backlog | RSS MB | job CPU s | traces | dead letters | "
            "anomalies on topic |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    samples = res["samples"]
    step = max(1, len(samples) // 30)
    shown = samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else [])
    out += [f"| {s['t_s']:.0f} | {s['published']:,} | {s['read']:,} | {s['backlog']:,} | {s['rss_mb']:.0f} | "
            f"{s['cpu_s']:.0f} | {s['traces']:,} | {s['dead_letters']:,} | {s['received_on_topic']:,} |"
            for s in shown]
    out += [
        "",
        "## Limits of these figures",
        "",
        "- The local runner is Beam's bundle-based in-process runner (with stagewatch's corrections and fixes, "
        "`docs/local-runner.md`): one Python process, so at most one core for the job's code; Dataflow runs the same "
        "graph on workers in parallel, with its own Pub/Sub watermark (estimated from the backlog's timestamps). "
        "Nothing here is a Dataflow figure: throughput, latency and memory on Dataflow are not measured by this.",
        "- This runner's Pub/Sub reader pulls at most 10 messages per pull and acknowledges them at once "
        "(`apache_beam/runners/direct/transform_evaluator.py`, `_PubSubReadEvaluator`); its watermark trails the "
        "oldest line of each pull by the job's `--allowed_lateness_s` (60 s), the local runner's correction C "
        "(Beam's sets it to the wall clock at every pull). Dataflow estimates it from the whole backlog; every "
        "verdict here waits those 60 s.",
        "- The emulator has no metrics API: the backlog is lines published minus distinct messages the job pulled, "
        "recorded by a hook on the client's `pull` inside the job's process (the module docstring).",
        "- Latencies are differences of `time.time()` taken in two processes on one machine; receive times are when "
        "the streaming-pull callback ran in this script (which shares the CPUs with the job).",
        f"- The job ran with `--session_gap_s {res['config']['session_gap_s']:g}` (its default is 3600) so that files "
        "that stall for good are closed and written within the drain.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_job"]:
        reads_path, rest = argv[1], argv[2:]
        return _job_child(reads_path, rest[1:] if rest[:1] == ["--"] else rest)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rate", type=float, default=200.0, help="lines per second (default 200)")
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated span, minutes (default 10)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", help="folder for the simulation, the job's outputs and logs (default: a new temp dir)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the report here")
    ap.add_argument("--no-faults", action="store_true", help="normal behaviour only")
    ap.add_argument("--session-gap", type=float, default=600.0,
                    help="the job's --session_gap_s (default 600: files that stall for good are closed, and "
                    "their lines written in a trace, within the drain; the job's own default is 3600)")
    ap.add_argument("--sample-seconds", type=float, default=10.0)
    ap.add_argument("--drain-min", type=float, default=INTERVAL_S * 1.5,
                    help="seconds to wait after the last publish at least (default 450: an interval + its grace)")
    ap.add_argument("--drain-max", type=float, default=1500.0, help="seconds to wait after the last publish at most")
    ap.add_argument("--quiet", type=float, default=330.0,
                    help="after --drain-min, stop when the job wrote nothing new for this long (default 330: more "
                    "than a baseline interval, since traces and verdicts come out in a burst per interval)")
    args = ap.parse_args(argv)
    try:
        res = soak(args)
    except (_Interrupted, KeyboardInterrupt) as exc:
        print(f"soak: interrupted ({exc}); emulator and job stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"soak: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
