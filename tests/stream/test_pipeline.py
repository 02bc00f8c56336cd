"""The assembled streaming job on the DirectRunner: TestStream cases, the step names, and agreement with replay."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from stagewatch.backtest.replay import replay
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.events import StageEvent
from stagewatch.core.stages import StageOrder
from stagewatch.core.timeutil import format_rfc3339, parse_rfc3339_us
from stagewatch.core.traces import TraceRules
from stagewatch.logfiles import iter_lines
from stagewatch.stream.local import LocalRunner
from stagewatch.stream.pipeline import build, construct
from tests.streams import T0, Pipeline, S, burst, file_events, mixed_stream, steady_stream

pytestmark = pytest.mark.pipeline

PIPE = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 5.0})
RULES = TraceRules(StageOrder(PIPE.stages))
STEP_NAMES = Path(__file__).parent / "data" / "step_names.txt"


def _line(ev: StageEvent, severity: str = "INFO") -> bytes:
    return orjson.dumps({
        "insertId": ev.insert_id, "timestamp": format_rfc3339(ev.t_us), "severity": severity,
        "jsonPayload": {"uid": ev.uid, "stage": ev.stage, "tenant": ev.tenant, "lot": ev.lot},
    })


def _both_drivers(logs: Path, tmp_path: Path, *extra: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The anomalies of ``stagewatch replay`` and of ``stagewatch run`` on ``logs``, each with its defaults and
    ``extra`` (an option both take alike, e.g. ``--stages``)."""
    from stagewatch.cli import main

    assert main(["replay", str(logs), "-o", str(tmp_path / "a.jsonl"), *extra]) == 0
    assert main(["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "out"), *extra]) == 0
    replayed = [orjson.loads(x) for x in (tmp_path / "a.jsonl").read_bytes().splitlines()]
    streamed = [orjson.loads(x) for f in (tmp_path / "out").glob("anomalies*.jsonl")
                for x in f.read_bytes().splitlines()]
    return replayed, streamed


class _Collect(beam.DoFn):
    """Test-only sink: records land in a module-level list (the in-process runner shares the process)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def process(self, record: Any) -> None:
        _COLLECTED.setdefault(self._name, []).append(record.to_dict())  # as the sinks write it


_COLLECTED: dict[str, list[dict[str, Any]]] = {}


def _run(stream: TestStream, cfg: BaselineConfig | None = None) -> dict[str, list[dict[str, Any]]]:
    _COLLECTED.clear()
    opts = PipelineOptions()
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=LocalRunner(), options=opts) as p:
        out = build(p | stream, RULES, cfg or BaselineConfig())
        out.anomalies | "CollectAnomalies" >> beam.ParDo(_Collect("anomalies"))
        out.traces | "CollectTraces" >> beam.ParDo(_Collect("traces"))
        out.dead_letters | "CollectDeadLetters" >> beam.ParDo(_Collect("dead_letters"))
    return {k: list(v) for k, v in _COLLECTED.items()}


def _stream(chunks: list[tuple[list[tuple[bytes, int]], int]]) -> TestStream:
    """(lines with their element time, watermark after them) chunks -> a TestStream."""
    stream = TestStream()
    for lines, watermark_us in chunks:
        if lines:
            stream = stream.add_elements([TimestampedValue(raw, t / S) for raw, t in lines])
        stream = stream.advance_watermark_to(watermark_us // 1000 / 1000)
    return stream.advance_watermark_to_infinity()


def _warm_chunks(events: list[StageEvent], step_s: int = 60, lateness_s: int = 60) -> list[tuple[list, int]]:
    """Events in arrival chunks of ``step_s`` seconds, each chunk shuffled; the watermark trails by the
    lateness (as a Pub/Sub source's would)."""
    rng = random.Random(5)
    chunks, i = [], 0
    while i < len(events):
        end = events[i].t_us + step_s * S
        chunk = []
        while i < len(events) and events[i].t_us < end:
            chunk.append((_line(events[i]), events[i].t_us))
            i += 1
        rng.shuffle(chunk)
        chunks.append((chunk, end - lateness_s * S))
    return chunks


def test_a_stall_is_reported_when_its_deadline_passes_not_when_the_session_closes() -> None:
    warm = steady_stream(PIPE, hours=1.5, every_s=10, seed=2)
    t_stuck = warm[-1].t_us + 5 * S
    stuck = file_events(PIPE, "stuck-1", t_stuck, random.Random(1), drop_from="c")  # a and b, never c
    after = steady_stream(PIPE, hours=0.5, every_s=10, seed=3)
    shift = stuck[-1].t_us + 10 * S - after[0].t_us
    after = [ev._replace(t_us=ev.t_us + shift, uid="late-" + ev.uid, insert_id="late-" + str(ev.insert_id))
             for ev in after]
    got = _run(_stream(_warm_chunks(warm + stuck + after)))
    stalls = [a for a in got["anomalies"] if a["kind"] == "stalled"]
    assert [(a["uid"], a["stage"], a["last_stage"]) for a in stalls] == [("stuck-1", "c", "b")]
    detected = parse_rfc3339_us(stalls[0]["detected_at"])
    waited_s = (detected - stuck[-1].t_us) / S
    # The deadline is learned from c's own line (c takes ~5 s): about a minute, far from the 1 h session gap.
    assert 10 <= waited_s <= 300, waited_s
    summary = next(t for t in got["traces"] if t["uid"] == "stuck-1")
    assert summary["status"] == "stalled"
    assert parse_rfc3339_us(summary["closed_at"]) - stuck[-1].t_us >= RULES.ttl_us  # the session closed later
    complete = [t for t in got["traces"] if t["status"] == "complete"]
    assert len(complete) == len({ev.uid for ev in warm + after})


def test_out_of_order_duplicates_late_and_malformed_input() -> None:
    warm = steady_stream(PIPE, hours=1.0, every_s=10, seed=4)
    t = warm[-1].t_us + 5 * S
    f1 = file_events(PIPE, "f1", t, random.Random(2))
    f2 = file_events(PIPE, "f2", t + S, random.Random(3))
    f3 = file_events(PIPE, "f3", t + 2 * S, random.Random(4))
    # f1 arrives reversed (out of order within the lateness) and with every line twice.
    chunk = [(_line(ev), ev.t_us) for ev in reversed(f1)] * 2
    # f2's first stage arrives only after the watermark passed f2's later stages: late beyond the lateness.
    chunk += [(_line(ev), ev.t_us) for ev in f2[1:]]
    # f3 fails at b.
    chunk += [(_line(f3[0]), f3[0].t_us), (_line(f3[1], severity="ERROR"), f3[1].t_us)]
    junk = [(b"{not json", t), (b'{"timestamp": "2026-05-28T20:00:00Z", "jsonPayload": {"stage": "a"}}', t),
            (b"[1, 2]", t)]
    end = max(ev.t_us for ev in f1 + f2 + f3)
    chunks = [*_warm_chunks(warm), (chunk + junk, end + S), ([(_line(f2[0]), f2[0].t_us)], end + 120 * S)]
    got = _run(_stream(chunks))
    by_uid = {s["uid"]: s for s in got["traces"]}
    assert by_uid["f1"]["status"] == "complete"
    assert [st["stage"] for st in by_uid["f1"]["stages"]] == ["a", "b", "c"]  # reassembled in event order, once
    reasons = sorted(d["reason"] for d in got["dead_letters"])
    assert reasons == ["invalid_json", "late", "missing_uid", "not_object"]
    late = next(d for d in got["dead_letters"] if d["reason"] == "late")
    assert "f2" in late["line"] and "behind" in late["detail"]
    assert [(a["kind"], a["uid"], a["stage"]) for a in got["anomalies"] if a["uid"] == "f3"] == [
        ("failed", "f3", "b")
    ]
    assert by_uid["f3"]["status"] == "failed"


def _step_names(argv: list[str]) -> list[str]:
    p, _ = construct(argv)
    names: list[str] = []

    class _Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node: Any) -> None:
            if node.full_label:
                names.append(node.full_label)

        def visit_transform(self, node: Any) -> None:
            names.append(node.full_label)

    p.visit(_Visitor())
    return sorted(set(names))


PRODUCTION_ARGV = [
    "--input_subscription", "projects/demo-proj/subscriptions/logs", "--output_topic",
    "projects/demo-proj/topics/anomalies", "--bigquery_dataset", "demo-proj.stagewatch", "--stages",
    "detect,upload,register,enqueue,download,analyse,store_result,lot_check", "--runner", "DataflowRunner",
    "--project", "demo-proj", "--region", "us-central1", "--temp_location", "gs://demo-bucket/tmp", "--dry_run", "true",
]


def test_step_names_match_the_recorded_list() -> None:
    """A running job is updated in place (``--update``) only when the new graph's step names match the old
    one's: renaming a step is a breaking change. Regenerate with STAGEWATCH_RECORD_STEPS=1 on purpose."""
    import os

    names = _step_names(PRODUCTION_ARGV)
    if os.environ.get("STAGEWATCH_RECORD_STEPS"):
        STEP_NAMES.parent.mkdir(exist_ok=True)
        STEP_NAMES.write_text("\n".join(names) + "\n")
    recorded = STEP_NAMES.read_text().split()
    assert names == recorded, f"step names changed: +{set(names) - set(recorded)} -{set(recorded) - set(names)}"
    for step in ("Parse", "Dedup", "Assemble", "Learn", "Judge", "Stalls", "PublishAnomalies",
                 "WriteBigQueryAnomalies", "WriteBigQueryTraces", "WriteBigQueryDeadLetters"):
        assert step in names


def _agreement(replayed: set[tuple[str, str, str]], streamed: set[tuple[str, str, str]]) -> float:
    return len(replayed & streamed) / max(1, len(replayed | streamed))


def test_run_and_replay_report_the_same_anomalies(tmp_path: Path) -> None:
    """The streaming job and the backtest share one core; on a simulated input with every kind of anomaly
    they report the same (kind, uid, stage) set. What may differ, and why: see docs/streaming.md, "Streaming vs
    backtest"."""
    from stagewatch.backtest.replay import replay
    from stagewatch.cli import main
    from stagewatch.evaluation.simulate import SHORT_FAULTS, SHORT_HOURS, SHORT_START, SimConfig, simulate_to_dir
    from stagewatch.logfiles import iter_lines

    simulate_to_dir(SimConfig(seed=23, start=SHORT_START, hours=SHORT_HOURS, peak_rate_per_min=6,
                              faults=SHORT_FAULTS), tmp_path / "sim")
    logs = str(tmp_path / "sim" / "logs.jsonl")
    replayed: set[tuple[str, str, str]] = set()
    said: dict[str, str] = {}  # a slow file's message (it names the stages its time went to), by anomaly id
    in_progress: set[tuple[str, str, str]] = set()  # flagged slow while still in the stage

    def on_anomaly(a: Any) -> None:
        replayed.add((a.kind, a.uid, a.stage))
        if a.measure == "in_progress":
            in_progress.add((a.uid, a.stage, a.event_time))
        if a.kind == "slow_trace":
            said[a.anomaly_id] = a.message

    replay(iter_lines([logs]), on_anomaly=on_anomaly)
    assert main(["run", "--input_file", logs, "--output_dir", str(tmp_path / "out")]) == 0
    rows = [a for f in (tmp_path / "out").glob("anomalies*.jsonl")
            for a in map(orjson.loads, f.read_bytes().splitlines())]
    streamed = {(a["kind"], a["uid"], a["stage"]) for a in rows}
    assert {k for k, _, _ in replayed} == {"slow_stage", "slow_trace", "stalled", "failed"}
    agreement = _agreement(replayed, streamed)
    assert agreement >= 0.99, (agreement, sorted(replayed - streamed)[:10], sorted(streamed - replayed)[:10])
    # The same files flagged while still in a stage, at the same moment (the stage's line after their last
    # event): the backtest's trace timer and the stream's WatchStalls timer.
    streamed_in_progress = {(a["uid"], a["stage"], a["event_time"]) for a in rows if a["measure"] == "in_progress"}
    assert len(in_progress) >= 10 and streamed_in_progress == in_progress
    stream_said = {a["anomaly_id"]: a["message"] for a in rows if a["anomaly_id"] in said}
    assert len(stream_said) >= 0.99 * len(said) and all("; most of it in " in m for m in said.values())
    assert {k: said[k] for k in stream_said} == stream_said
    # Incidents too: the same ones open and resolve with the same files (ids come from the anomalies' times).
    assert main(["replay", logs, "-o", str(tmp_path / "a.jsonl"), "--incidents", str(tmp_path / "i.jsonl")]) == 0

    def milestones(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return {(e["event"], e["incident_id"], e["scope"], e["files"], e["arrived"], tuple(e["lots"]))
                for e in rows if e["event"] != "updated"}

    want = milestones([orjson.loads(x) for x in (tmp_path / "i.jsonl").read_bytes().splitlines()])
    got = milestones([orjson.loads(x) for f in (tmp_path / "out").glob("incidents*.jsonl")
                      for x in f.read_bytes().splitlines()])
    assert len(want) >= 6 and got == want


@pytest.mark.parametrize("cut_s", [None, 89, 200],
                         ids=["whole", "ending_before_the_warm_tick", "ending_in_the_first_interval"])
def test_what_a_cold_baseline_saw_is_judged_at_its_first_warm_tick_or_the_next_snapshot_in_both_drivers(
        tmp_path: Path, cut_s: int | None) -> None:
    """One customer's files 2 s apart from the job's start: its stage has its warm-up samples only at the third
    early tick (90 s). A slow file measured before is judged there, one measured later at the next tick, one
    after the last early tick against the next interval's snapshots (the streaming job's second judging pass)
    -- the same verdicts, made as of the same moments, in both drivers (``tests/core/test_detection.py``: the
    backtest alone). An input that ends before that tick (89 s) has no verdict on them in either: neither
    driver moves past a finite input's last event. One that ends within the first interval (200 s) has the
    early verdicts, and not the one after the last early tick: the streaming job judges the interval only as
    its input ends, after the files closed, and still reports them (``WatchStalls`` lets nothing it holds go
    with a file's state). The body line (30 warm-up samples; the tail line's 100 come later)."""
    from stagewatch.backtest.engine import DetectorConfig
    from stagewatch.backtest.replay import replay
    from stagewatch.cli import main
    from stagewatch.logfiles import iter_lines

    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 1.0})
    rng = random.Random(3)
    start = T0 - T0 % (300 * S)
    slow_at = {4: 90, 40: 120, 70: 300}  # file -> when its slow "b" is judged (s after the start)
    events = sorted((e for k in range(200) for e in file_events(
        pipe, f"f{k:03d}", start + k * 2 * S, rng, lambda stage, t, k=k: 10.0 if stage == "b" and k in slow_at else 1.0,
        tenant="t1")), key=lambda e: e.t_us)
    if cut_s is not None:
        events = [e for e in events if e.t_us < start + cut_s * S]
        slow_at = {k: at for k, at in slow_at.items() if at <= cut_s}
    logs = tmp_path / "cold.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in events) + b"\n")
    replayed: set[tuple[str, str, str, str]] = set()
    replay(iter_lines([str(logs)]), on_anomaly=lambda a: replayed.add((a.kind, a.uid, a.stage, a.detected_at)),
           cfg=DetectorConfig(baseline=BaselineConfig(line="body")))
    assert main(["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "out"), "--line", "body"]) == 0
    streamed = {
        (a["kind"], a["uid"], a["stage"], a["detected_at"])
        for f in (tmp_path / "out").glob("anomalies*.jsonl") for a in map(orjson.loads, f.read_bytes().splitlines())
    }
    assert {r for r in replayed if r[0] == "slow_stage"} == {
        ("slow_stage", f"f{k:03d}", "b", format_rfc3339(start + at * S)) for k, at in slow_at.items()}
    assert streamed == replayed


@pytest.mark.parametrize("then", ["stalls", "arrives"])
def test_a_new_stage_mid_run_judges_a_waiting_file_at_its_warm_tick_unless_it_stalled_before(
        tmp_path: Path, then: str) -> None:
    """An optional stage "x" first appears 10 minutes in and has its warm-up samples at its interval's fourth
    early tick. A file whose x took 10 s is judged slow there at that tick -- unless it stalled waiting for
    b before it: the streaming job drops a verdict judged after a file's stall deadline, and the backtest
    does not judge one (the file's later lines do not undo that). Both drivers: the same verdicts. The body line
    (its 30 warm-up samples)."""
    rng = random.Random(1)
    start = T0 - T0 % (300 * S)

    def path(uid: str, steps: list[tuple[str, int]]) -> list[StageEvent]:
        return [StageEvent(uid, st, t, "t1", "lot-1", f"{uid}-{i}", False, None) for i, (st, t) in enumerate(steps)]

    def w(median: float) -> int:
        return int(median * rng.lognormvariate(0, 0.25) * S)

    events: list[StageEvent] = []
    for i in range(120):  # b and c warm
        t = start + i * 5 * S
        tb = t + w(2)
        events += path(f"p{i:04d}", [("a", t), ("b", tb), ("c", tb + w(1))])
    for i in range(80):  # x appears
        t = start + 600 * S + int(i * 3.5 * S)
        if i == 2:
            steps = [("a", t), ("x", t + 10 * S)]
            if then == "arrives":
                steps += [("b", t + 70 * S), ("c", t + 71 * S)]
            events += path("slow", steps)
            continue
        tx = t + w(1)
        tb = tx + w(2)
        events += path(f"q{i:04d}", [("a", t), ("x", tx), ("b", tb), ("c", tb + w(1))])
    events.sort(key=lambda e: e.t_us)
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in events) + b"\n")
    rows = _both_drivers(logs, tmp_path, "--stages", "a,x?,b,c", "--line", "body")
    replayed, streamed = ({(a["kind"], a["stage"], a["detected_at"]) for a in r if a["uid"] == "slow"} for r in rows)
    slow_x = {("slow_stage", "x", format_rfc3339(start + 720 * S))}
    if then == "stalls":
        assert {r[:2] for r in replayed} == {r[:2] for r in streamed} == {("slow_stage", "b"), ("stalled", "b")}
    else:
        assert slow_x <= replayed and slow_x <= streamed
        assert {r[:2] for r in replayed} == {r[:2] for r in streamed}


def test_a_shorter_baseline_interval_judges_a_burst_sooner_and_both_drivers_agree(tmp_path: Path) -> None:
    """``--baseline_interval_s 60`` (replay: ``--baseline-interval 60``): the burst's first minute is judged at
    its end, not at the end of a five-minute interval, and the two drivers make the same verdicts at the same
    moments."""
    from stagewatch.cli import main

    _, events, start = burst(n=1600)
    logs = tmp_path / "burst.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in events) + b"\n")
    assert main(["replay", str(logs), "-o", str(tmp_path / "a.jsonl"), "--baseline-interval", "60"]) == 0
    assert main(["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "out"),
                 "--baseline_interval_s", "60"]) == 0

    def verdicts(rows: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
        return {(a["kind"], a["uid"], a["stage"], a["detected_at"]) for a in rows}

    replayed = verdicts([orjson.loads(x) for x in (tmp_path / "a.jsonl").read_bytes().splitlines()])
    streamed = verdicts([orjson.loads(x) for f in (tmp_path / "out").glob("anomalies*.jsonl")
                         for x in f.read_bytes().splitlines()])
    for verdicts_of in (replayed, streamed):
        slow = {r for r in verdicts_of if r[0] == "slow_stage" and r[2] == "b" and "f00200" <= r[1] < "f00260"}
        assert len({r[1] for r in slow}) >= 50
        # The slowed files started 50 to 65 s in: judged by the first minute's snapshot as their stage ended
        # (with five-minute intervals, all of them at the end of the first five minutes).
        assert max(parse_rfc3339_us(r[3]) for r in slow) < start + 120 * S
    # The moment a verdict is made may differ by the drivers' watermark steps (docs/streaming.md).
    assert {r[:3] for r in streamed} == {r[:3] for r in replayed}


def test_a_burst_at_the_start_is_judged_from_the_first_ticks_and_both_drivers_agree(tmp_path: Path) -> None:
    """With the default five-minute interval: the burst's slow files are judged by the early snapshots of the
    30 s ticks after them (``core.early``), 90 and 120 s in, not at the end of the first five minutes --
    by the streaming job too, whose roll sends those snapshots into the interval's side input, and the two
    drivers make the same verdicts as of the same moments. The body line: the tail line learns a slow share there
    from the first minutes as the stage's upper mode (``tests/core/test_detection.py``)."""
    from stagewatch.cli import main

    _, events, start = burst(n=1600)
    logs = tmp_path / "burst.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in events) + b"\n")
    assert main(["replay", str(logs), "-o", str(tmp_path / "a.jsonl"), "--line", "body"]) == 0
    assert main(["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "out"), "--line", "body"]) == 0

    def verdicts(rows: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
        return {(a["kind"], a["uid"], a["stage"], a["detected_at"]) for a in rows}

    replayed = verdicts([orjson.loads(x) for x in (tmp_path / "a.jsonl").read_bytes().splitlines()])
    streamed = verdicts([orjson.loads(x) for f in (tmp_path / "out").glob("anomalies*.jsonl")
                         for x in f.read_bytes().splitlines()])
    slow = {r for r in replayed if r[0] == "slow_stage" and r[2] == "b" and "f00200" <= r[1] < "f00260"}
    assert len({r[1] for r in slow}) == 60
    assert {(parse_rfc3339_us(r[3]) - start) // S for r in slow} == {90, 120}
    assert streamed == replayed


def test_a_stage_taking_minutes_stalls_a_stuck_file_within_the_session_gap_in_both_drivers(tmp_path: Path) -> None:
    """b takes 5 minutes (8x its line: two hours). With their defaults (one session gap, an hour, for both),
    the job and the backtest declare the file stuck before b stalled at the same moment, 54 min after its
    last stage; before, the job let it go as open at the gap and the backtest (6 h) stalled it at 8x the line."""
    from stagewatch.stream.parameters import PARAMETERS

    assert next(p.default for p in PARAMETERS if p.name == "session_gap_s") == "3600"
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 300.0, "c": 1.0})
    rng = random.Random(21)
    t = T0 + 2 * 3600 * S
    stuck = file_events(pipe, "stuck", t, rng, drop_from="b")
    events = sorted([*steady_stream(pipe, hours=4, every_s=20, seed=21), *stuck], key=lambda e: e.t_us)
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in events) + b"\n")
    replayed, streamed = _both_drivers(logs, tmp_path)
    for rows in (replayed, streamed):
        stalls = [(a["uid"], a["stage"], parse_rfc3339_us(a["event_time"])) for a in rows if a["kind"] == "stalled"]
        assert stalls == [("stuck", "b", stuck[-1].t_us + 54 * 60 * S)]
    assert {(a["kind"], a["uid"], a["stage"]) for a in streamed} == {
        (a["kind"], a["uid"], a["stage"]) for a in replayed}


def test_a_stalled_file_that_then_fails_is_reported_failed_by_both_drivers(tmp_path: Path) -> None:
    """A file stalls before b, then logs b as failed ten minutes later: both drivers report the stall and
    the failure (before, the backtest said nothing of the failure: the file's trace had closed at its stall,
    while the streaming job's trace of it, still open, failed)."""

    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 1.0, "c": 1.0})
    rng = random.Random(23)
    t = T0 + 2 * 3600 * S
    stuck = file_events(pipe, "stuck", t, rng, drop_from="b")
    fails = StageEvent("stuck", "b", t + 600 * S, stuck[0].tenant, stuck[0].lot, "stuck-fail", True, None)
    events = sorted([*steady_stream(pipe, hours=3, every_s=10, seed=23), *stuck, fails], key=lambda e: e.t_us)
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b"\n".join(_line(ev, "ERROR" if ev is fails else "INFO") for ev in events) + b"\n")
    replayed, streamed = _both_drivers(logs, tmp_path)
    for rows in (replayed, streamed):
        assert sorted((a["kind"], a["stage"]) for a in rows if a["uid"] == "stuck") == [
            ("failed", "b"), ("slow_stage", "b"), ("stalled", "b")]  # slow while still waiting, then stalled
    assert {(a["kind"], a["uid"], a["stage"]) for a in streamed} == {
        (a["kind"], a["uid"], a["stage"]) for a in replayed}


