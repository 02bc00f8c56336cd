"""Capacity and cost: the streaming job's own CPU per event, its state and its shuffle bytes, measured on real code.

    python benchmarks/capacity.py [--inputs day dense] [--repeats 3] [--json F] [--markdown F]
    python benchmarks/capacity.py --from-json benchmarks/capacity.json   # the tables and the model again, no runs

A benchmark, not a timed test: it measures and reports, it does not assert. About 50 minutes on 2 cores.

Inputs (``stagewatch.evaluation.simulate``, written once into ``--workdir``): ``day``, a simulated day (``--seed``,
``--rate`` files per minute at the daily peak, the five standard faults); ``dense``, an hour at the daily peak
(``--dense-rate``) with every file's ``analyse`` 8x slower for 20 minutes -- a pipeline-wide incident, the worst
case for the steps with one key. Each is made a stream exactly as a local run makes one
(``stagewatch.stream.file_source.file_stream``: lines stamped with the file's robust clock, the watermark trailing
the newest event by 60 s), except that the watermark moves every ``--watermark-step`` seconds (1 s: a Pub/Sub
watermark moves continuously; a local run's 100 s steps would batch the timers).

How the job runs here, without a runner: the DoFns of ``stagewatch.stream.steps`` themselves (``_ParseFn``,
``_FirstSeenFn``, ``_AssembleFn``, ``_CountBinsFn``, ``_RollFn``, ``_JudgeFn``, ``_WatchFn``, ``_GatherLotFn``,
``_JudgeLotsFn``, ``_TrackFn``, and the incident step's ``_TenantCounts`` / ``_StampWindowEnd``) are called
directly — their ``process`` and ``@on_timer`` methods, with their declared state cells and timers played by a
small keyed-state stand-in (a dict per key, a heap of event-time timers, each step's output watermark held by its
earliest timer, the judging step's inputs held until the watermark passed the end of their snapshots' window, as a
side input makes them wait). One recording run wires the steps as ``stagewatch.stream.pipeline.build`` does and
keeps every step's inputs (elements with key and time, watermark moves); each step is then replayed alone from
its recording, ``--repeats`` times, timed with ``time.process_time``. What the stand-in itself costs per call
(binding state cells and timers, calling, iterating the outputs) is measured with a no-op and subtracted.

State is kept three ways in the replays: ``objects`` (cells hold Python objects: the job's code alone),
``commit`` (each write or append is also encoded with the cell's declared coder, once — what the SDK pays to
commit state while its state cache holds the objects; the realistic case) and ``miss`` (each read also decodes:
every read a cache miss, the upper bound).

Also measured in the recording run: the state each step holds per key (encoded with the cell's declared coder) at
every ``--census`` seconds of event time; the bytes of every element that crosses a keyed (shuffle) boundary or
waits for a side input, encoded with the coder Beam gives that PCollection (``registry.get_coder`` of its type hint,
in a ``WindowedValueCoder``); the snapshots' side input per window; the BigQuery rows the sinks would write. And,
as a cross-check, the whole backtest's CPU per line (``replay_files``, one process) on the same file, and its
anomalies: the steps run here make the same ones. Beam's own Python SDK is measured apart (``sdk_costs``).

The cost model (``model``) turns these into cores, n1-standard-2 workers and a monthly bill at 10 to 10,000
files/s, with the prices written below and the runner-overhead factor as an explicit assumption. See
``docs/capacity.md``.
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import inspect
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
from apache_beam import typehints
from apache_beam.coders import coders, registry
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec
from apache_beam.transforms.window import GlobalWindow, IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from stagewatch.backtest.replay import replay_files
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.clock import TimeBounds
from stagewatch.core.events import StageEvent
from stagewatch.core.incident import IncidentConfig
from stagewatch.core.kinds import SLOW_STAGE
from stagewatch.core.lots import LotConfig
from stagewatch.core.measurements import Measured, Progress
from stagewatch.core.parser import Parser
from stagewatch.core.records import Anomaly, IncidentEvent, LotRecord, TraceSummary
from stagewatch.core.stages import infer_from_events
from stagewatch.core.timeutil import US_PER_S
from stagewatch.core.traces import TraceRules
from stagewatch.core.verdicts import baseline_stage
from stagewatch.evaluation.simulate import STANDARD_FAULTS, Fault, SimConfig, simulate_to_dir
from stagewatch.stream.file_source import file_stream
from stagewatch.stream.steps.assemble import FAILURES, LATE, PROGRESS, SUMMARIES, _AssembleFn
from stagewatch.stream.steps.dedup import _FirstSeenFn
from stagewatch.stream.steps.incidents import _StampWindowEnd, _tenant_of, _TenantCounts, _TrackFn
from stagewatch.stream.steps.judging import DEADLINES, DEFERRED, _JudgeFn
from stagewatch.stream.steps.learn import _CountBinsFn, _RollFn, _shard_of
from stagewatch.stream.steps.lots import _GatherLotFn, _JudgeLotsFn
from stagewatch.stream.steps.stalls import ARRIVALS, STALLED_SUMMARIES, _uid_of, _WatchFn

# ---------------------------------------------------------------------------------------------------------------
# Prices (USD, list prices, us-central1, on demand; written down 2026-12-04). Sources:
# * Dataflow streaming worker vCPU-hour, GB-hour, Streaming Engine data processed (legacy billing), standard PD:
#   the constants Apache Beam's own load tests price Dataflow jobs with (apache/beam,
#   it/google-cloud-platform/src/main/java/org/apache/beam/it/gcp/LoadTestBase.java, "us-central-1 pricing"),
#   the same as a June-2026 us-central1 reading of https://cloud.google.com/dataflow/pricing.
# * Pub/Sub throughput $40 per TiB published and $40 per TiB delivered, first 10 GiB a month free
#   (https://cloud.google.com/pubsub/pricing).
# * BigQuery legacy streaming inserts $0.01 per 200 MB, each row counted as at least 1 KB
#   (https://cloud.google.com/bigquery/pricing): what the job's hand-written sink (insert_rows_json) pays.
PRICES: dict[str, float] = {
    "vcpu_hour": 0.069,
    "gb_hour": 0.0035557,
    "pd_gb_hour": 0.000054,
    "streaming_engine_per_gb": 0.018,
    "pubsub_per_tib": 40.0,
    "pubsub_free_gib": 10.0,
    "bq_streaming_per_gb": 0.05,
}
MACHINE: dict[str, Any] = {"type": "n1-standard-2", "vcpus": 2, "memory_gb": 7.5, "disk_gb": 30}
HOURS_PER_MONTH = 730.0
RATES = (10, 100, 1_000, 10_000)  # files per second
# Assumptions, not measurements (docs/capacity.md says why): the Dataflow runner's work per element (the SDK
# harness around each DoFn call, coders at fusion breaks, the runner harness talking to Streaming Engine) as a
# multiple of the job's own CPU; and the share of a worker's CPU to plan for.
OVERHEAD = (2.0, 5.0)
USABLE = 0.6
# The timestamp attribute a Cloud Logging sink's messages carry and the job reads (a Pub/Sub message's bytes are
# its data, its attributes, 20 bytes of publish time and its message id, ~16 bytes).
PUBSUB_EXTRA_BYTES = len("logging.googleapis.com/timestamp") + len("2026-06-06T12:00:00.123456789Z") + 20 + 16

GLOBAL = GlobalWindow()
SAMPLE_EVERY = 10
OBJECTS, COMMIT, MISS = "objects", "commit", "miss"
MODES = (OBJECTS, COMMIT, MISS)


# --- the keyed-state stand-in ------------------------------------------------------------------------------------


class _Cell:
    """A ``ReadModifyWriteStateSpec`` cell."""

    __slots__ = ("coder", "step", "value")

    def __init__(self, step: Stateful, coder: Any) -> None:
        self.step, self.coder, self.value = step, coder, None

    def read(self) -> Any:
        if self.value is None or self.step.mode != MISS:
            return self.value
        return self.coder.decode(self.value)

    def write(self, value: Any) -> None:
        if self.step.mode == OBJECTS:
            self.value = value
            return
        encoded = self.coder.encode(value)
        self.step.written += len(encoded)
        self.value = encoded if self.step.mode == MISS else value

    def clear(self) -> None:
        self.value = None

    def size(self) -> int:
        return 0 if self.value is None else len(self.coder.encode(self.read()))


class _Bag:
    """A ``BagStateSpec`` cell."""

    __slots__ = ("coder", "items", "step")

    def __init__(self, step: Stateful, coder: Any) -> None:
        self.step, self.coder = step, coder
        self.items: list[Any] = []

    def add(self, value: Any) -> None:
        self.step.added += 1
        if self.step.mode == OBJECTS:
            self.items.append(value)
            return
        encoded = self.coder.encode(value)
        self.step.written += len(encoded)
        self.items.append(encoded if self.step.mode == MISS else value)

    def read(self) -> Any:
        step = self.step
        step.read_items += len(self.items)
        step.reads += 1
        step.max_read = max(step.max_read, len(self.items))
        if step.mode != MISS:
            return self.items
        return [self.coder.decode(b) for b in self.items]

    def clear(self) -> None:
        self.items = []

    @property
    def value(self) -> Any:
        return self.items or None

    def size(self) -> int:
        items = self.items if self.step.mode != MISS else [self.coder.decode(b) for b in self.items]
        return sum(len(self.coder.encode(v)) for v in items)


class _Timer:
    __slots__ = ("key", "name", "step")

    def __init__(self, step: Stateful, key: Any, name: str) -> None:
        self.step, self.key, self.name = step, key, name

    def set(self, ts: Timestamp) -> None:
        self.step.set_timer(self.key, self.name, int(ts.micros))


Binding = list[tuple[str, str, str]]  # (parameter, what it is, the state or timer it names)


def _binding(method: Callable[..., Any]) -> Binding:
    """What a DoFn method's parameters ask for, read from their defaults as Beam reads them."""
    out: Binding = []
    for name, param in inspect.signature(method).parameters.items():
        default = param.default
        if isinstance(default, beam.DoFn.StateParam):
            out.append((name, "state", default.state_spec.name))
        elif isinstance(default, beam.DoFn.TimerParam):
            out.append((name, "timer", default.timer_spec.name))
        elif default is beam.DoFn.KeyParam:
            out.append((name, "key", ""))
        elif default is beam.DoFn.TimestampParam:
            out.append((name, "ts", ""))
        elif default is beam.DoFn.WindowParam:
            out.append((name, "window", ""))
    return out


