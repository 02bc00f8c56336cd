"""The backtest end to end: simulated streams through ``replay``, dead letters, inference, fast-path parsing."""

from __future__ import annotations

import gzip
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stagewatch.backtest import front
from stagewatch.backtest import replay as replay_mod
from stagewatch.backtest.engine import DetectorConfig
from stagewatch.backtest.replay import replay, replay_files
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.events import FieldMapping, StageEvent
from stagewatch.core.parser import Parser
from stagewatch.core.stages import StageOrder
from stagewatch.core.timeutil import format_rfc3339
from stagewatch.core.verdicts import Judge
from stagewatch.evaluation.scoring import score_kinds
from stagewatch.evaluation.simulate import STAGES, SimConfig, simulate_to_dir
from stagewatch.logfiles import iter_lines
from tests.streams import Pipeline, steady_stream

pytestmark = pytest.mark.unit

# Seeds 1-9 are for tests; the published detection figures (docs/measured.md) come from seeds 101-105
# (benchmarks/detection.py).


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate_to_dir(SimConfig(seed=3, peak_rate_per_min=12), out)
    return out


def _replay_dir(d: Path, **kw):  # type: ignore[no-untyped-def]
    anomalies, summaries, dead = [], [], []
    stats = replay(
        iter_lines([str(d / "logs.jsonl")]),
        on_anomaly=lambda a: anomalies.append(a.to_dict()),
        on_summary=lambda s: summaries.append(s.to_dict()),
        on_dead_letter=lambda d: dead.append(d.to_dict()),
        **kw,
    )
    return stats, anomalies, summaries, dead


def test_simulated_day_every_fault_found(day: Path) -> None:
    stats, anomalies, summaries, dead = _replay_dir(day)
    labels = [orjson.loads(line) for line in (day / "labels.jsonl").read_bytes().splitlines()]
    assert {lb["fault"] for lb in labels} == {
        "stage_slowdown", "tenant_slow_upload", "lost_messages", "failure_burst", "missing_completion"
    }
    scores, delay = score_kinds(labels, anomalies)
    for s in scores:
        assert s.f1 >= 0.9, s
    assert delay["n"] and delay["median_s"] is not None and delay["median_s"] < 120
    assert stats.order == StageOrder(STAGES) and stats.order_inferred
    # Every junk line is accounted for with its reason, and the counts agree with the dead letters.
    assert set(stats.rejected) >= {"invalid_json", "not_object", "missing_uid", "missing_stage",
                                   "bad_timestamp", "not_utf8", "too_large"}
    assert Counter(d["reason"] for d in dead) == Counter(stats.rejected)
    # ... in the shape of the dead_letters table (report and explain read a replay's folder like BigQuery).
    from stagewatch.store.schemas import row_problems

    assert [p for d in dead for p in row_problems("dead_letters", d)] == []
    assert stats.counts["duplicates"] > 0
    assert stats.counts["negative_gaps"] > 0
    assert len(summaries) == sum(stats.traces.values())
    statuses = Counter(s["status"] for s in summaries)
    assert statuses["complete"] > 0 and statuses["stalled"] > 0 and statuses["failed"] > 0


def test_tenant_fault_is_judged_by_the_tenant_baseline(day: Path) -> None:
    _, anomalies, _, _ = _replay_dir(day)
    uploads = [a for a in anomalies if a["kind"] == "slow_stage" and a["stage"] == "upload"]
    by_tenant = Counter(a["tenant"] for a in uploads)
    assert by_tenant.most_common(1)[0][0] == "wayne"
    assert by_tenant["wayne"] >= 0.9 * len(uploads)
    # The chronically slow tenant (cyberdyne) is not an incident all day.
    assert by_tenant["cyberdyne"] <= 5
    assert "usually" in uploads[0]["message"] and "alert above" in uploads[0]["message"]


def test_simulated_normal_day_has_almost_no_anomalies(tmp_path: Path) -> None:
    # A simulated day without faults: diurnal load, twelve tenants, heavy-tailed uploads. The pure diurnal
    # pattern yields none at all (test_detection). Here one false alarm in 2,000 files is the budget: the
    # first files of a tenant whose host clock is 2 s behind look slow to register until its baseline is warm.
    manifest = simulate_to_dir(SimConfig(seed=4, peak_rate_per_min=12, faults=()), tmp_path)
    stats, anomalies, _, _ = _replay_dir(tmp_path)
    assert stats.events > 50_000
    assert len(anomalies) <= manifest["files"] / 2000, [a["message"] for a in anomalies]