def test_the_tenant_limit_gives_the_same_tenants_their_own_baselines_in_both_drivers() -> None:
    """``max_tenants`` 2 of four tenants: each stage lets in new tenants by name (t1, t2), not by arrival --
    the streaming job kept no limit at all, and the backtest let in whoever came first. t4, whose normal b
    is 5x slower and whose file comes first, has no baseline of its own: the stage-wide line judges it (the body line:
    the tail line takes a quarter of the files 5x slower for the stage's upper mode)."""
    from stagewatch.backtest.engine import DetectorConfig
    from tests.streams import run as backtest

    rng = random.Random(17)
    events = []
    for k in range(1200):
        tenant = ("t4", "t1", "t2", "t3")[k % 4]
        slow = (lambda stage, _t: 5.0 if stage == "b" else 1.0) if tenant == "t4" else (lambda stage, _t: 1.0)
        events += file_events(PIPE, f"f{k:05d}", T0 + k * 5 * S, rng, slow, tenant=tenant)
    events.sort(key=lambda e: e.t_us)
    cfg = BaselineConfig(max_tenants=2, line="body")
    replayed, _, det = backtest(events, PIPE.stages, DetectorConfig(baseline=cfg))
    assert det.base.admitted["b"] == {"t1", "t2"}
    streamed = _run(_stream(_warm_chunks(events)), cfg)["anomalies"]
    flagged_t4 = {a.uid for a in replayed if a.kind == "slow_stage" and a.stage == "b" and a.tenant == "t4"}
    assert len(flagged_t4) >= 150
    assert {(a["kind"], a["uid"], a["stage"]) for a in streamed} == {(a.kind, a.uid, a.stage) for a in replayed}