class Stateful:
    """One stateful DoFn, keyed: its cells per key, its event-time timers, its output watermark. ``script`` (when
    recording) keeps what it was given, to be replayed alone."""

    def __init__(self, fn: beam.DoFn, mode: str = OBJECTS, record: bool = False) -> None:
        cls = type(fn)
        self.fn, self.mode = fn, mode
        self.specs = {v.name: v for v in vars(cls).values() if isinstance(v, BagStateSpec | ReadModifyWriteStateSpec)}
        timers = [v for v in vars(cls).values() if isinstance(v, TimerSpec)]
        self.callbacks: dict[str, tuple[Callable[..., Any], Binding]] = {}
        for t in timers:
            callback = t._attached_callback
            assert callback is not None, f"{cls.__name__}: timer {t.name} has no @on_timer callback"
            self.callbacks[t.name] = (callback, _binding(callback))
        self.process_fn, self.process_binding = cls.process, _binding(cls.process)
        self.keys: dict[Any, dict[str, Any]] = {}
        self.heap: list[tuple[int, int, Any, str]] = []
        self.due: dict[tuple[Any, str], int] = {}
        self.seq = 0
        self.written = 0
        self.added = self.read_items = self.max_read = self.reads = 0  # bag appends; items read; largest read; reads
        self.calls = {"process": 0, "timer": 0}
        self.script: list[tuple[Any, ...]] | None = [] if record else None
        self.fired: list[int] = []  # when timers fired (recording only)

    def _cells(self, key: Any) -> dict[str, Any]:
        cells = self.keys.get(key)
        if cells is None:
            cells = self.keys[key] = {}
            for name, spec in self.specs.items():
                kind = _Bag if isinstance(spec, BagStateSpec) else _Cell
                cells[name] = kind(self, spec.coder)
            for name in self.callbacks:
                cells[name] = _Timer(self, key, name)
        return cells

    def _kwargs(self, binding: Binding, key: Any, ts_us: int, window: Any) -> dict[str, Any]:
        cells = self._cells(key)
        kw: dict[str, Any] = {}
        for name, kind, ref in binding:
            if kind == "state" or kind == "timer":
                kw[name] = cells[ref]
            elif kind == "key":
                kw[name] = key
            elif kind == "ts":
                kw[name] = Timestamp(micros=ts_us)
            else:
                kw[name] = window
        return kw

    def set_timer(self, key: Any, name: str, ts_us: int) -> None:
        self.seq += 1
        self.due[(key, name)] = self.seq
        heapq.heappush(self.heap, (ts_us, self.seq, key, name))

    def process(self, key: Any, value: Any, ts_us: int) -> Iterator[tuple[Any, int]]:
        if self.script is not None:
            self.script.append((key, value, ts_us))
        self.calls["process"] += 1
        for out in self.process_fn(self.fn, (key, value), **self._kwargs(self.process_binding, key, ts_us, GLOBAL)):
            yield out, ts_us

    def advance(self, wm_us: int) -> Iterator[tuple[Any, int]]:
        """Fire every timer due by ``wm_us``, earliest first (a timer set in the past fires too)."""
        if self.script is not None:
            self.script.append((wm_us,))
        heap, due = self.heap, self.due
        while heap and heap[0][0] <= wm_us:
            t, seq, key, name = heapq.heappop(heap)
            if due.get((key, name)) != seq:
                continue
            del due[(key, name)]
            callback, binding = self.callbacks[name]
            self.calls["timer"] += 1
            if self.script is not None:
                self.fired.append(t)
            for out in callback(self.fn, **self._kwargs(binding, key, t, GLOBAL)):
                yield out, t

    def hold(self) -> int:
        """The earliest pending timer: it holds this step's output watermark."""
        heap, due = self.heap, self.due
        while heap and due.get((heap[0][2], heap[0][3])) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else 1 << 62

    def census(self) -> dict[Any, dict[str, int]]:
        """Encoded bytes per key and cell, with each cell's declared coder (empty cells and keys left out)."""
        out: dict[Any, dict[str, int]] = {}
        for key, cells in self.keys.items():
            sizes = {name: cells[name].size() for name in self.specs if cells[name].value is not None}
            if sizes:
                out[key] = sizes
        return out


def replay(step: Stateful, script: list[tuple[Any, ...]]) -> None:
    """Play a recording back into a fresh step, outputs dropped."""
    for op in script:
        if len(op) == 1:
            for _ in step.advance(op[0]):
                pass
        else:
            for _ in step.process(*op):
                pass


