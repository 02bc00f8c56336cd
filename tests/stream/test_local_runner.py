"""The local runner: its fixes change nothing the job computes (each one, run with and without); every bundle still
gets a DoFn of its own; timers due when set fire in order, and only once the watermark passed them. Its three
corrections answer three bugs of Beam's runner, reproduced here on Beam's runner as shipped. It is chosen only for
local runs (or by name); its patches last as long as the run; on another Beam it patches nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, DirectRunner
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.records import dumps
from stagewatch.core.stages import infer_from_events
from stagewatch.core.timeutil import US_PER_S
from stagewatch.core.traces import TraceRules
from stagewatch.evaluation.simulate import SHORT_FAULTS, SHORT_HOURS, SHORT_START, SimConfig, simulate_to_dir
from stagewatch.stream.file_source import file_stream
from stagewatch.stream.local import LocalRunner, applied
from stagewatch.stream.local.patches import CORRECTIONS, FIXES, PATCHES, Patcher
from stagewatch.stream.pipeline import build, construct
from tests.stream import beam_bugs

pytestmark = pytest.mark.pipeline

_SEEN: list[tuple[str, int]] = []


class _CountInBundle(beam.DoFn):
    """Counts on its own instance: a DoFn shared or reused across bundles would count on."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.n = 0

    def process(self, element: Any) -> None:
        self.n += 1
        _SEEN.append((self.tag, self.n))


def test_each_bundle_gets_a_fresh_copy_of_the_graphs_dofn() -> None:
    """The runner copies a step's DoFn for every bundle; the local runner unpickles that copy from bytes
    pickled once (fix 6 in ``beam/local.py``). Each bundle must still start from the DoFn as built."""
    _SEEN.clear()
    stream = TestStream()
    for k in range(4):  # four bundles of three elements
        stream = stream.add_elements([f"e{k}-{i}" for i in range(3)]).advance_watermark_to(10 * (k + 1))
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
        events = p | stream
        events | "First" >> beam.ParDo(_CountInBundle("first"))
        events | "Second" >> beam.ParDo(_CountInBundle("second"))
    for tag in ("first", "second"):
        counts = [n for t, n in _SEEN if t == tag]
        assert len(counts) == 12, counts
        assert max(counts) == 3 and counts.count(1) == 4, counts  # every bundle counted from 0


_RELEASED: list[tuple[str, int, int]] = []  # (key, event time, bundle number)
_BUNDLES: list[int] = []


class _ReleaseOneAtATime(beam.DoFn):
    """Buffers values; each firing releases the earliest one and sets the timer at the next -- the pattern of
    ``AssembleTraces``, whose chains of due timers fix 7 fires within one bundle."""

    BUFFER = BagStateSpec("buffer", VarIntCoder())
    FIRE = TimerSpec("fire", TimeDomain.WATERMARK)

    def start_bundle(self) -> None:
        _BUNDLES.append(len(_BUNDLES))
        self.bundle = _BUNDLES[-1]

    def process(self, kv: tuple[str, int], buffer: Any = beam.DoFn.StateParam(BUFFER),
                fire: Any = beam.DoFn.TimerParam(FIRE)) -> None:
        buffer.add(kv[1])
        fire.set(Timestamp(seconds=min(buffer.read())))

    @on_timer(FIRE)
    def _fire(self, key: Any = beam.DoFn.KeyParam, buffer: Any = beam.DoFn.StateParam(BUFFER),
              fire: Any = beam.DoFn.TimerParam(FIRE)) -> None:
        first, *rest = sorted(buffer.read())
        _RELEASED.append((key, first, self.bundle))
        buffer.clear()
        for t in rest:
            buffer.add(t)
        if rest:
            fire.set(Timestamp(seconds=rest[0]))


def test_timers_due_by_the_watermark_fire_in_the_bundle_that_set_them() -> None:
    """A chain of timers each due when set runs in one bundle, in order per key; a timer beyond the watermark
    waits for it (a later, earlier-timed value is still released before it)."""
    _RELEASED.clear()
    _BUNDLES.clear()
    stream = (
        TestStream()
        .add_elements([TimestampedValue(("a", t), t) for t in (5, 1, 200, 3, 2, 4)])
        .add_elements([TimestampedValue(("b", t), t) for t in (7, 6, 8)])
        .advance_watermark_to(100)
        .add_elements([TimestampedValue(("a", 150), 150)])
        .advance_watermark_to(300)
        .advance_watermark_to_infinity()
    )
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
        (p | stream | beam.Map(lambda kv: kv).with_output_types(tuple[str, int])
         | beam.ParDo(_ReleaseOneAtATime()))
    order = {k: [t for key, t, _ in _RELEASED if key == k] for k in ("a", "b")}
    assert order == {"a": [1, 2, 3, 4, 5, 150, 200], "b": [6, 7, 8]}
    # Everything due by watermark 100 (the first eight releases) in one bundle: without fix 7 it took five.
    first_eight = {bundle for key, t, bundle in _RELEASED if t < 100}
    assert len(first_eight) == 1, _RELEASED