def test_simulation_is_reproducible(tmp_path: Path) -> None:
    cfg = SimConfig(seed=5, hours=2, peak_rate_per_min=10)
    simulate_to_dir(cfg, tmp_path / "a")
    simulate_to_dir(cfg, tmp_path / "b")
    simulate_to_dir(SimConfig(seed=6, hours=2, peak_rate_per_min=10), tmp_path / "c")
    a, b, c = ((tmp_path / x / "logs.jsonl").read_bytes() for x in "abc")
    assert a == b and a != c


def test_stage_order_inferred_for_another_pipeline_with_no_configuration() -> None:
    pipe = Pipeline(stages=("ingest", "scan", "ocr", "index", "notify"),
                    medians={"scan": 2.0, "ocr": 30.0, "index": 1.0, "notify": 0.5})
    normal = steady_stream(pipe, hours=6, every_s=15, seed=7)
    end = normal[-1].t_us

    def slow(stage: str, t: int) -> float:
        return 10.0 if stage == "ocr" and t >= end + 60_000_000 else 1.0

    later = [e._replace(uid="late-" + e.uid, t_us=e.t_us + end - normal[0].t_us)
             for e in steady_stream(pipe, hours=0.5, every_s=15, seed=8)]
    slowed = [e._replace(t_us=e.t_us) for e in later]
    del slow
    # Plain JSON lines, no LogEntry wrapper, no configuration at all.
    lines = [
        orjson.dumps({"uid": e.uid, "stage": e.stage, "timestamp": format_rfc3339(e.t_us), "tenant": e.tenant})
        for e in [*normal, *slowed]
    ]
    stats = replay(lines)
    assert stats.order == StageOrder(pipe.stages) and stats.order_inferred
    assert stats.events == len(lines)
    assert stats.traces["complete"] > 1000


def test_default_fast_path_parses_exactly_like_the_generic_path(day: Path) -> None:
    fast = Parser()
    generic = Parser(FieldMapping(extra_failed=("jsonPayload.failed", "failed", "never.there")))
    assert fast._default and not generic._default
    lines = list(iter_lines([str(day / "logs.jsonl")]))[:20_000]
    lines += [
        b'{"timestamp": "2026-06-06T00:00:00Z", "labels": {"uid": 12, "stage": "x"}, "severity": 600}',
        b'{"timestamp": 1780000000, "uid": "u", "stage": "s", "status": 503, "duration_ms": 12}',
        b'{"timestamp": "2026-06-06T00:00:00.5+09:00", "jsonPayload": {"uid": "", "stage": "s"}, "uid": "v"}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "httpRequest": {"latency": "x"}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "jsonPayload": {"failed": true}}',
        # Where a typed decoder and a dict could part ways: types, emptiness, absence vs null, shapes.
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "", "stage": "s"}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": ""}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "labels": {"uid": "u", "stage": "s", "tenant": 7, "lot": ""}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "insertId": 5, "insert_id": "x"}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "insertId": "", "insert_id": "x"}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "jsonPayload": {"duration_ms": null}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "duration_ms": 4.5}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "httpRequest": {"latency": "-1s"}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "httpRequest": {"latency": "1e999s"}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "httpRequest": {"latency": 2}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "httpRequest": {"status": 502}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "httpRequest": {"status": "200"}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "httpRequest": [1]}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "severity": "error"}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "failed": "yes", "jsonPayload": {}}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "jsonPayload": "text", "uid": "u", "stage": "s"}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "jsonPayload": null, "uid": "u", "stage": "s"}',
        b'{"timestamp": "not a time", "uid": "u", "stage": "s"}',
        b'{"timestamp": null, "uid": "u", "stage": "s"}',
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "uid": "second"}',
        '{"timestamp": "2026-06-06T00:00:00Z", "uid": "fichier-é", "stage": "s", "m": "日本"}'.encode(),
        '{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s"}',  # str, not bytes
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "m": "\xff"}',  # not UTF-8, unread field
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "m": "\\ud800"}',  # a lone surrogate
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s", "m": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"timestamp": "2026-06-06T00:00:00Z", "uid": "u", "stage": "s"} trailing',
        b"[1, 2]",
        b"",
    ]
    for line in lines:
        assert fast.parse(line) == generic.parse(line), line


def test_judging_by_a_snapshot_looked_up_once_per_interval_changes_nothing(
    day: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Judge`` keeps what judges each (measure, stage, tenant) for an interval; forgetting it before every
    call must give the same anomalies, traces and counts on a day with every kind of fault."""
    cached = _replay_dir(day)
    for name in ("measure", "stall_deadline"):
        method = getattr(Judge, name)

        def uncached(self: Judge, *args: object, _method: Any = method) -> Any:
            self._renew()
            return _method(self, *args)

        monkeypatch.setattr(Judge, name, uncached)
    fresh = _replay_dir(day)
    assert cached[0].anomalies == fresh[0].anomalies and cached[0].counts == fresh[0].counts
    assert cached[1:] == fresh[1:]
    assert {a["kind"] for a in cached[1]} >= {"slow_stage", "slow_trace", "stalled", "failed"}


def _replay_files(
    paths: list[str], processes: int, cfg: DetectorConfig | None = None
) -> tuple[dict, list, list, list, list, int]:
    records: dict[str, list] = {"anomalies": [], "summaries": [], "dead": [], "arrivals": []}
    read = [0]

    def on_bytes(n: int) -> None:
        read[0] += n

    stats = replay_files(
        paths, processes=processes, on_bytes=on_bytes, cfg=cfg,
        on_anomaly=lambda a: records["anomalies"].append(a.to_dict()),
        on_summary=lambda s: records["summaries"].append(s.to_dict()),
        on_dead_letter=lambda d: records["dead"].append(d.to_dict()),
        on_arrival=records["arrivals"].append,
    )
    figures = {k: v for k, v in stats.to_dict().items() if k != "seconds"}
    return figures, records["anomalies"], records["summaries"], records["dead"], records["arrivals"], read[0]


def test_reading_in_a_second_process_gives_the_same_records_in_the_same_order(day: Path, tmp_path: Path) -> None:
    """``processes=2`` moves reading, parsing, dedup and ordering into a child process: the back must hear
    exactly the same calls. The inputs: a .gz whose first lines are junk (dead letters held until the first
    event time), a late event, and the simulated day (every fault, duplicates, skew, junk). Under the body line some
    of that day's stalled files then arrive, so arrivals are heard too (under the tail line none do)."""
    logs = (day / "logs.jsonl").read_bytes().splitlines(keepends=True)
    first = orjson.loads(logs[5])
    late = dict(first, insertId="late-1", timestamp=format_rfc3339(
        int(datetime.fromisoformat(first["timestamp"][:26]).replace(tzinfo=UTC).timestamp() * 1e6) - 3_600_000_000
    ))
    head = tmp_path / "head.jsonl.gz"
    head.write_bytes(gzip.compress(b"not json\n[1]\n" + b"".join(logs[:2000]) + orjson.dumps(late) + b"\n"))
    rest = tmp_path / "rest.jsonl"
    rest.write_bytes(b"".join(logs[2000:]))
    paths = [str(head), str(rest)]
    body = DetectorConfig(baseline=BaselineConfig(line="body"))
    one, two = _replay_files(paths, processes=1, cfg=body), _replay_files(paths, processes=2, cfg=body)
    assert one == two
    figures, anomalies, summaries, dead, arrivals, read = one
    assert summaries and len(summaries) == sum(figures["traces"].values())
    assert read == len(gzip.decompress(head.read_bytes())) + rest.stat().st_size
    assert figures["late"] == 1 and dead[0]["reason"] == "invalid_json" and any(d["reason"] == "late" for d in dead)
    assert {a["kind"] for a in anomalies} >= {"slow_stage", "slow_trace", "stalled", "failed"} and arrivals


def test_a_failure_in_the_reading_process_is_an_error_here(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FileNotFoundError"):
        replay_files([str(tmp_path / "gone.jsonl")], processes=2)
    with pytest.raises(ValueError, match="IsADirectoryError"):
        replay_files([str(tmp_path)], processes=2)
    with pytest.raises(ValueError, match="processes must be 1 or 2"):
        replay_files([str(tmp_path)], processes=3)


def test_stopping_early_stops_the_reading_process(day: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A callback that raises (a closed stdout, Ctrl-C) ends the backtest here; the child must not outlive it."""
    children: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def record(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        children.append(popen(*args, **kwargs))
        return children[-1]

    monkeypatch.setattr(front.subprocess, "Popen", record)

    def stop(_: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay_files([str(day / "logs.jsonl")], processes=2, on_anomaly=stop)
    assert len(children) == 1 and children[0].poll() is not None


def test_a_second_process_by_default_only_for_large_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"{}\n" * 1000)
    assert replay_mod.default_processes([str(small)]) == 1
    monkeypatch.setattr(replay_mod, "TWO_PROCESSES_FROM", 1000)
    monkeypatch.setattr(replay_mod.os, "cpu_count", lambda: 2)
    assert replay_mod.default_processes([str(small)]) == 2
    assert replay_mod.default_processes([str(small), "-"]) == 1  # stdin is read here
    monkeypatch.setattr(replay_mod.os, "cpu_count", lambda: 1)
    assert replay_mod.default_processes([str(small)]) == 1


def test_end_of_input_reports_in_flight_files_open(day: Path) -> None:
    lines = list(iter_lines([str(day / "logs.jsonl")]))
    summaries: list = []
    stats = replay(lines[: len(lines) // 2], on_summary=summaries.append)
    assert stats.traces["open"] > 0
    open_uids = {s.uid for s in summaries if s.status == "open"}
    assert all(isinstance(u, str) for u in open_uids)


def test_parsed_events_are_stage_events(day: Path) -> None:
    parser = Parser()
    first = next(iter(iter_lines([str(day / "logs.jsonl")])))
    ev = parser.parse(first)
    assert type(ev) is StageEvent and ev.stage in STAGES


def test_a_zero_dedup_horizon_is_refused() -> None:
    """It divided by zero in the dedup rotation (before that: rotated without end)."""
    from stagewatch.backtest.engine import DetectorConfig

    with pytest.raises(ValueError, match="dedup horizon must be more than 0 seconds"):
        DetectorConfig(allowed_lateness_s=0, dedup_horizon_s=0)


def test_insert_ids_an_application_sets_are_duplicates_only_within_one_file() -> None:
    """Two workers log stage b with their own counters as insertIds, so files share them. Cloud Logging keeps
    such lines (a duplicate there repeats the timestamp too), and so does the streaming job, which dedups per
    file: the backtest dedupped across files and dropped one b in two, leaving those files without b. A line
    repeated within a file is still one."""
    t0 = 1_780_000_000_000_000

    def line(uid: str, stage: str, t_us: int, insert_id: str) -> bytes:
        return orjson.dumps({"insertId": insert_id, "timestamp": format_rfc3339(t_us),
                             "jsonPayload": {"uid": uid, "stage": stage}})

    lines = []
    for k in range(40):
        t = t0 + k * 10_000_000
        for uid in (f"x{k}", f"y{k}"):
            lines += [line(uid, "a", t, f"{uid}-a"), line(uid, "b", t + 1_000_000, f"b-{k}"),
                      line(uid, "c", t + 2_000_000, f"{uid}-c")]
        lines.append(line(f"x{k}", "c", t + 2_000_000, f"x{k}-c"))  # redelivered
        lines.append(line(f"y{k}", "b", t + 1_000_000, f"b-{k}"))  # redelivered: the second file with that id
    summaries: list[Any] = []
    stats = replay(iter(lines), order=StageOrder.parse("a,b,c"), on_summary=summaries.append)
    assert stats.counts["duplicates"] == 80
    assert len(summaries) == 80 and all(s.status == "complete" and len(s.stages) == 3 for s in summaries)
    # A line sent again is a duplicate even when the key's first file was forgotten: "u" logs "k" in one dedup
    # generation (an hour of event time), "v" logs "k" in the next and sends it again in the third.
    hour = 3_600_000_000
    timed = [(t0 + i * 30_000_000, line(f"f{i}", "a", t0 + i * 30_000_000, f"f{i}")) for i in range(300)]
    tv = t0 + hour + 2_000_000
    timed += [(t0 + 1, line("u", "a", t0 + 1, "k")), (tv, line("v", "a", tv, "k"))]
    again = [x for _, x in sorted(timed)] + [line("v", "a", tv, "k")]
    stats = replay(iter(again), order=StageOrder.parse("a,b,c"))
    assert stats.rejected == {} and stats.counts["duplicates"] == 1