def test_a_stage_quiet_for_most_of_the_session_gap_keeps_its_snapshots_whatever_the_interval(
        tmp_path: Path) -> None:
    """An interval (420 s) that does not divide the session gap (3600 s): a stage quiet for 58 minutes still
    has its snapshots when the next files come (the streaming job stopped sending them after 8 intervals,
    56 minutes, and a new tenant's slow files were judged by no baseline: 40 verdicts of the backtest's lost)."""
    from stagewatch.cli import main

    first = steady_stream(PIPE, hours=3, every_s=10, seed=5)
    start = max(e.t_us for e in first) + 58 * 60 * S
    rng = random.Random(9)
    later = [e for k in range(200) for e in file_events(
        PIPE, f"v{k:04d}", start + k * 10 * S, rng, (lambda st, _t: 10.0 if st == "b" else 1.0) if k < 20 else
        (lambda st, _t: 1.0), tenant="t9" if k < 20 else None)]
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in sorted(first + later, key=lambda e: e.t_us)) + b"\n")
    assert main(["replay", str(logs), "-o", str(tmp_path / "a.jsonl"), "--baseline-interval", "420"]) == 0
    assert main(["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "out"),
                 "--baseline_interval_s", "420"]) == 0
    replayed = {(a["kind"], a["uid"], a["stage"]) for a in map(orjson.loads, (tmp_path / "a.jsonl").read_bytes()
                                                               .splitlines())}
    streamed = {(a["kind"], a["uid"], a["stage"]) for f in (tmp_path / "out").glob("anomalies*.jsonl")
                for a in map(orjson.loads, f.read_bytes().splitlines())}
    assert len({uid for _, uid, _ in replayed if uid < "v0020"}) == 20
    assert streamed == replayed


def test_a_quiet_stage_silent_for_longer_than_the_session_gap_is_judged_alike_by_both_drivers(tmp_path: Path) -> None:
    """A file every six minutes for 20 hours (kept: ``core.forgetting``), 90 minutes of silence, then a file 8x slow
    in b and one that never reaches c. The streaming job's per-stage roll stopped sending snapshots a session gap
    after the stage's last data (a review's case: the backtest flagged both, the streaming job neither, the stuck
    file left open); it goes on while a key of the stage still judges."""
    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 30.0})
    first = steady_stream(pipe, hours=20, every_s=360, seed=4)
    later = max(e.t_us for e in first) + 90 * 60 * S
    rng = random.Random(4)
    events = first + file_events(pipe, "slow", later, rng, factor=lambda stage, t: 8.0 if stage == "b" else 1.0)
    events += file_events(pipe, "stuck", later + 60 * S, rng, drop_from="c")
    events += [e for k in range(15) for e in file_events(pipe, f"after{k}", later + (k + 1) * 360 * S, rng)]
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in sorted(events, key=lambda e: e.t_us)) + b"\n")
    replayed, streamed = _both_drivers(logs, tmp_path)
    key = {(a["kind"], a["uid"], a["stage"], a["measure"]) for a in replayed}
    assert ("slow_stage", "slow", "b", "in_progress") in key and ("stalled", "stuck", "c", "deadline") in key, key
    assert {(a["kind"], a["uid"], a["stage"], a["measure"]) for a in streamed} == key


