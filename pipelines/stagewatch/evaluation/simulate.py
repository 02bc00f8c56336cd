"""A realistic, seeded log stream of the eight-stage file pipeline, with injected faults and their labels.

The pipeline: a customer's uploader (``detect``, ``upload``; on the customer's host, whose clock may be off),
the API server (``register``, ``enqueue``), an analysis worker (``download`` — queue wait included —
``analyse``, ``store_result``) and the API server again (``lot_check``: every file of the lot is done).

Normal behaviour: diurnal load (quiet at night, busy mid-afternoon; busy hours are slower), a dozen tenants of
different sizes and network speeds, lots of 5–40 files, log-normal durations (uploads scale with file size),
at-least-once delivery (duplicates), out-of-order delivery (up to ~45 s), clock skew on some customer hosts,
and junk lines of every rejected kind.

Standard faults (hours after the start; each only if the simulated span covers it):

====================  =========  =====================================================================
fault                 window     effect and label
====================  =========  =====================================================================
stage_slowdown        10:00 +30m ``analyse`` 8x slower for everyone: slow_stage(analyse), slow_trace
tenant_slow_upload    13:00 +60m one tenant's uploads 30x slower: slow_stage(upload), slow_trace
lost_messages         12:00 +20m 30 % of queue messages lost: stalled(download)
failure_burst         15:00 +15m 40 % of analyses fail (ERROR, HTTP 500): failed(analyse)
missing_completion    16:00 +30m 50 % of lot checks never logged: stalled(lot_check)
====================  =========  =====================================================================

``slow_trace`` is labelled when the fault made the file's end-to-end time at least ``SLOW_TRACE_FACTOR`` (3)
times what it would have been without it (the simulator knows both): a file that is unmistakably slow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stagewatch.core.kinds import FAILED, SLOW_STAGE, SLOW_TRACE, STALLED
from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us

__all__ = ["STAGES", "SimConfig", "Simulation", "simulate_to_dir"]

STAGES = ("detect", "upload", "register", "enqueue", "download", "analyse", "store_result", "lot_check")
_SERVICE = {
    "detect": "uploader",
    "upload": "uploader",
    "register": "api",
    "enqueue": "api",
    "download": "worker",
    "analyse": "worker",
    "store_result": "worker",
    "lot_check": "api",
}
_MESSAGES = {
    "detect": "new file detected",
    "upload": "file uploaded",
    "register": "metadata registered",
    "enqueue": "analysis message queued",
    "download": "file downloaded for analysis",
    "analyse": "analysis finished",
    "store_result": "result uploaded",
    "lot_check": "lot completion checked",
}
# (median seconds at zero load, log sigma, how much full load slows it down)
_DURATIONS = {
    "register": (0.35, 0.30, 0.3),
    "enqueue": (0.12, 0.30, 0.2),
    "download": (2.5, 0.35, 1.2),
    "analyse": (25.0, 0.28, 0.35),
    "store_result": (2.0, 0.35, 0.2),
    "lot_check": (0.45, 0.30, 0.3),
}
_TENANTS = (
    # name, share of traffic, network MB/s, host clock skew in seconds
    ("acme", 0.20, 4.0, 0.0),
    ("globex", 0.15, 6.0, 0.0),
    ("initech", 0.12, 3.0, 1.5),
    ("umbrella", 0.10, 5.0, 0.0),
    ("hooli", 0.08, 8.0, -2.0),
    ("stark", 0.07, 4.5, 0.0),
    ("wayne", 0.06, 2.5, 0.0),
    ("tyrell", 0.06, 3.5, 0.8),
    ("cyberdyne", 0.05, 1.2, 0.0),  # a chronically slow network: its own normal, not an incident
    ("soylent", 0.04, 5.0, 0.0),
    ("wonka", 0.04, 4.0, 0.0),
    ("oscorp", 0.03, 3.0, 0.0),
)
SLOW_UPLOAD_TENANT = "wayne"
SLOW_TRACE_FACTOR = 3.0


@dataclass(frozen=True)
class Fault:
    name: str
    start_h: float
    minutes: float
    kind: str
    stage: str

    def active(self, t_h: float) -> bool:
        return self.start_h <= t_h < self.start_h + self.minutes / 60


STANDARD_FAULTS = (
    Fault("stage_slowdown", 10.0, 30, SLOW_STAGE, "analyse"),
    Fault("lost_messages", 12.0, 20, STALLED, "download"),
    Fault("tenant_slow_upload", 13.0, 60, SLOW_STAGE, "upload"),
    Fault("failure_burst", 15.0, 15, FAILED, "analyse"),
    Fault("missing_completion", 16.0, 30, STALLED, "lot_check"),
)

# The same five faults packed into three hours from midday: a demo and a streaming-equivalence test that runs
# in a minute or two rather than a day's worth of input.
SHORT_FAULTS = (
    Fault("stage_slowdown", 1.0, 20, SLOW_STAGE, "analyse"),
    Fault("lost_messages", 1.5, 10, STALLED, "download"),
    Fault("tenant_slow_upload", 1.75, 30, SLOW_STAGE, "upload"),
    Fault("failure_burst", 2.25, 10, FAILED, "analyse"),
    Fault("missing_completion", 2.5, 15, STALLED, "lot_check"),
)
SHORT_START = "2026-06-06T12:00:00Z"
SHORT_HOURS = 3.0


@dataclass(frozen=True)
class SimConfig:
    seed: int = 1
    start: str = "2026-06-06T00:00:00Z"
    hours: float = 24.0
    peak_rate_per_min: float = 30.0
    faults: tuple[Fault, ...] = STANDARD_FAULTS
    duplicate_rate: float = 0.01
    junk_rate: float = 0.002
    max_delivery_delay_s: float = 45.0
    clock_skew: bool = True
    project: str = "demo-proj"

    def __post_init__(self) -> None:
        if self.hours <= 0 or self.peak_rate_per_min <= 0:
            raise ValueError("hours and rate must be positive")


def load_at(hour_of_day: float) -> float:
    """Diurnal load in [0.12, 1]: quiet at night, peak mid-afternoon."""
    return 0.12 + 0.88 * math.exp(-(((hour_of_day - 14.0) / 4.5) ** 2))


class Simulation:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.t0 = parse_rfc3339_us(cfg.start)
        self.labels: list[dict[str, Any]] = []
        self.n_files = 0
        self._insert = 0

    # -- files -------------------------------------------------------------------------------------------

    def _arrivals(self) -> Iterator[float]:
        """File arrival times in hours since start (a Poisson process thinned by the load curve)."""
        rng, cfg = self.rng, self.cfg
        peak_per_h = cfg.peak_rate_per_min * 60
        t = 0.0
        start_hod = (self.t0 / US_PER_S / 3600) % 24
        while True:
            t += rng.expovariate(peak_per_h)
            if t >= cfg.hours:
                return
            if rng.random() < load_at((start_hod + t) % 24):
                yield t

    def _faults_at(self, t_h: float, kind_stage: tuple[str, str]) -> Fault | None:
        for f in self.cfg.faults:
            if (f.kind, f.stage) == kind_stage and f.active(t_h):
                return f
        return None

    def events(self) -> Iterator[tuple[float, dict[str, Any]]]:
        """(delivery time in seconds since start, LogEntry dict) in generation order."""
        rng, cfg = self.rng, self.cfg
        weights = [t[1] for t in _TENANTS]
        lot_left: dict[str, int] = {}
        lot_no: dict[str, int] = {}
        start_hod = (self.t0 / US_PER_S / 3600) % 24
        for arrival_h in self._arrivals():
            self.n_files += 1
            name, _, mbps, skew = _TENANTS[rng.choices(range(len(_TENANTS)), weights)[0]]
            if lot_left.get(name, 0) <= 0:
                lot_no[name] = lot_no.get(name, 0) + 1
                lot_left[name] = rng.randint(5, 40)
            lot_left[name] -= 1
            lot = f"lot-{name}-{lot_no[name]:04d}"
            uid = f"f-{cfg.seed}-{self.n_files:06d}"
            load = load_at((start_hod + arrival_h) % 24)
            yield from self._file(uid, name, lot, arrival_h, load, mbps, skew)

    def _file(
        self, uid: str, tenant: str, lot: str, arrival_h: float, load: float, mbps: float, skew: float
    ) -> Iterator[tuple[float, dict[str, Any]]]:
        rng = self.rng
        t = arrival_h * 3600.0  # true seconds since start
        times: dict[str, float] = {"detect": t}
        normal_total = 0.0
        faulty_total = 0.0
        slowed: list[tuple[Fault, str]] = []
        failed_at: str | None = None
        size_mb = rng.lognormvariate(math.log(20.0), 0.5)
        for stage in STAGES[1:]:
            if stage == "upload":
                normal = size_mb / (mbps * rng.lognormvariate(0.0, 0.2))
            else:
                median, sigma, load_gain = _DURATIONS[stage]
                normal = median * (1 + load_gain * load) * rng.lognormvariate(0.0, sigma)
            now_h = t / 3600.0
            duration = normal
            slow = self._faults_at(now_h, (SLOW_STAGE, stage))
            if slow is not None and (slow.name != "tenant_slow_upload" or tenant == SLOW_UPLOAD_TENANT):
                duration = normal * (30.0 if slow.name == "tenant_slow_upload" else 8.0)
                slowed.append((slow, stage))
            normal_total += normal
            faulty_total += duration
            lost = self._faults_at(now_h, (STALLED, stage))
            if lost is not None and rng.random() < (0.3 if lost.name == "lost_messages" else 0.5):
                self.labels.append(_label(uid, STALLED, stage, lost.name, tenant, lot, t))
                break
            t += duration
            times[stage] = t
            fail = self._faults_at(now_h, (FAILED, stage))
            if fail is not None and rng.random() < 0.4:
                failed_at = stage
                self.labels.append(_label(uid, FAILED, stage, fail.name, tenant, lot, t))
                break
        for fault, stage in slowed:
            if failed_at is None and stage in times:
                self.labels.append(_label(uid, SLOW_STAGE, stage, fault.name, tenant, lot, times[stage]))
        if slowed and "lot_check" in times and faulty_total >= SLOW_TRACE_FACTOR * normal_total:
            self.labels.append(
                _label(uid, SLOW_TRACE, "end_to_end", slowed[0][0].name, tenant, lot, times["lot_check"])
            )
        for stage, true_t in times.items():
            on_customer_host = _SERVICE[stage] == "uploader"
            logged_t = true_t + (skew if on_customer_host and self.cfg.clock_skew else 0.0)
            entry = self._entry(uid, tenant, lot, stage, logged_t, stage == failed_at, times, size_mb)
            delivery = true_t + min(rng.expovariate(1 / 2.0), self.cfg.max_delivery_delay_s)
            yield delivery, entry
            if rng.random() < self.cfg.duplicate_rate:
                yield delivery + rng.uniform(0.5, 40.0), entry

    def _entry(
        self, uid: str, tenant: str, lot: str, stage: str, t_s: float, failed: bool,
        times: dict[str, float], size_mb: float,
    ) -> dict[str, Any]:
        self._insert += 1
        service = _SERVICE[stage]
        t_us = self.t0 + int(t_s * US_PER_S)
        nanos = self.rng.randrange(1000)
        ts = format_rfc3339(t_us)[:-1] + f"{nanos:03d}Z"
        payload: dict[str, Any] = {
            "message": "analysis failed" if failed else _MESSAGES[stage],
            "uid": uid,
            "stage": stage,
            "tenant": tenant,
            "lot": lot,
        }
        if stage == "upload":
            payload["size_bytes"] = int(size_mb * 1e6)
        entry: dict[str, Any] = {
            "insertId": f"{self.cfg.seed:x}-{self._insert:08x}",
            "logName": f"projects/{self.cfg.project}/logs/{service}",
            "resource": _resource(service, self.cfg.project),
            "timestamp": ts,
            "receiveTimestamp": ts,
            "severity": "ERROR" if failed else "INFO",
            "labels": {"env": "prod", "service": service},
            "jsonPayload": payload,
        }
        if service != "uploader" or stage == "upload":
            prev = STAGES[STAGES.index(stage) - 1]
            latency = max(0.001, times[stage] - times.get(prev, times[stage]))
            entry["httpRequest"] = {
                "requestMethod": "POST",
                "requestUrl": f"https://api.example.com/v1/files/{uid}/{stage}",
                "status": 500 if failed else 200,
                "latency": f"{latency:.3f}s",
            }
        return entry

    # -- junk --------------------------------------------------------------------------------------------

    def junk(self, t_s: float) -> bytes:
        """One line of each rejected kind, in rotation, as a real stream would carry them."""
        kinds = ("invalid_json", "not_object", "missing_uid", "missing_stage", "bad_timestamp", "not_utf8")
        kind = kinds[self.rng.randrange(len(kinds))]
        ts = format_rfc3339(self.t0 + int(t_s * US_PER_S))
        if kind == "invalid_json":
            return b'{"insertId": "junk", "jsonPayload": {"uid": "f-trunc'
        if kind == "not_object":
            return b'["not", "a", "log", "entry"]'
        if kind == "missing_uid":
            return orjson.dumps({"timestamp": ts, "jsonPayload": {"message": "health check ok"}})
        if kind == "missing_stage":
            return orjson.dumps({"timestamp": ts, "jsonPayload": {"uid": "f-x", "message": "debug"}})
        if kind == "bad_timestamp":
            return orjson.dumps({"timestamp": "yesterday", "jsonPayload": {"uid": "f-y", "stage": "upload"}})
        return b'{"timestamp": "' + ts.encode() + b'", "jsonPayload": {"uid": "f-\xff\xfe", "stage": "upload"}}'

    def lines(self) -> list[bytes]:
        """All lines in delivery order, junk included; fills ``self.labels``."""
        delivered: list[tuple[float, int, bytes]] = []
        seq = 0
        for delivery, entry in self.events():
            seq += 1
            delivered.append((delivery, seq, orjson.dumps(entry)))
            if self.rng.random() < self.cfg.junk_rate:
                seq += 1
                delivered.append((delivery, seq, self.junk(delivery)))
        # One oversized line: a stack trace that a logging library dumped whole.
        seq += 1
        big = orjson.dumps({"timestamp": self.cfg.start, "jsonPayload": {"message": "x" * 300_000}})
        delivered.append((self.cfg.hours * 1800, seq, big))
        delivered.sort()
        return [line for _, _, line in delivered]


def _label(uid: str, kind: str, stage: str, fault: str, tenant: str, lot: str, t_s: float) -> dict[str, Any]:
    return {"uid": uid, "kind": kind, "stage": stage, "fault": fault, "tenant": tenant, "lot": lot, "t_s": t_s}


def _resource(service: str, project: str) -> dict[str, Any]:
    if service == "uploader":
        return {"type": "generic_node", "labels": {"project_id": project, "node_id": "customer-host"}}
    return {
        "type": "cloud_run_revision",
        "labels": {"project_id": project, "service_name": service, "location": "asia-northeast1"},
    }


def simulate_to_dir(cfg: SimConfig, outdir: Path) -> dict[str, Any]:
    """Write ``logs.jsonl``, ``labels.jsonl`` and ``manifest.json`` into ``outdir``; return the manifest."""
    outdir.mkdir(parents=True, exist_ok=True)
    sim = Simulation(cfg)
    lines = sim.lines()
    with open(outdir / "logs.jsonl", "wb") as f:
        for line in lines:
            f.write(line)
            f.write(b"\n")
    start_us = sim.t0
    with open(outdir / "labels.jsonl", "wb") as f:
        for label in sim.labels:
            row = dict(label)
            row["time"] = format_rfc3339(start_us + int(row.pop("t_s") * US_PER_S))
            f.write(orjson.dumps(row) + b"\n")
    manifest = {
        "seed": cfg.seed,
        "start": cfg.start,
        "hours": cfg.hours,
        "files": sim.n_files,
        "lines": len(lines),
        "labels": len(sim.labels),
        "stages": list(STAGES),
        "faults": [
            {
                "name": f.name,
                "kind": f.kind,
                "stage": f.stage,
                "start": format_rfc3339(start_us + int(f.start_h * 3600 * US_PER_S)),
                "end": format_rfc3339(start_us + int((f.start_h + f.minutes / 60) * 3600 * US_PER_S)),
                "tenant": SLOW_UPLOAD_TENANT if f.name == "tenant_slow_upload" else None,
            }
            for f in cfg.faults
            if f.start_h < cfg.hours
        ],
    }
    (outdir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest
