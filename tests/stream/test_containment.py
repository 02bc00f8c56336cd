"""Per-element containment, step by step: the job is fed a file its code cannot handle at one step (the step's own
code made to raise for that file), and the step turns it into a dead letter (``internal_error``, naming the step)
while every other file goes through -- on Dataflow the raise would be retried forever."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.events import StageEvent
from stagewatch.core.records import dumps
from stagewatch.core.stages import StageOrder
from stagewatch.core.traces import Trace, TraceRules
from stagewatch.stream.local import LocalRunner
from stagewatch.stream.pipeline import build
from stagewatch.stream.steps import contain
from tests.stream.beam_bugs import streaming
from tests.stream.test_pipeline import _line
from tests.streams import Pipeline, S, file_events, steady_stream

pytestmark = pytest.mark.pipeline

PIPE = Pipeline(stages=("a", "b", "c"), medians={"b": 2.0, "c": 5.0})
RULES = TraceRules(StageOrder(PIPE.stages))
POISON = "poison-1"
_OUT: dict[str, list[dict[str, Any]]] = {}


class _Collect(beam.DoFn):
    def __init__(self, name: str) -> None:
        self._name = name

    def process(self, record: Any) -> None:
        import orjson

        _OUT.setdefault(self._name, []).append(orjson.loads(dumps(record)))


def _raising_for_poison(original: Callable[..., Any], is_poison: Callable[..., bool]) -> Callable[..., Any]:
    def patched(*args: Any, **kwargs: Any) -> Any:
        if is_poison(*args, **kwargs):
            raise RuntimeError("the code did not foresee this")
        return original(*args, **kwargs)

    return patched


def _uid_in(*args: Any, **kwargs: Any) -> bool:
    return POISON in repr(args)[:400]


# (step, where its code is made to raise for the poisoned file)
CASES: list[tuple[str, str, str]] = [
    ("Parse", "stagewatch.core.parser.Parser", "_parse_default"),
    ("Dedup", "stagewatch.core.events.StageEvent", "dedup_key"),
    ("Assemble", "stagewatch.core.traces.Trace", "release"),
    ("Learn", "stagewatch.stream.steps.learn", "_shard_of"),
    ("Judge", "stagewatch.stream.steps.judging", "judge_measurement"),
    ("Stalls", "stagewatch.stream.steps.stalls", "arrival"),
    ("Lots", "stagewatch.stream.steps.lots", "add_file"),
    ("Incidents", "stagewatch.stream.steps.incidents", "feed"),
]


def _stream() -> tuple[TestStream, int]:
    """An hour of files, then the poisoned one (a tenant and a lot of its own; it fails at c, so that it is an
    anomaly too), then more files: the ones after it must still go through."""
    warm = steady_stream(PIPE, hours=1.0, every_s=10, seed=7)
    t = warm[-1].t_us + 5 * S
    poison = file_events(PIPE, POISON, t, random.Random(1), tenant=POISON)
    poison = [ev._replace(lot=POISON) for ev in poison]
    after = [ev._replace(uid="after-" + ev.uid, insert_id="after-" + str(ev.insert_id), t_us=ev.t_us + t - warm[0].t_us)
             for ev in steady_stream(PIPE, hours=0.3, every_s=10, seed=8)]
    events = sorted(warm + poison + after, key=lambda e: e.t_us)
    stream, last = TestStream(), 0
    for k in range(0, len(events), 60):
        chunk = events[k:k + 60]
        stream = stream.add_elements([TimestampedValue(_line(ev, "ERROR" if ev.uid == POISON and ev.stage == "c"
                                                             else "INFO"), ev.t_us / S) for ev in chunk])
        last = chunk[-1].t_us
        stream = stream.advance_watermark_to((last - 60 * S) // 1000 / 1000)
    n_files = len({ev.uid for ev in events}) - 1
    return stream.advance_watermark_to((last + 7200 * S) // 1000 / 1000).advance_watermark_to_infinity(), n_files


@pytest.mark.parametrize(("step", "owner", "name"), CASES, ids=[c[0] for c in CASES])
def test_a_step_that_cannot_handle_an_element_dead_letters_it_and_goes_on(
    step: str, owner: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    module_name, _, cls = owner.rpartition(".")
    target = getattr(importlib.import_module(module_name), cls) if cls[0].isupper() else importlib.import_module(owner)
    monkeypatch.setattr(target, name, _raising_for_poison(getattr(target, name), _uid_in))
    stream, n_files = _stream()
    _OUT.clear()
    with beam.Pipeline(runner=LocalRunner(), options=streaming()) as p:
        out = build(p | stream, RULES, BaselineConfig(interval_s=300))
        out.dead_letters | "CollectDead" >> beam.ParDo(_Collect("dead"))
        out.traces | "CollectTraces" >> beam.ParDo(_Collect("traces"))
    internal = [d for d in _OUT.get("dead", []) if d["reason"] == "internal_error"]
    assert internal, _OUT.get("dead")
    assert {d["source"] for d in internal} == {step.lower()}
    assert all("RuntimeError: the code did not foresee this" in d["detail"] for d in internal)
    # Every other file went through, those after the poisoned one included.
    others = {t["uid"] for t in _OUT.get("traces", []) if t["uid"] != POISON}
    assert len(others) == n_files and any(u.startswith("after-") for u in others)


def test_contained_keeps_beams_view_of_the_method() -> None:
    """Beam finds a step's state and timers in its methods' defaults: the wrapper must show them as they were."""
    from apache_beam.transforms.core import get_function_args_defaults

    from stagewatch.stream.steps.assemble import _AssembleFn

    args, defaults = get_function_args_defaults(_AssembleFn._fire)
    assert args[:2] == ["self", "key"] and len(defaults) == len(args) - 1
    assert contain.INTERNAL_ERRORS == "internal_errors"
    assert Trace.release.__name__ == "release" and StageEvent._fields[0] == "uid"