def test_run_and_replay_agree_with_the_tail_line(tmp_path: Path) -> None:
    """``alert_line = tail`` keeps its history clean (disturbed intervals, modes, adoption) in the shared core:
    both drivers report the same anomalies on a zoo pipeline with a 16x tenant slowdown, stalls and failures."""
    from stagewatch.backtest.engine import DetectorConfig
    from stagewatch.backtest.replay import replay
    from stagewatch.cli import main
    from stagewatch.core.baselines import BaselineConfig
    from stagewatch.core.stages import StageOrder
    from stagewatch.evaluation.zoo import random_pipeline, simulate_zoo
    from stagewatch.logfiles import iter_lines

    pipe = random_pipeline(25, max_files=4000)
    simulate_zoo(pipe, tmp_path / "zoo")
    logs = str(tmp_path / "zoo" / "logs.jsonl")
    replayed: set[tuple[str, str, str]] = set()
    replay(iter_lines([logs]), order=StageOrder.parse(pipe.order), cfg=DetectorConfig(baseline=BaselineConfig(
        line="tail")), on_anomaly=lambda a: replayed.add((a.kind, a.uid, a.stage)))
    assert main(["run", "--input_file", logs, "--output_dir", str(tmp_path / "out"), "--stages", pipe.order,
                 "--alert_line", "tail"]) == 0
    streamed = {
        (a["kind"], a["uid"], a["stage"])
        for f in (tmp_path / "out").glob("anomalies*.jsonl") for a in map(orjson.loads, f.read_bytes().splitlines())
    }
    assert {k for k, _, _ in replayed} >= {"slow_stage", "stalled", "failed"}
    agreement = _agreement(replayed, streamed)
    assert agreement >= 0.99, (agreement, sorted(replayed - streamed)[:10], sorted(streamed - replayed)[:10])