def _noop(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
    return iter(())


def harness_cost(step_factory: Callable[[], Stateful], calls: dict[str, int], repeats: int) -> float:
    """CPU seconds the stand-in spends on ``calls`` calls of this step's shapes, the DoFn replaced by a no-op."""
    step = step_factory()
    n = 20_000
    key = "k"
    binding_p = step.process_binding
    bindings_t = [b for _, b in step.callbacks.values()] or [binding_p]
    per_call = []
    for binding in (binding_p, bindings_t[0]):
        runs = []
        for _ in range(repeats):
            t0 = time.process_time()
            for i in range(n):
                for _ in _noop(step.fn, (key, i), **step._kwargs(binding, key, i, GLOBAL)):
                    pass
            runs.append((time.process_time() - t0) / n)
        per_call.append(min(runs))
    return calls["process"] * per_call[0] + calls["timer"] * per_call[1]


# --- the job, wired as stagewatch.stream.pipeline.build wires it ---------------------------------------------------

KV_STR = registry.get_coder(typehints.Tuple[str, typehints.Any])
KV_STAGE_SHARD = registry.get_coder(typehints.Tuple[typehints.Tuple[str, int], typehints.Any])
ANY = registry.get_coder(typehints.Any)
KV_ANY = registry.get_coder(typehints.Tuple[typehints.Any, typehints.Any])
WV_KEYED = coders.WindowedValueCoder(KV_STR, coders.GlobalWindowCoder())
WV_VOID_KEY = coders.WindowedValueCoder(KV_ANY, coders.GlobalWindowCoder())
WV_STAGE_SHARD = coders.WindowedValueCoder(KV_STAGE_SHARD, coders.GlobalWindowCoder())
WV_WINDOWED = coders.WindowedValueCoder(ANY, coders.IntervalWindowCoder())


def _unwrap(out: Any, ts: int) -> tuple[str | None, Any, int]:
    tag = None
    if isinstance(out, beam.pvalue.TaggedOutput):
        tag, out = out.tag, out.value
    if isinstance(out, TimestampedValue):
        return tag, out.value, int(out.timestamp.micros)
    return tag, out, ts


class Job:
    """The recording run: every step of the job, fed as the graph feeds it; counts, census and element bytes."""

    def __init__(self, rules: TraceRules, cfg: BaselineConfig, census_every_us: int) -> None:
        self.rules, self.cfg = rules, cfg
        self.interval = cfg.interval_us
        icfg = IncidentConfig()
        self.activity_us = int(icfg.activity_s * US_PER_S)
        self.parse = _Parse()
        self.dedup = Stateful(_FirstSeenFn(3600.0), record=True)
        self.assemble = Stateful(_AssembleFn(rules), record=True)
        self.count = Stateful(_CountBinsFn(self.interval), record=True)
        quiet = max(1, int(rules.ttl_us // self.interval))
        self.roll = Stateful(_RollFn(cfg, quiet, self.interval // 2), record=True)
        self.judge, self.judge2 = _JudgeFn(rules, cfg), _JudgeFn(rules, cfg, deferred=True)
        self.stalls = Stateful(_WatchFn(rules, None), record=True)
        self.gather = Stateful(_GatherLotFn(int(LotConfig().quiet_s * US_PER_S), None), record=True)
        self.lots = Stateful(_JudgeLotsFn(LotConfig()), record=True)
        self.track = Stateful(_TrackFn(icfg, None, self.interval // 2), record=True)
        self.tenant_of, self.tenant_counts, self.stamp = _tenant_of(self.activity_us), _TenantCounts(), \
            _StampWindowEnd(self.activity_us)
        self.stateful = {"Dedup": self.dedup, "Assemble": self.assemble, "Learn/CountBins": self.count,
                         "Learn/RollPerStage": self.roll, "Stalls": self.stalls, "Lots/GatherLot": self.gather,
                         "Lots/JudgeLots": self.lots, "Incidents/Track": self.track}
        # Recordings of the stateless steps.
        self.parse_script: list[tuple[bytes, int]] = []
        self.keying_script: list[Measured] = []
        self.judge_script: list[tuple[Any, dict[Any, Any], IntervalWindow, bool]] = []
        self.activity_script: list[TraceSummary] = []
        # Side input: snapshots by window; judging waits for its window's to be complete.
        self.snaps: dict[int, dict[Any, Any]] = {}
        self.side_bytes: dict[int, int] = {}
        self.waiting: dict[int, list[tuple[Any, int, bool]]] = {}
        self.activity: dict[int, Any] = {}
        self.counts: dict[str, int] = {}
        self.crossing: dict[str, list[int]] = {}  # boundary -> [elements, bytes]
        self.samples: dict[str, tuple[Any, list[WindowedValue]]] = {}
        self.rows: dict[str, list[int]] = {}  # BigQuery table -> [rows, JSON bytes, billed bytes]
        self.line_bytes = 0
        self.census_every_us = census_every_us
        self.next_census = -1
        self.censuses: list[dict[str, Any]] = []
        self.wm = {"assemble": -1, "roll": -1, "judge": -1, "stalls": -1}

    # -- bookkeeping
    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def _cross(self, boundary: str, coder: Any, element: Any, ts_us: int, window: Any = GLOBAL) -> None:
        wv = WindowedValue(element, Timestamp(micros=ts_us), (window,))
        size = len(coder.encode(wv))
        entry = self.crossing.setdefault(boundary, [0, 0])
        entry[0] += 1
        entry[1] += size
        if entry[0] % SAMPLE_EVERY == 0:  # kept to time the coders with
            self.samples.setdefault(boundary, (coder, []))[1].append(wv)

    def _row(self, table: str, record: Any) -> None:
        n = len(orjson.dumps(record.to_dict()))
        entry = self.rows.setdefault(table, [0, 0, 0])
        entry[0] += 1
        entry[1] += n
        entry[2] += max(n, 1024)

    # -- the source
    def line(self, raw: bytes, ts_us: int) -> None:
        self.parse_script.append((raw, ts_us))
        self.line_bytes += len(raw)
        self._count("lines")
        for out in self.parse.fn.process(raw, ts=Timestamp(micros=ts_us)):
            tag, value, t = _unwrap(out, ts_us)
            if tag is None:
                self._count("events")
                self._dedup(value, t)
            else:
                self._count(f"dead_letters_{tag}")

    def watermark(self, wm: int) -> None:
        """Every step, upstream first, to the watermark its inputs allow."""
        if self.next_census < 0:
            self.next_census = (wm // self.census_every_us + 1) * self.census_every_us
        elif wm >= self.next_census:
            self.censuses.append(self.census(self.next_census))
            self.next_census += self.census_every_us
        for _ in self.dedup.advance(wm):
            pass
        a_in = min(wm, self.dedup.hold())
        for out, t in self.assemble.advance(a_in):
            self._from_assemble(out, t)
        a_out = min(a_in, self.assemble.hold())
        for out, t in self.count.advance(a_out):
            self._from_count(out, t)
        c_out = min(a_out, self.count.hold())
        for out, t in self.roll.advance(c_out):
            self._from_roll(out, t)
        r_out = min(c_out, self.roll.hold())
        self.wm.update(assemble=a_out, roll=r_out)
        for k in sorted(w for w in self.waiting if (w + 1) * self.interval <= r_out):
            for record, t, second in self.waiting.pop(k):
                self._judge(record, t, second)
        j_out = min([a_out] + [t for items in self.waiting.values() for _, t, _ in items[:1]])
        s_in = min(a_out, j_out)
        for out, t in self.stalls.advance(s_in):
            self._from_stalls(out, t)
        s_out = min(s_in, self.stalls.hold())
        for start in sorted(w for w in self.activity if w + self.activity_us <= s_out):
            tenants = self.tenant_counts.extract_output(self.activity.pop(start))
            window = IntervalWindow(Timestamp(micros=start), Timestamp(micros=start + self.activity_us))
            for act in self.stamp.process(tenants, w=window):
                self._incident(act, start + self.activity_us - 1)
        act_out = min([s_out] + [w + self.activity_us - 1 for w in self.activity])
        for out, t in self.gather.advance(s_out):
            self._from_gather(out, t)
        g_out = min(s_out, self.gather.hold())
        for out, t in self.lots.advance(g_out):
            self._lot_record(out, t)
        l_out = min(g_out, self.lots.hold())
        for out, _ in self.track.advance(min(a_out, s_out, l_out, act_out)):
            self._count(f"incident_events_{out.event}" if isinstance(out, IncidentEvent) else "internal_errors")

    # -- the steps' outputs, routed as build() routes them
    def _dedup(self, ev: StageEvent, t: int) -> None:
        self._cross("Dedup (per event, by uid)", WV_KEYED, (ev.uid, ev), t)
        for out, t2 in self.dedup.process(ev.uid, ev, t):
            tag, value, t3 = _unwrap(out, t2)
            if tag is None:
                self._cross("Assemble (per event, by uid)", WV_KEYED, (value.uid, value), t3)
                for out2, t4 in self.assemble.process(value.uid, value, t3):
                    self._from_assemble(out2, t4)

    def _from_assemble(self, out: Any, t: int) -> None:
        tag, value, t = _unwrap(out, t)
        if tag is None:  # a measurement: learned and judged
            self._count("measurements")
            self.keying_script.append(value)
            key = (baseline_stage(value.m, self.rules), _shard_of(value.file.uid))
            kv = (key, (value.now_us // self.interval, value.file.tenant, value.m.value_ms))
            self._cross("Learn/CountBins (per measurement, by stage and shard)", WV_STAGE_SHARD, kv, t)
            for out2, t2 in self.count.process(kv[0], kv[1], t):
                self._from_count(out2, t2)
            self._to_judge(value, t)
        elif tag == PROGRESS:
            self._count("progress")
            self._to_judge(value, t)
            self._to_stalls(value, t)
        elif tag == SUMMARIES:
            self._to_stalls(value, t)
        elif tag == FAILURES:
            self._anomaly(value, t)
        else:
            self._count(f"dead_letters_{'late' if tag == LATE else tag}")

    def _from_count(self, out: Any, t: int) -> None:
        tag, kv, t = _unwrap(out, t)
        if tag is not None:
            self._count("internal_errors")
            return
        self._cross("Learn/RollPerStage (per stage, shard and interval)", WV_KEYED, kv, t)
        for out2, t2 in self.roll.process(kv[0], kv[1], t):
            self._from_roll(out2, t2)

    def _from_roll(self, out: Any, t: int) -> None:
        tag, value, t = _unwrap(out, t)
        if tag is not None:
            self._count("internal_errors")
            return
        key, snap = value
        k = t // self.interval
        self.snaps.setdefault(k, {})[key] = snap
        self.side_bytes[k] = self.side_bytes.get(k, 0) + len(WV_WINDOWED.encode(
            WindowedValue((key, snap), Timestamp(micros=t), (self._window(k),))))

    def _window(self, k: int) -> IntervalWindow:
        return IntervalWindow(Timestamp(micros=k * self.interval), Timestamp(micros=(k + 1) * self.interval))

    def _to_judge(self, record: Measured | Progress, t: int, second: bool = False) -> None:
        k = t // self.interval
        if (k + 1) * self.interval <= self.wm["roll"]:
            self._judge(record, t, second)
            return
        # Held until the snapshots of its window are complete: on Dataflow, kept in Streaming Engine meanwhile.
        self._cross("Judge: held for the side input (per measurement and progress)", WV_WINDOWED, record, t,
                    self._window(k))
        self.waiting.setdefault(k, []).append((record, t, second))

    def _judge(self, record: Measured | Progress, t: int, second: bool) -> None:
        k = t // self.interval
        snaps, window = self.snaps.get(k, {}), self._window(k)
        self.judge_script.append((record, snaps, window, second))
        for out in (self.judge2 if second else self.judge).process(record, snaps, w=window):
            tag, value, t2 = _unwrap(out, t)
            if tag is None or tag == DEADLINES:
                self._to_stalls(value, t2)
            elif tag == DEFERRED:
                self._count("deferred")
                self._to_judge(value, t2, second=True)
            else:
                self._count("internal_errors")

    def _to_stalls(self, record: Any, t: int) -> None:
        key = _uid_of(record)
        self._cross("Stalls (progress, deadlines, summaries, verdicts; by uid)", WV_KEYED, (key, record), t)
        for out, t2 in self.stalls.process(key, record, t):
            self._from_stalls(out, t2)

    def _from_stalls(self, out: Any, t: int) -> None:
        tag, value, t = _unwrap(out, t)
        if tag is None:
            self._anomaly(value, t)
        elif tag == STALLED_SUMMARIES:
            self._count("summaries")
            self._row("traces", value)
            self.activity_script.append(value)
            for item in self.tenant_of(value):
                start = t // self.activity_us * self.activity_us
                acc = self.activity.get(start) or self.tenant_counts.create_accumulator()
                self.activity[start] = self.tenant_counts.add_input(acc, item)
                self._cross("Incidents/TenantsPerInterval (per summary, before combiner lifting)", WV_VOID_KEY,
                            (None, item), t)
            if value.lot:
                self._cross("Lots/GatherLot (per summary with a lot, by lot)", WV_KEYED, (value.lot, value), t)
                for out2, t2 in self.gather.process(value.lot, value, t):
                    self._from_gather(out2, t2)
        elif tag == ARRIVALS:
            self._count("arrivals")
            self._incident(value, t)
        else:
            self._count("internal_errors")

    def _anomaly(self, a: Anomaly, t: int) -> None:
        self._count("anomalies")
        self._row("anomalies", a)
        self._incident(a, t)

    def _from_gather(self, out: Any, t: int) -> None:
        tag, value, t = _unwrap(out, t)
        if tag is None:
            self._lot(value[1], t)
        else:
            self._count("internal_errors")

    def _lot(self, value: Any, t: int) -> None:
        self._cross("Lots/JudgeLots (per lot; one key)", WV_KEYED, ("lots", value), t)
        for out, t2 in self.lots.process("lots", value, t):
            self._lot_record(out, t2)

    def _lot_record(self, out: Any, t: int) -> None:
        _, record, t = _unwrap(out, t)
        if isinstance(record, LotRecord):
            self._count("lot_records")
            self._row("lots", record)
            self._incident(record, t)

    def _incident(self, record: Any, t: int) -> None:
        self._cross("Incidents/Track (anomalies, arrivals, lots, activity; one key)", WV_KEYED,
                    ("incidents", record), t)
        for out, _ in self.track.process("incidents", record, t):
            self._count(f"incident_events_{out.event}" if isinstance(out, IncidentEvent) else "internal_errors")

    # -- state
    def census(self, at_us: int) -> dict[str, Any]:
        by_step = {name: step.census() for name, step in self.stateful.items()}
        open_uids = {k for k, cells in by_step["Assemble"].items() if "trace" in cells or "buffer" in cells}
        per_open = [sum(sum(by_step[s].get(uid, {}).values()) for s in ("Dedup", "Assemble", "Stalls"))
                    for uid in open_uids]
        uids = set(by_step["Dedup"]) | set(by_step["Assemble"]) | set(by_step["Stalls"])
        per_uid_total = sum(sum(by_step[s].get(uid, {}).values()) for s in ("Dedup", "Assemble", "Stalls")
                            for uid in uids)
        return {
            "at_us": at_us,
            "open_files": len(open_uids),
            "uids_with_state": len(uids),
            "per_open_file": per_open,
            "uid_state_total": per_uid_total,
            "steps": {name: {"keys": len(c), "bytes": [sum(v.values()) for v in c.values()],
                             "cells": _cell_totals(c)} for name, c in by_step.items()},
            "roll": {str(k): v for k, v in by_step["Learn/RollPerStage"].items()},
            "rolls": {k: _store_rows(self.roll.keys[k]["store"].read()) for k in by_step["Learn/RollPerStage"]},
        }


def _cell_totals(census: dict[Any, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for cells in census.values():
        for name, n in cells.items():
            out[name] = out.get(name, 0) + n
    return out


def _store_rows(store: Any) -> dict[str, int]:
    if store is None:
        return {"rows": 0, "capacity": 0, "snapshots": 0}
    return {"rows": len(store.bank.rows), "capacity": len(store.bank.steps), "snapshots": len(store.snaps)}


class _Parse:
    """The parse step as the job builds it (a file source: lines stamped with their arrival time)."""

    def __init__(self) -> None:
        from stagewatch.stream.steps.parse import _ParseFn

        self.fn = _ParseFn(Parser(), True, TimeBounds())


# --- measuring ---------------------------------------------------------------------------------------------------


SCENARIOS: dict[str, dict[str, Any]] = {
    # A simulated day: diurnal load, 12 tenants, the five standard faults (what docs/measured.md's days are).
    "day": {"start": "2026-06-06T00:00:00Z", "hours": 24.0, "faults": STANDARD_FAULTS},
    # An hour at the daily peak, ~20x the day's peak rate, with the worst case for the one-key steps: every
    # file's ``analyse`` 8x slower for 20 minutes (the incident key hears of most files).
    "dense": {"start": "2026-06-06T13:30:00Z", "hours": 1.0,
              "faults": (Fault("stage_slowdown", 0.4, 20, SLOW_STAGE, "analyse"),)},
}


def simulated_input(workdir: Path, name: str, seed: int, rate: float, hours: float) -> tuple[Path, dict[str, Any]]:
    sc = SCENARIOS[name]
    out = workdir / f"{name}-{seed}-{hours:g}h-{rate:g}"
    if not (out / "manifest.json").exists():
        simulate_to_dir(SimConfig(seed=seed, start=sc["start"], hours=hours, peak_rate_per_min=rate,
                                  faults=sc["faults"]), out)
    return out / "logs.jsonl", orjson.loads((out / "manifest.json").read_bytes())


def record(path: Path, step_s: float, census_s: float) -> Job:
    """The recording run over the file's stream (the watermark advanced by ``step_s``, never to infinity: state
    at the end is state in flight)."""
    stream, sample, _ = file_stream(str(path), 60 * US_PER_S, int(step_s * US_PER_S))
    rules = TraceRules(infer_from_events(sample), stall_factor=8.0, ttl_s=3600.0)
    job = Job(rules, BaselineConfig(half_life_s=10800.0, line="body"), int(census_s * US_PER_S))
    for event in stream._events:
        name = type(event).__name__
        if name == "ElementEvent":
            for tv in event.timestamped_values:
                job.line(tv.value, int(tv.timestamp.micros))
        elif name == "WatermarkEvent" and event.new_watermark < MAX_TIMESTAMP:
            job.watermark(int(event.new_watermark.micros))
    job.censuses.append(job.census(job.wm["assemble"]))
    return job


def _factories(job: Job) -> dict[str, Callable[[str], Stateful]]:
    rules, cfg, interval = job.rules, job.cfg, job.interval
    quiet = max(1, int(rules.ttl_us // interval))
    return {
        "Dedup": lambda m: Stateful(_FirstSeenFn(3600.0), m),
        "Assemble": lambda m: Stateful(_AssembleFn(rules), m),
        "Learn/CountBins": lambda m: Stateful(_CountBinsFn(interval), m),
        "Learn/RollPerStage": lambda m: Stateful(_RollFn(cfg, quiet, interval // 2), m),
        "Stalls": lambda m: Stateful(_WatchFn(rules, None), m),
        "Lots/GatherLot": lambda m: Stateful(_GatherLotFn(int(LotConfig().quiet_s * US_PER_S), None), m),
        "Lots/JudgeLots": lambda m: Stateful(_JudgeLotsFn(LotConfig()), m),
        "Incidents/Track": lambda m: Stateful(_TrackFn(IncidentConfig(), None, interval // 2), m),
    }


def _stateless(job: Job) -> dict[str, Callable[[], None]]:
    """The steps without state, each replaying its recording."""
    rules, interval = job.rules, job.interval

    def parse() -> None:
        fn = _Parse().fn
        for raw, ts in job.parse_script:
            for _ in fn.process(raw, ts=Timestamp(micros=ts)):
                pass

    def keying() -> None:  # LearnBaselines' KeyByBaseline: the same two calls
        for r in job.keying_script:
            ((baseline_stage(r.m, rules), _shard_of(r.file.uid)), (r.now_us // interval, r.file.tenant, r.m.value_ms))

    def judge() -> None:
        first, second = _JudgeFn(rules, job.cfg), _JudgeFn(rules, job.cfg, deferred=True)
        for record, snaps, window, deferred in job.judge_script:
            for _ in (second if deferred else first).process(record, snaps, w=window):
                pass

    def activity() -> None:  # TenantOf + TenantsPerInterval (the combine), per summary
        counts, tenant_of = _TenantCounts(), _tenant_of(job.activity_us)
        acc: dict[Any, int] = {}
        for s in job.activity_script:
            for item in tenant_of(s):
                acc = counts.add_input(acc, item)

    return {"Parse": parse, "Learn/KeyByBaseline": keying, "Judge (both passes)": judge,
            "Incidents/TenantsPerInterval": activity}


def time_steps(job: Job, repeats: int) -> dict[str, Any]:
    """CPU seconds per step, each replayed alone ``repeats`` times per mode (alternating), minus the stand-in's own
    cost; and the state bytes each mode encoded."""
    factories, stateless = _factories(job), _stateless(job)
    runs: dict[str, dict[str, list[float]]] = {name: {m: [] for m in MODES} for name in factories}
    runs.update({name: {OBJECTS: []} for name in stateless})
    written: dict[str, dict[str, int]] = {name: {} for name in factories}
    floors = {name: harness_cost(lambda f=f: f(OBJECTS), job.stateful[name].calls, 3)  # type: ignore[misc]
              for name, f in factories.items()}
    for _ in range(repeats):
        for name, factory in factories.items():
            for mode in MODES:
                step = factory(mode)
                script = job.stateful[name].script or []
                t0 = time.process_time()
                replay(step, script)
                runs[name][mode].append(time.process_time() - t0 - floors[name])
                written[name][mode] = step.written
        for name, fn in stateless.items():
            t0 = time.process_time()
            fn()
            runs[name][OBJECTS].append(time.process_time() - t0)
    return {"runs": runs, "floors": floors, "written": written}


def time_backtest(path: Path, repeats: int) -> tuple[list[float], int]:
    """CPU seconds of the backtest over the file, and its anomalies (the stand-in run should make as many)."""
    out, found = [], [0]

    def count(a: Anomaly) -> None:
        found[0] += 1

    for _ in range(repeats):
        found[0] = 0
        t0 = time.process_time()
        replay_files([str(path)], processes=1, on_anomaly=count)
        out.append(time.process_time() - t0)
    return out, found[0]


def time_coders(job: Job, repeats: int) -> dict[str, float]:
    """µs to encode and decode one element at each boundary (a sample of every ``SAMPLE_EVERY``-th element), with
    the coder Beam gives it: what the SDK spends on each side of a shuffle, or of a wait in Streaming Engine."""
    out = {}
    for boundary, (coder, sample) in job.samples.items():
        runs = []
        for _ in range(repeats):
            t0 = time.process_time()
            for wv in sample:
                coder.decode(coder.encode(wv))
            runs.append((time.process_time() - t0) / len(sample) * 1e6)
        out[boundary] = statistics.median(runs)
    return out


class _Touch(beam.DoFn):
    """A stateful DoFn that reads and writes one cell per element (``touch``) or only declares it."""

    CELL = ReadModifyWriteStateSpec("n", coders.VarIntCoder())

    def __init__(self, touch: bool) -> None:
        self._touch = touch

    def process(self, kv: Any, cell: Any = beam.DoFn.StateParam(CELL)) -> Iterator[Any]:
        if self._touch:
            cell.write((cell.read() or 0) + 1)
        return iter(())


def sdk_costs(events: list[StageEvent], repeats: int) -> dict[str, Any]:
    """What Beam's own Python SDK harness costs per element, on Beam's portable in-process runner (``FnApiRunner``,
    batch): one more fused ``Map`` (11 against 1), and a stateful DoFn that reads and writes a cell against one
    that does not (the state API's round trip: this runner gives the SDK no state cache, so it is the uncached
    case). The same SDK code runs on a Dataflow worker; the runner behind it is not Dataflow's."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    keyed = [(ev.uid, ev) for ev in events]

    def maps(k: int) -> float:
        t0 = time.process_time()
        with beam.Pipeline(runner=FnApiRunner()) as p:
            pc = p | beam.Create(events, reshuffle=False)
            for j in range(k):
                pc = pc | f"Map{j}" >> beam.Map(lambda x: x)
        return time.process_time() - t0

    def stateful(touch: bool) -> float:
        t0 = time.process_time()
        with beam.Pipeline(runner=FnApiRunner()) as p:
            _ = (p | beam.Create(keyed, reshuffle=False)
                 | beam.Map(lambda kv: kv).with_output_types(typehints.Tuple[str, typehints.Any])
                 | beam.ParDo(_Touch(touch)))
        return time.process_time() - t0

    n = len(events)
    per_map, per_state = [], []
    for _ in range(repeats):
        per_map.append((maps(11) - maps(1)) / 10 / n * 1e6)
        per_state.append((stateful(True) - stateful(False)) / n * 1e6)
    return {"elements": n, "map_us": statistics.median(per_map), "map_us_runs": per_map,
            "state_rw_us": statistics.median(per_state), "state_rw_us_runs": per_state}


# --- figures -------------------------------------------------------------------------------------------------


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values)
    return {"n": len(ordered), "median": float(statistics.median(ordered)),
            "p99": float(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]), "max": float(ordered[-1]),
            "mean": float(sum(ordered) / len(ordered))}


def _spread(seconds: list[float], per: int) -> dict[str, float]:
    us = [s / per * 1e6 for s in seconds]
    return {"median_us": statistics.median(us), "min_us": min(us), "max_us": max(us)}


def _visits(job: Job) -> float:
    """Element visits of the graph's ParDos and Maps per line (fused steps included; flattens are free): read off
    the step list of ``stagewatch.stream.pipeline.build`` against the counts of this run."""
    c, cross = job.counts, {k.split(" ")[0]: v[0] for k, v in job.crossing.items()}
    per_event = 2  # KeyByUid, then the stateful ParDo: Dedup, and again Assemble
    per_measurement = 4  # KeyByBaseline, TypedKeys, MeasurementWindows (CountBins and Judge are counted below)
    per_progress = 4  # MeasurementWindows, TagProgress, GlobalProgress, Typed
    visits = (c["lines"] + per_event * (c.get("events", 0) + cross.get("Assemble", 0))
              + per_measurement * c.get("measurements", 0) + per_progress * c.get("progress", 0)
              + cross.get("Learn/CountBins", 0) + 2 * cross.get("Learn/RollPerStage", 0)
              + 3 * cross.get("Stalls", 0)  # Tag*, Global*, Typed; the ParDo below
              + sum(step.calls["process"] + step.calls["timer"] for step in job.stateful.values())
              - job.stateful["Dedup"].calls["process"] - job.stateful["Assemble"].calls["process"]
              + len(job.judge_script)
              + 8 * c.get("summaries", 0) + 4 * c.get("anomalies", 0))  # Lots and activity keying, sinks
    return visits / c["lines"]


def _per_window(ops: list[tuple[Any, ...]], width_us: int) -> Counter[int]:
    return Counter(op[-1] // width_us for op in ops if len(op) > 1)


def hot_keys(job: Job) -> dict[str, Any]:
    """Elements per line into the busiest key of each keyed step; per 5-minute window for the one-key steps."""
    lines = job.counts["lines"]
    width = 300 * US_PER_S
    lines_w = Counter(ts // width for _, ts in job.parse_script)
    out: dict[str, Any] = {}
    for name, step in job.stateful.items():
        ops = [op for op in step.script or [] if len(op) > 1]
        keys = Counter(op[0] for op in ops)
        if not keys:
            continue
        key, n = keys.most_common(1)[0]
        by_w = _per_window(ops, width)
        busiest = max(by_w, key=lambda w: by_w[w])
        firings_w = Counter(t // width for t in step.fired)
        out[name] = {"keys": len(keys), "busiest_key": str(key), "elements_per_line": n / lines,
                     "busiest_window_elements_per_line": by_w[busiest] / max(1, lines_w.get(busiest, 0)),
                     "busiest_window_lines_per_s": lines_w.get(busiest, 0) / 300,
                     "busiest_window_firings_per_s": firings_w.get(busiest, 0) / 300,
                     "bag_items_read_per_element": step.read_items / max(1, len(ops)),
                     "bag_items_read": step.read_items, "bag_reads": step.reads, "bag_items_added": step.added,
                     "largest_bag_read": step.max_read, "timer_firings_per_line": step.calls["timer"] / lines}
    return out


def figures(job: Job, manifest: dict[str, Any], timing: dict[str, Any], backtest: tuple[list[float], int],
            coder_us: dict[str, float]) -> dict[str, Any]:
    lines, files = job.counts["lines"], manifest["files"]
    steps: dict[str, Any] = {}
    for name, by_mode in timing["runs"].items():
        steps[name] = {mode: _spread(secs, lines) for mode, secs in by_mode.items() if secs}
        if name in job.stateful:
            step = job.stateful[name]
            steps[name]["calls_per_line"] = {k: v / lines for k, v in step.calls.items()}
            steps[name]["harness_us_per_line_subtracted"] = timing["floors"][name] / lines * 1e6
            steps[name]["state_bytes_written_per_line"] = timing["written"][name].get(COMMIT, 0) / lines
    total = {mode: sum(s[mode]["median_us"] if mode in s else s[OBJECTS]["median_us"] for s in steps.values())
             for mode in MODES}
    peak = max(job.censuses, key=lambda c: c["open_files"])
    last = job.censuses[-1]
    crossings = {k: {"elements_per_line": n / lines, "bytes_per_element": b / n, "bytes_per_line": b / lines,
                     "coder_us_per_element": coder_us.get(k, 0.0)} for k, (n, b) in job.crossing.items()}
    side = list(job.side_bytes.values())
    stage_state = {
        name: {"keys_at_peak": peak["steps"][name]["keys"],
               "bytes_per_key_at_peak": _dist(peak["steps"][name]["bytes"]),
               "total_at_peak": sum(peak["steps"][name]["bytes"]), "cells_at_peak": peak["steps"][name]["cells"],
               "max_key_any_census": max((max(c["steps"][name]["bytes"], default=0) for c in job.censuses),
                                         default=0)}
        for name in job.stateful
    }
    rolls = last["rolls"]
    roll_bytes = {k: sum(v.values()) for k, v in last["roll"].items()}
    per_row = [roll_bytes[str(k)] / r["rows"] for k, r in rolls.items() if r["rows"] and str(k) in roll_bytes]
    return {
        "input": {**{k: manifest[k] for k in ("seed", "start", "hours", "files", "lines")},
                  "lines_per_file": lines / files, "events": job.counts.get("events", 0),
                  "mean_line_bytes": job.line_bytes / lines,
                  "measurements_per_line": job.counts.get("measurements", 0) / lines,
                  "anomalies_per_file": job.counts.get("anomalies", 0) / files},
        "counts": job.counts,
        "cpu_us_per_line": {"steps": steps, "total": total},
        "backtest_cpu_us_per_line": _spread(backtest[0], lines),
        "anomalies": {"stand_in": job.counts.get("anomalies", 0), "backtest": backtest[1]},
        "state": {
            "census_every_s": job.census_every_us / US_PER_S,
            "peak_census_at": _iso(peak["at_us"]), "open_files_at_peak": peak["open_files"],
            "files_per_s_around_peak": peak_rate_files_per_s(job, peak["at_us"]),
            "uids_with_state_at_peak": peak["uids_with_state"],
            "per_open_file": _dist(peak["per_open_file"]),
            "uid_state_total_at_peak": peak["uid_state_total"],
            "steps": stage_state,
            "baseline_roll_per_stage_at_end": {"bytes": _dist(list(roll_bytes.values())), "stores": rolls},
            "baseline_bytes_per_used_row": _dist(per_row),
            "open_files_by_census": [(_iso(c["at_us"]), c["open_files"], c["uids_with_state"]) for c in job.censuses],
        },
        "shuffle": {"crossings": crossings,
                    "bytes_per_line": sum(c["bytes_per_line"] for c in crossings.values()),
                    "coder_us_per_line": sum(c["coder_us_per_element"] * c["elements_per_line"]
                                             for c in crossings.values()),
                    "side_input_bytes_per_window": _dist([float(x) for x in side]),
                    "snapshots_per_window": _dist([float(len(v)) for v in job.snaps.values()])},
        "hot_keys": hot_keys(job),
        "visits_per_line": _visits(job),
        "stateful_calls_per_line": sum(sum(s.calls.values()) for s in job.stateful.values()) / lines,
        "bigquery_rows": {t: {"rows_per_file": n / files, "json_bytes_per_row": b / n,
                              "billed_bytes_per_file": bb / files} for t, (n, b, bb) in job.rows.items()},
    }


def peak_rate_files_per_s(job: Job, at_us: int) -> float:
    """Files first seen in the hour before ``at_us``, per second (the rate the census's state comes from)."""
    first: set[str] = set()
    parser = Parser()
    for raw, ts in job.parse_script:
        if ts > at_us:
            break
        if ts >= at_us - 3600 * US_PER_S:
            parsed = parser.parse(raw)
            if isinstance(parsed, StageEvent):
                first.add(parsed.uid)
    return len(first) / 3600.0


def _iso(t_us: int) -> str:
    return datetime.datetime.fromtimestamp(t_us / US_PER_S, datetime.UTC).strftime("%H:%M")


ONE_KEY = ("Incidents/Track", "Lots/JudgeLots")  # steps with a single key: they cannot be spread over workers


def model(fig: dict[str, Any], sdk: dict[str, Any] | None, usual: dict[str, Any]) -> dict[str, Any]:
    """Workers and monthly cost at each rate, from the measured figures, the prices and the assumptions above. The
    steps that run on many keys scale with the lines; the incident key is added as ``_track_at`` has it at the
    ``usual`` input's mean share of lines that reach it, up to the one core a key can use (its burst figures are
    beside, not in, the worker count)."""
    lines_per_file = fig["input"]["lines_per_file"]
    steps = fig["cpu_us_per_line"]["steps"]
    job_us = fig["cpu_us_per_line"]["total"][COMMIT]
    spread_us = job_us - sum(steps[n][COMMIT]["median_us"] for n in ONE_KEY if n in steps)
    shuffle = fig["shuffle"]["bytes_per_line"]
    msg = fig["input"]["mean_line_bytes"] + PUBSUB_EXTRA_BYTES
    bq = sum(t["billed_bytes_per_file"] for t in fig["bigquery_rows"].values())
    worker_month = (MACHINE["vcpus"] * PRICES["vcpu_hour"] + MACHINE["memory_gb"] * PRICES["gb_hour"]
                    + MACHINE["disk_gb"] * PRICES["pd_gb_hour"]) * HOURS_PER_MONTH
    seconds = HOURS_PER_MONTH * 3600
    basis: dict[str, Any] = {"job_us_per_line": job_us, "spread_us_per_line": spread_us,
                             "worker_month_usd": worker_month, "pubsub_message_bytes": msg}
    if sdk is not None:
        fused = fig["visits_per_line"] * sdk["map_us"] + fig["shuffle"]["coder_us_per_line"]
        basis["sdk_fused_and_coders_us_per_line"] = fused
        basis["factor_sdk_floor"] = (spread_us + fused) / spread_us
        basis["factor_uncached_state"] = (spread_us + fused + fig["stateful_calls_per_line"] * sdk["state_rw_us"]) \
            / spread_us
    rows = []
    share = usual["hot_keys"]["Incidents/Track"]["elements_per_line"]
    burst, mean = _track_at(fig, None), _track_at(fig, share)
    for rate in RATES:
        lines_s = rate * lines_per_file
        key = mean(rate)
        # The one key runs on one core at most: past that it falls behind, whatever the number of workers.
        cores = [lines_s * spread_us * 1e-6 * f / USABLE + min(1.0, key["cores"]) for f in OVERHEAD]
        workers = [max(1, -(-c // MACHINE["vcpus"])) for c in cores]
        se_gb = (shuffle + msg) * lines_s * seconds / 1e9
        pubsub_tib = 2 * msg * lines_s * seconds / 2**40
        pubsub = max(0.0, pubsub_tib - PRICES["pubsub_free_gib"] / 1024) * PRICES["pubsub_per_tib"]
        bq_gb = bq * rate * seconds / 1e9
        cost = {
            "workers": [w * worker_month for w in workers],
            "streaming_engine": se_gb * PRICES["streaming_engine_per_gb"],
            "pubsub": pubsub,
            "bigquery_streaming_inserts": bq_gb * PRICES["bq_streaming_per_gb"],
        }
        others = cost["streaming_engine"] + cost["pubsub"] + cost["bigquery_streaming_inserts"]
        rows.append({"files_per_s": rate, "lines_per_s": lines_s, "job_cores": lines_s * spread_us * 1e-6,
                     "cores": cores, "workers": workers, "streaming_engine_gb_month": se_gb,
                     "pubsub_tib_month": pubsub_tib, "bigquery_gb_month": bq_gb, "cost": cost,
                     "total": [w + others for w in cost["workers"]], "incident_key": key,
                     "incident_key_burst": burst(rate)})
    first = rows[0]  # its cores grow with the square of the rate
    whole = {f"{v}{suffix}": first["files_per_s"] / max(first[k][c], 1e-12) ** 0.5
             for v, k in (("mean", "incident_key"), ("burst", "incident_key_burst"))
             for suffix, c in (("", "cores"), ("_without_reencoding", "cores_without_reencoding"))}
    return {"basis": basis, "rows": rows, "incident_key_whole_core_files_per_s": whole}


def _track_at(fig: dict[str, Any], share: float | None) -> Callable[[float], dict[str, float]]:
    """The incident key (``_TrackFn``) at ``rate`` files/s when ``share`` elements per line reach it, or (None) in a
    burst like the input's busiest 5 minutes for it. Each timer firing reads, sorts and (in commit mode) re-encodes
    the whole buffer -- what came in the last ~450 s: the hold, and the judging step holding the watermark back
    until its interval's snapshots are complete --, and it fires about once per element that reaches it (its timer
    follows the earliest buffered element; when the watermark jumps, each one due in the jump is a firing). So its
    work per second is (firings/s) x (buffer) x (cost per buffered item), both factors growing with the rate.
    Measured here: the cost per item read (commit mode), the bytes per item written, the seconds of arrivals the
    largest buffer held and the firings per arriving element, all in the input's busiest 5 minutes for the key."""
    lines = fig["input"]["lines"]
    h = fig["hot_keys"]["Incidents/Track"]
    cpu = fig["cpu_us_per_line"]["steps"]["Incidents/Track"]
    per_item_us = cpu[COMMIT]["median_us"] * lines / max(1, h["bag_items_read"])
    per_item_us_objects = cpu[OBJECTS]["median_us"] * lines / max(1, h["bag_items_read"])
    per_item_bytes = cpu["state_bytes_written_per_line"] * lines / max(1, h["bag_items_added"])
    arrivals = h["busiest_window_elements_per_line"] * h["busiest_window_lines_per_s"]
    held_s = h["largest_bag_read"] / max(arrivals, 1e-9)
    per_arrival = h["busiest_window_firings_per_s"] / max(arrivals, 1e-9)
    per_line = h["busiest_window_elements_per_line"] if share is None else share

    def at(rate: float) -> dict[str, float]:
        arriving = per_line * rate * fig["input"]["lines_per_file"]
        buffered, firings = arriving * held_s, arriving * per_arrival
        return {"buffered_items": buffered, "firings_per_s": firings,
                "cores": firings * buffered * per_item_us * 1e-6,
                "cores_without_reencoding": firings * buffered * per_item_us_objects * 1e-6,
                "mb_written_per_s": firings * buffered * per_item_bytes / 1e6, "per_item_us": per_item_us,
                "per_item_bytes": per_item_bytes, "held_s": held_s, "firings_per_arrival": per_arrival}
    return at


# --- output ------------------------------------------------------------------------------------------------------


def _input_md(name: str, fig: dict[str, Any]) -> list[str]:
    i, cpu, st, sh = fig["input"], fig["cpu_us_per_line"], fig["state"], fig["shuffle"]
    out = [
        f"## Input `{name}`", "",
        f"Seed {i['seed']}, from {i['start']}, {i['hours']:g} h: {i['files']:,} files, {i['lines']:,} lines "
        f"({i['lines_per_file']:.2f} lines per file; {i['mean_line_bytes']:.0f} bytes per line; "
        f"{i['measurements_per_line']:.2f} measurements per line; {i['anomalies_per_file']:.3f} anomalies per file).",
        "", "CPU per line of the job's own code, µs (median of the repeats [min–max]):", "",
        "| step | objects | commit | miss | calls per line (process / timer) | state bytes written per line |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for step, s in cpu["steps"].items():
        cells = " | ".join(f"{s[m]['median_us']:.2f} [{s[m]['min_us']:.2f}–{s[m]['max_us']:.2f}]" if m in s else "—"
                           for m in MODES)
        calls = s.get("calls_per_line")
        call_text = f"{calls['process']:.2f} / {calls['timer']:.2f}" if calls else "—"
        written = f"{s['state_bytes_written_per_line']:,.0f}" if "state_bytes_written_per_line" in s else "—"
        out.append(f"| {step} | {cells} | {call_text} | {written} |")
    t, b = cpu["total"], fig["backtest_cpu_us_per_line"]
    out += [f"| **total** | **{t[OBJECTS]:.1f}** | **{t[COMMIT]:.1f}** | **{t[MISS]:.1f}** | | |", "",
            f"Backtest (`replay_files`, one process) on the same file: {b['median_us']:.1f} µs per line "
            f"[{b['min_us']:.1f}–{b['max_us']:.1f}]. Anomalies: {fig['anomalies']['stand_in']:,} from the job's "
            f"steps run here, {fig['anomalies']['backtest']:,} from the backtest.", "",
            f"State at the census with the most open files ({st['peak_census_at']} event time: "
            f"{st['open_files_at_peak']:,} open files, {st['uids_with_state_at_peak']:,} uids with state, "
            f"~{st['files_per_s_around_peak']:.2f} files/s in the hour before): per open file (Dedup + Assemble + "
            f"Stalls) median {st['per_open_file']['median']:.0f} B, p99 {st['per_open_file']['p99']:.0f} B, max "
            f"{st['per_open_file']['max']:.0f} B; all uid-keyed state {st['uid_state_total_at_peak'] / 1e6:.2f} MB.",
            "", "| step | keys | bytes per key: median / p99 / max | total | largest key, any census |",
            "|---|---:|---|---:|---:|"]
    for step, s in st["steps"].items():
        d = s["bytes_per_key_at_peak"]
        out.append(f"| {step} | {s['keys_at_peak']:,} | {d['median']:,.0f} / {d['p99']:,.0f} / {d['max']:,.0f} | "
                   f"{s['total_at_peak']:,} | {s['max_key_any_census']:,} |")
    r, pr = st["baseline_roll_per_stage_at_end"]["bytes"], st["baseline_bytes_per_used_row"]
    out += ["", f"Baseline roll per baseline stage at the end: median {r['median']:,.0f} B, max {r['max']:,.0f} B "
            f"over {r['n']} stages; per used baseline key (stage, or stage x tenant): median {pr['median']:,.0f} B.",
            "", "| boundary (shuffle, or held in Streaming Engine) | elements per line | bytes per element | "
            "bytes per line | encode + decode, µs per element |", "|---|---:|---:|---:|---:|"]
    for boundary, c in sh["crossings"].items():
        out.append(f"| {boundary} | {c['elements_per_line']:.3f} | {c['bytes_per_element']:.0f} | "
                   f"{c['bytes_per_line']:.1f} | {c['coder_us_per_element']:.2f} |")
    sd, sn = sh["side_input_bytes_per_window"], sh["snapshots_per_window"]
    out += [f"| **total** | | | **{sh['bytes_per_line']:.0f}** | **{sh['coder_us_per_line']:.1f} µs per line** |",
            "", f"Snapshots side input per 5-minute window: median {sn['median']:.0f} snapshots, "
            f"{sd['median']:,.0f} B (max {sd['max']:,.0f} B).", "",
            "| keyed step | keys | elements per line: into its busiest key / into the step in its busiest 5 min | "
            "bag items read per item added | largest bag read | timer firings per line |",
            "|---|---:|---|---:|---:|---:|"]
    for step, h in fig["hot_keys"].items():
        out.append(f"| {step} | {h['keys']:,} | {h['elements_per_line']:.4f} / "
                   f"{h['busiest_window_elements_per_line']:.4f} | {h['bag_items_read_per_element']:.1f} | "
                   f"{h['largest_bag_read']:,} | {h['timer_firings_per_line']:.3f} |")
    out += ["", f"Graph element visits per line ≈ {fig['visits_per_line']:.1f}; stateful calls (process + timer) "
            f"per line {fig['stateful_calls_per_line']:.2f}.", ""]
    return out


def markdown(figs: dict[str, Any], command: str) -> str:
    out = ["# Capacity figures (generated by benchmarks/capacity.py)", "",
           f"`{command}` — {figs['date']}, {figs['machine']}. Read with [docs/capacity.md](../docs/capacity.md).", ""]
    for name, fig in figs["inputs"].items():
        out += _input_md(name, fig)
    sdk = figs.get("sdk")
    if sdk:
        out += ["## Beam's Python SDK, measured on its portable in-process runner", "",
                f"One more fused Map: {sdk['map_us']:.2f} µs per element "
                f"(runs {', '.join(f'{x:.2f}' for x in sdk['map_us_runs'])}); a stateful DoFn reading and writing one "
                f"cell, against one that does not: {sdk['state_rw_us']:.1f} µs per element "
                f"(runs {', '.join(f'{x:.1f}' for x in sdk['state_rw_us_runs'])}; {sdk['elements']:,} elements).", ""]
    m = figs["model"]
    basis = m["basis"]
    out += [f"## Model (CPU and bytes from input `{figs['model_input']}`, the incident key's usual share from "
            f"`{'day' if 'day' in figs['inputs'] else figs['model_input']}`; prices and assumptions in "
            "docs/capacity.md)", "",
            f"Job's own CPU {basis['job_us_per_line']:.1f} µs per line (commit), "
            f"{basis['spread_us_per_line']:.1f} without the one-key steps; one {MACHINE['type']} worker "
            f"${basis['worker_month_usd']:.2f} a month; a Pub/Sub message {basis['pubsub_message_bytes']:.0f} bytes."]
    if "factor_sdk_floor" in basis:
        out += [f" Beam's SDK around it, measured parts only (fused visits and coders): "
                f"{basis['sdk_fused_and_coders_us_per_line']:.1f} µs per line, a factor of "
                f"{basis['factor_sdk_floor']:.2f}; with every stateful call paying the uncached state round trip: "
                f"{basis['factor_uncached_state']:.1f}."]
    out += ["", "| files/s | lines/s | job cores (many keys) | cores (x2 / x5, + incident key up to 1) | "
            "n1-standard-2 workers (x2 / x5) | SE GB/month | Pub/Sub TiB/month | BigQuery GB/month | "
            "USD/month (x2 / x5) | incident key, usual and burst: items buffered, cores, MB/s rewritten |",
            "|---:|---:|---:|---|---|---:|---:|---:|---|---|"]
    for r in m["rows"]:
        out.append(f"| {r['files_per_s']:,} | {r['lines_per_s']:,.0f} | {r['job_cores']:.2f} | "
                   f"{r['cores'][0]:.1f} / {r['cores'][1]:.1f} | {r['workers'][0]:.0f} / {r['workers'][1]:.0f} | "
                   f"{r['streaming_engine_gb_month']:,.0f} | {r['pubsub_tib_month']:,.2f} | "
                   f"{r['bigquery_gb_month']:,.0f} | {r['total'][0]:,.0f} / {r['total'][1]:,.0f} | "
                   f"{_key_text(r['incident_key'])}; burst {_key_text(r['incident_key_burst'])} |")
    k, whole = m["rows"][0]["incident_key"], m["incident_key_whole_core_files_per_s"]
    out += ["", f"Incident key: {k['per_item_us']:.2f} µs and {k['per_item_bytes']:.0f} bytes per buffered item "
            f"(commit), the largest buffer held {k['held_s']:.0f} s of arrivals, {k['firings_per_arrival']:.2f} "
            f"firings per arriving element: it needs a whole core (all one key can have) at "
            f"{whole['mean']:,.0f} files/s at the usual share of lines that reach it, {whole['burst']:,.0f} files/s "
            f"in a burst ({whole['mean_without_reencoding']:,.0f} and {whole['burst_without_reencoding']:,.0f} "
            "files/s if the buffer were never encoded again: its sort alone)."]
    return "\n".join(out) + "\n"


def _key_text(k: dict[str, float]) -> str:
    over = " (**over one core**)" if k["cores"] > 1 else ""
    return f"{k['buffered_items']:,.0f}, {k['cores']:,.2f}{over}, {k['mb_written_per_s']:,.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", nargs="+", choices=sorted(SCENARIOS), default=["day", "dense"])
    ap.add_argument("--seed", type=int, default=7, help="the day's seed; the dense hour's is one more")
    ap.add_argument("--rate", type=float, default=30.0, help="the day's files per minute at its peak")
    ap.add_argument("--dense-rate", type=float, default=240.0, help="the dense hour's files per minute")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--watermark-step", type=float, default=1.0, help="seconds of event time")
    ap.add_argument("--census", type=float, default=3600.0, help="state census every this many seconds")
    ap.add_argument("--no-sdk", action="store_true", help="skip the FnApiRunner measurements")
    ap.add_argument("--workdir", default="/tmp/stagewatch-capacity")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--from-json", help="measure nothing: recompute the model and the tables from this file's figures")
    args = ap.parse_args()
    if args.from_json:
        saved: dict[str, Any] = orjson.loads(Path(args.from_json).read_bytes())
        saved["model"] = model(saved["inputs"][saved["model_input"]], saved["sdk"],
                               saved["inputs"].get("day", saved["inputs"][saved["model_input"]]))
        saved["prices"], saved["machine_type"] = PRICES, MACHINE
        saved["assumptions"] = {"overhead": OVERHEAD, "usable": USABLE}
        return _write(saved, saved.get("command", ""), args)
    figs: dict[str, Any] = {"date": datetime.date.today().isoformat(), "inputs": {},
                            "machine": f"{platform.machine()}, {platform.python_implementation()} "
                                       f"{platform.python_version()}, apache-beam {beam.__version__}",
                            "prices": PRICES, "machine_type": MACHINE,
                            "assumptions": {"overhead": OVERHEAD, "usable": USABLE}}
    events: list[StageEvent] = []
    for name in args.inputs:
        seed, rate = (args.seed, args.rate) if name == "day" else (args.seed + 1, args.dense_rate)
        path, manifest = simulated_input(Path(args.workdir), name, seed, rate, SCENARIOS[name]["hours"])
        started = time.perf_counter()
        job = record(path, args.watermark_step, args.census)
        print(f"{name}: recorded {job.counts['lines']:,} lines in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        timing = time_steps(job, args.repeats)
        fig = figures(job, manifest, timing, time_backtest(path, args.repeats), time_coders(job, args.repeats))
        figs["inputs"][name] = fig
        if not events:
            events = [op[1] for op in job.assemble.script or [] if len(op) > 1][:20_000]
        del job
    figs["sdk"] = None if args.no_sdk else sdk_costs(events, args.repeats)
    # The model reads the densest input's CPU per line: per-interval work is spread thinner there, as at 10+ files/s.
    figs["model_input"] = max(figs["inputs"], key=lambda n: figs["inputs"][n]["input"]["files"]
                              / figs["inputs"][n]["input"]["hours"])
    figs["model"] = model(figs["inputs"][figs["model_input"]], figs["sdk"],
                          figs["inputs"].get("day", figs["inputs"][figs["model_input"]]))
    figs["command"] = "python benchmarks/capacity.py " + " ".join(sys.argv[1:])
    return _write(figs, figs["command"], args)


def _write(figs: dict[str, Any], command: str, args: argparse.Namespace) -> int:
    text = markdown(figs, command)
    print(text)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(figs, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