class _Collect(beam.DoFn):
    """Test-only sink: what reaches it lands in a module-level list (the in-process runner shares the process)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def process(self, element: Any) -> None:
        _COLLECTED.setdefault(self._name, []).append(element)


_COLLECTED: dict[str, list[Any]] = {}


def test_bug_a_an_empty_bundle_at_a_side_input_crashes_beams_runner_and_not_the_corrected_one() -> None:
    """On Beam's runner the error is raised in a worker thread and the pipeline never ends: the reproduction
    runs in a process of its own, stopped once the error is out."""
    script = Path(beam_bugs.__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(script.parents[2]), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, str(script), "empty_bundle_side_input"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    seen: list[str] = []
    timer = threading.Timer(120, child.kill)
    timer.start()
    try:
        for line in child.stdout:
            seen.append(line)
            if line.startswith("AttributeError"):
                break
    finally:
        timer.cancel()
        child.kill()
        child.wait()
    output = "".join(seen)[-4000:]  # the child's output in the failure, not just "assert False"
    assert any("AttributeError: 'NoneType' object has no attribute 'max_timestamp'" in line for line in seen), output
    assert not any(line.startswith("finished") for line in seen), output
    beam_bugs.empty_bundle_side_input(LocalRunner(fixes=()))  # the corrections alone: it finishes


@pytest.mark.parametrize("corrected", [False, True], ids=["beams_runner", "corrected"])
def test_bug_b_a_pending_timer_holds_its_steps_output_watermark(corrected: bool) -> None:
    """Correction B: what a timer emits at its own time is not late for the step after it, however far the
    watermark jumped. Grouped in 10-second windows with no allowed lateness, Beam's runner loses all of it."""
    _COLLECTED.clear()
    beam_bugs.timer_output_hold(LocalRunner(fixes=()) if corrected else BundleBasedDirectRunner(), _Collect("grouped"))
    got = sorted(_COLLECTED.get("grouped", []))
    assert got == ([[5, 7], [25]] if corrected else [])



@pytest.mark.integration
@pytest.mark.parametrize("corrected", [False, True], ids=["beams_runner", "corrected"])
def test_bug_c_the_pubsub_readers_watermark_does_not_pass_the_messages_it_reads(corrected: bool) -> None:
    """Correction C: 60 lines dated ten minutes ago wait in a subscription (a backlog), grouped in one-minute
    windows with no allowed lateness. Beam's runner sets the watermark to the wall clock at its first pull (ten
    messages) and drops what its later pulls read as late; the corrected one keeps every line."""
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    suffix = uuid.uuid4().hex[:8]
    topic = publisher.topic_path("demo-proj", f"backlog-{suffix}")
    sub = subscriber.subscription_path("demo-proj", f"backlog-{suffix}")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic)
    start = Timestamp.of(time.time()) - 600
    for i in range(60):
        publisher.publish(topic, b"x", ts=(start + i).to_rfc3339()).result(timeout=30)
    tag = f"backlog-{corrected}"
    _COLLECTED.pop(tag, None)
    p = beam.Pipeline(runner=LocalRunner(fixes=()) if corrected else BundleBasedDirectRunner(),
                      options=beam_bugs.streaming())
    _ = (p | beam.io.ReadFromPubSub(subscription=sub, timestamp_attribute="ts")
         | beam.WindowInto(FixedWindows(60)) | beam.Map(lambda _: ("k", 1)) | beam.GroupByKey()
         | beam.Map(lambda kv: sum(kv[1])) | beam.ParDo(_Collect(tag)))
    result = p.run()
    try:
        # Until every line is counted, or nothing new came for 40 s (what a drop looks like; a pull of an empty
        # subscription waits up to 30 s before the reader moves the watermark).
        counted, last_change, deadline = 0, time.time(), time.time() + 150
        while counted < 60 and time.time() < min(deadline, last_change + 40):
            time.sleep(1)
            now_counted = sum(_COLLECTED.get(tag, []))
            if now_counted != counted:
                counted, last_change = now_counted, time.time()
    finally:
        result.cancel()
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)
    assert (counted == 60) if corrected else (counted < 60), counted


class _Context:
    """A run's evaluation context, as far as correction C looks at it."""

    def __init__(self) -> None:
        self.pipeline_options = PipelineOptions([])


def test_correction_c_a_stale_line_holds_nothing_and_each_run_keeps_its_own_hold() -> None:
    """The reader's pulls played by hand (Beam's pull and bundle replaced for the test only): a line dated 1970
    in every pull does not stop the watermark behind the fresh traffic; a second run reading an hour-old backlog
    of the same subscription is not held to the first run's watermark; a line dated ahead does not move it."""
    from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator as Reader

    from stagewatch.stream.local.patches import _pubsub_watermark_behind_messages

    pulls: list[list[tuple[Timestamp, None]]] = []

    def finish(self: Any) -> Any:  # what Beam's does, minus Pub/Sub: one pull, the hold left to the patch
        self._read_from_pubsub(None)
        return type("Result", (), {"keyed_watermark_holds": {}})()

    def hold_after(pull: list[float], context: _Context, sub: str = "projects/p/subscriptions/s") -> float:
        pulls.append([(Timestamp.of(t), None) for t in pull])
        reader = Reader.__new__(Reader)
        reader._sub_name, reader._evaluation_context = sub, context
        return float(reader.finish_bundle().keyed_watermark_holds[None].micros) / US_PER_S

    saved = Reader.__dict__["_read_from_pubsub"], Reader.__dict__["finish_bundle"]
    Reader._read_from_pubsub = lambda self, attribute: pulls.pop(0)
    Reader.finish_bundle = finish
    patcher = Patcher()
    try:
        _pubsub_watermark_behind_messages(patcher)
        live, start = _Context(), time.time() - 3600
        for minute in range(60):  # an hour of traffic, a pull a minute, each with a line from a 1970 clock
            hold = hold_after([start + minute * 60 + k for k in range(9)] + [0.0], live)
        assert hold >= start + 59 * 60 - 60 - 1  # the last pull's oldest fresh line, less the 60 s allowance
        backfill = _Context()  # another run, an hour-old backlog
        assert hold_after([start, start + 1], backfill) == pytest.approx(start - 60, abs=1e-5)
        # A line dated an hour ahead among the backlog's does not move it either.
        ahead = hold_after([start + 2, start + 3, time.time() + 3600], backfill)
        assert ahead == pytest.approx(start + 2 - 60, abs=1e-5)
    finally:
        patcher.undo()
        Reader._read_from_pubsub, Reader.finish_bundle = saved

# -- every fix, with and without -----------------------------------------------------------------------------


class _Json(beam.DoFn):
    def __init__(self, table: str) -> None:
        self._table = table

    def process(self, record: Any) -> None:
        _COLLECTED.setdefault(self._table, []).append(dumps(record))


def _job_outputs(path: Path, runner: LocalRunner) -> dict[str, list[bytes]]:
    """The job over ``path`` as ``stagewatch run`` builds it; each table's records as JSON lines, sorted (the order
    in which a sink hears them follows the bundles, which the fixes change on purpose)."""
    _COLLECTED.clear()
    baseline = BaselineConfig(line="body")  # the fixture's three hours at 1.2 files a minute give every kind with it
    step_us = baseline.interval_us // 3
    stream, sample, end_us = file_stream(str(path), 60 * US_PER_S, step_us)
    with beam.Pipeline(runner=runner, options=beam_bugs.streaming()) as p:
        out = build(p | stream, TraceRules(infer_from_events(sample)), baseline, end_us=end_us,
                    watermark_step_s=step_us / US_PER_S)
        for table in ("anomalies", "traces", "dead_letters", "incidents", "lots"):
            getattr(out, table) | f"Collect{table.title()}" >> beam.ParDo(_Json(table))
    return {table: sorted(_COLLECTED.get(table, [])) for table in ("anomalies", "traces", "dead_letters",
                                                                   "incidents", "lots")}


@pytest.fixture(scope="module")
def with_every_fix(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[bytes]]]:
    """Three simulated hours at a low rate (seed 3): every anomaly kind, incidents, dead letters."""
    folder = tmp_path_factory.mktemp("fixes")
    simulate_to_dir(SimConfig(seed=3, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=1.2,
                              faults=SHORT_FAULTS), folder)
    outputs = _job_outputs(folder / "logs.jsonl", LocalRunner())
    kinds = {orjson.loads(line)["kind"] for line in outputs["anomalies"]}
    assert kinds == {"slow_stage", "slow_trace", "stalled", "failed"} and outputs["incidents"] and \
        outputs["dead_letters"] and len(outputs["traces"]) > 150
    return folder / "logs.jsonl", outputs


@pytest.mark.parametrize("fix", FIXES)
def test_each_fix_leaves_every_output_of_the_job_as_it_is(fix: str,
                                                          with_every_fix: tuple[Path, dict[str, list[bytes]]]) -> None:
    path, want = with_every_fix
    assert _job_outputs(path, LocalRunner(fixes=[f for f in FIXES if f != fix])) == want


# -- scope, choice and version ---------------------------------------------------------------------------------


class _Applied(beam.DoFn):
    def process(self, element: Any) -> None:
        _COLLECTED.setdefault("applied", []).append(applied())


def _tiny(runner: Any) -> None:
    with beam.Pipeline(runner=runner, options=beam_bugs.streaming()) as p:
        p | TestStream().add_elements([1, 2]).advance_watermark_to_infinity() | beam.ParDo(_Applied())


def _now(attributes: dict[tuple[Any, str], Any]) -> dict[tuple[Any, str], Any]:
    return {(owner, name): vars(owner).get(name) for owner, name in attributes}


def test_the_patches_last_as_long_as_the_run_and_a_dataflow_graph_after_it_is_beams_own() -> None:
    patcher = Patcher()
    for patch in PATCHES:
        patch.apply(patcher)
    before = patcher.originals  # Beam's own: what every patched attribute was
    assert len(before) >= 10 and _now(before) != before
    patcher.undo()
    assert _now(before) == before
    _COLLECTED.clear()
    _tiny(LocalRunner())
    assert _COLLECTED["applied"] == [frozenset(CORRECTIONS + FIXES)] * 2  # in force while it ran
    assert applied() is None
    assert _now(before) == before  # and gone after, every one
    # The production job's graph, built and translated for Dataflow (dry run: nothing submitted), in the same
    # process, with Beam's own functions.
    p, _ = construct([
        "--input_subscription", "projects/demo-proj/subscriptions/logs", "--output_topic",
        "projects/demo-proj/topics/anomalies", "--stages", "a,b,c", "--runner", "DataflowRunner",
        "--project", "demo-proj", "--region", "us-central1", "--temp_location", "gs://demo-bucket/tmp",
        "--dry_run", "true"])
    assert p.run().state == "DONE"
    assert _now(before) == before


def test_on_another_beam_one_warning_line_and_beams_own_runner(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        runner = LocalRunner(beam_version="2.99.0")
    assert not runner.supported
    (record,) = [r for r in caplog.records if "stagewatch" in r.getMessage()]
    assert "2.99.0" in record.getMessage() and "\n" not in record.getMessage()
    _COLLECTED.clear()
    _tiny(runner)
    assert _COLLECTED["applied"] == [None, None]  # nothing patched while it ran
    with pytest.raises(ValueError, match="unknown runner fixes"):
        LocalRunner(fixes=["faster"])


@pytest.mark.parametrize(("runner_args", "source", "want"), [
    ([], "file", LocalRunner),
    (["--runner", "StagewatchLocalRunner"], "file", LocalRunner),
    (["--runner", "stagewatchlocalrunner"], "pubsub", LocalRunner),
    (["--runner", "DirectRunner"], "file", DirectRunner),
    (["--runner", "BundleBasedDirectRunner"], "file", BundleBasedDirectRunner),
])
def test_the_local_runner_only_for_local_files_or_by_name(runner_args: list[str], source: str, want: type,
                                                          tmp_path: Path) -> None:
    """An explicit ``--runner DirectRunner`` is Beam's DirectRunner, as typed; ours is the default of a local
    file run, and is chosen by name for anything else."""
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "f1", "stage": "a"}\n')
    inputs = (["--input_file", str(logs), "--output_dir", str(tmp_path / "out")] if source == "file" else
              ["--input_subscription", "projects/demo-proj/subscriptions/logs", "--output_dir", str(tmp_path),
               "--stages", "a,b"])
    p, _ = construct(inputs + runner_args)
    assert type(p.runner) is want


def test_a_pubsub_job_without_a_runner_is_asked_for_one() -> None:
    with pytest.raises(ValueError, match=r"needs --runner: DataflowRunner .* StagewatchLocalRunner"):
        construct(["--input_subscription", "projects/demo-proj/subscriptions/logs", "--output_topic",
                   "projects/demo-proj/topics/out", "--stages", "a,b"])