def test_a_store_kept_across_an_update_takes_the_new_settings_or_starts_again_for_a_new_interval() -> None:
    """``--update`` with other settings: the roll's stored baseline keeps its histograms under a new line rule
    or half-life, and starts again under a new interval (its steps are counted in intervals)."""
    from stagewatch.core.baselines import BaselineStore
    from stagewatch.stream.steps.learn import adopt

    held = BaselineStore(BaselineConfig())
    for k in range(40):
        held.advance(k * 10 * S)
        held.learn("b", None, 100.0 + k)
    held.advance(301 * S)
    assert held.snaps
    tail = BaselineConfig(line="tail", half_life_s=3600.0)
    assert adopt(held, tail) is held and held.cfg == tail and held.snaps
    fresh = adopt(held, BaselineConfig(interval_s=60))
    assert fresh is not held and fresh.cfg.interval_s == 60 and fresh.snaps == {} and fresh.step == -1
    assert adopt(None, tail).cfg == tail


def test_an_export_listing_the_newest_entry_first_gives_both_drivers_the_verdicts_of_one_in_time_order(
        tmp_path: Path) -> None:
    """``gcloud logging read --format=json`` (the README's export) lists the newest entry first. Read as it
    was, the backtest dropped 2,587 of 2,724 lines as late and made no verdict, and the streaming job stalled
    440 files that completed. Both now read it oldest first: the verdicts of the same entries in time order."""
    from stagewatch.cli import main

    rng = random.Random(31)
    events = [*steady_stream(PIPE, hours=3, every_s=20, seed=31),
              *file_events(PIPE, "stuck", T0 + 2 * 3600 * S, rng, drop_from=PIPE.stages[-1]),
              *file_events(PIPE, "slow", T0 + 2 * 3600 * S, rng, lambda stage, _t: 30.0)]
    events.sort(key=lambda e: e.t_us)
    entries = [orjson.loads(_line(ev)) for ev in events]
    (tmp_path / "asc.json").write_bytes(orjson.dumps(entries))
    (tmp_path / "desc.json").write_bytes(orjson.dumps(entries[::-1]))
    got = {}
    for name in ("asc", "desc"):
        assert main(["replay", str(tmp_path / f"{name}.json"), "-o", str(tmp_path / f"{name}-a.jsonl")]) == 0
        assert main(["run", "--input_file", str(tmp_path / f"{name}.json"), "--output_dir",
                     str(tmp_path / f"{name}-out")]) == 0
        replayed = [orjson.loads(x) for x in (tmp_path / f"{name}-a.jsonl").read_bytes().splitlines()]
        streamed = [orjson.loads(x) for f in (tmp_path / f"{name}-out").glob("anomalies*.jsonl")
                    for x in f.read_bytes().splitlines()]
        got[name] = [sorted((a["kind"], a["uid"], a["stage"]) for a in rows) for rows in (replayed, streamed)]
    assert ("stalled", "stuck", PIPE.stages[-1]) in got["asc"][0]
    assert any(uid == "slow" for _, uid, _ in got["asc"][0])
    assert got["desc"] == got["asc"] and got["asc"][0] == got["asc"][1]


def test_a_stalled_file_logging_again_is_an_arrival_a_straggler_or_a_new_trace_alike_in_both_drivers(
        tmp_path: Path) -> None:
    """Three files stall before b (8x b's line after a), then log b, reporting 40x b's usual latency:
    ``back`` 30 minutes after its stall, ``retry`` 90 minutes after, ``again`` 150 minutes after. The streaming
    job stalls a file downstream of its trace, which stays open: ``back``'s line is in it (an arrival; what was
    judged of it after the deadline is dropped); the trace is let go a session gap after the file's last line
    and its mark lasts another gap, so ``retry``'s line is a straggler (dead-lettered) and ``again``'s starts
    the file's next trace, judged. The backtest closed a stalled trace at its stall with a mark of one gap from
    there: it judged ``retry``'s line as a new trace where the stream dropped it."""
    from stagewatch.cli import main

    pipe = Pipeline(stages=("a", "b", "c"), medians={"b": 20.0, "c": 1.0})
    rng = random.Random(23)
    events = steady_stream(pipe, hours=6, every_s=20, seed=23)
    t = T0 + 2 * 3600 * S
    files = {uid: file_events(pipe, uid, t, rng, drop_from="b") for uid in ("back", "retry", "again", "held")}
    logs = tmp_path / "logs.jsonl"

    def write(extra: list[StageEvent]) -> None:
        rows = sorted([*events, *(e for f in files.values() for e in f), *extra], key=lambda e: e.t_us)
        logs.write_bytes(b"\n".join(orjson.dumps({
            "insertId": ev.insert_id, "timestamp": format_rfc3339(ev.t_us), "severity": "INFO",
            "jsonPayload": {"uid": ev.uid, "stage": ev.stage, "tenant": ev.tenant, "lot": ev.lot,
                            "duration_ms": ev.reported_ms}}) for ev in rows) + b"\n")

    write([])
    assert main(["replay", str(logs), "-o", str(tmp_path / "first.jsonl")]) == 0
    stalls = {a["uid"]: parse_rfc3339_us(a["event_time"]) for x in (tmp_path / "first.jsonl").read_bytes().splitlines()
              if (a := orjson.loads(x))["kind"] == "stalled"}
    assert set(stalls) == set(files)
    later = {"back": 30, "retry": 90, "again": 150}
    # ``held`` logs its last stage 5 minutes after its stall, without b: the stream's trace holds c for b for
    # hold_s before it completes, and the mark runs from there -- a line a gap and 10 s after c is a straggler.
    c_at = stalls["held"] + 300 * S
    write([StageEvent(uid, "b", stalls[uid] + minutes * 60 * S, files[uid][0].tenant, "lot-1", f"{uid}-b", False,
                      800_000.0) for uid, minutes in later.items()]
          + [StageEvent("held", "c", c_at, files["held"][0].tenant, "lot-1", "held-c", False, None),
             StageEvent("held", "a", c_at + 3610 * S, files["held"][0].tenant, "lot-1", "held-a2", False, None)])
    replayed, streamed = _both_drivers(logs, tmp_path)
    # Both lines after a stall within its mark are arrivals (the stream's: tests/stream/test_stalls.py).
    arrivals: list[Any] = []
    replay(iter_lines([str(logs)]), order=StageOrder.parse("a,b,c"), on_arrival=arrivals.append)
    assert sorted(a.uid for a in arrivals) == ["back", "held", "retry"]
    dead = [orjson.loads(x) for f in (tmp_path / "out").glob("dead_letters*.jsonl")
            for x in f.read_bytes().splitlines()]
    assert [d["reason"] for d in dead if '"retry"' in d["line"]] == ["after_close"]
    for rows in (replayed, streamed):
        mine = [(a["uid"], a["kind"], a["stage"], a["measure"]) for a in rows if a["uid"] in files]
        assert [m for m in mine if m[3] not in ("in_progress", "deadline")] == [("again", "slow_stage", "b", "latency")]
        stalled = sorted(m[:3] for m in mine if m[1] == "stalled")  # again's next trace waits for c in vain
        assert stalled == sorted([*((uid, "stalled", "b") for uid in files), ("again", "stalled", "c")])
    assert sorted((a["kind"], a["uid"], a["stage"], a["measure"]) for a in streamed) == sorted(
        (a["kind"], a["uid"], a["stage"], a["measure"]) for a in replayed)


def test_a_wait_after_a_skipped_optional_stage_is_judged_by_its_own_path_in_both_drivers(tmp_path: Path) -> None:
    """c's wait from a (b skipped, an eighth of the files) takes 3 s where from b it takes 100 ms: each path
    is its own baseline (``TraceRules.skip_names``) in both drivers -- no false alert on the skipping files once
    it is warm, a file 10x over its path's usual flagged with that path's median, and the same verdicts."""
    full = Pipeline(stages=("a", "b", "c"), medians={"b": 0.5, "c": 0.1})
    skipping = Pipeline(stages=("a", "c"), medians={"c": 3.0})
    rng = random.Random(4)
    events = mixed_stream(lambda k: skipping if k % 8 == 3 else full, 1800, 3, rng)
    t = T0 + 1800 * 3 * S
    events += file_events(skipping, "slow-skip", t, rng, factor=lambda stage, _: 10.0)
    events += [e for k in range(40) for e in file_events(full, f"n{k}", t + (k + 1) * 3 * S, rng)]
    events.sort(key=lambda e: e.t_us)
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(b"\n".join(_line(ev) for ev in events) + b"\n")
    rows = _both_drivers(logs, tmp_path, "--stages", "a,b?,c")
    replayed, streamed = ({(a["kind"], a["uid"], a["stage"], a["message"]) for a in r} for r in rows)
    assert replayed == streamed
    # (End to end is one baseline across the paths: the skipping files' 3 s are slow_trace under the body line.)
    assert {uid for kind, uid, _, _ in replayed if kind == "slow_stage"} == {"slow-skip"}
    (message,) = [m for kind, uid, _, m in replayed if kind == "slow_stage" and uid == "slow-skip"]
    assert "(since a, b skipped); usually 3.0 s" in message or "(since a, b skipped); usually 2.9 s" in message
