"""What the local runner changes in Beam's bundle-based in-process runner, patch by patch, each undone when the run
ends (``Patcher``). Written against Beam ``BEAM_VERSION``; ``runner.LocalRunner`` applies none of them to any
other version.

Corrections (applied whatever the fixes; a Dataflow job needs neither -- both are bugs of this runner, reproduced
in ``docs/local-runner.md``):

A. ``skip_empty_bundles``: an empty bundle is not scheduled on its consumers. Scheduled on a ParDo with a side
   input, it crashes the runner (``executor.py``: the window of the bundle's latest element is ``None``, "no
   attribute max_timestamp"), and the job's judging step takes the timer-driven output of the trace step,
   whose bundles are often empty. (Also fix 1 below: the watermark manager already ignores empty bundles --
   "They do not impact watermarks and should not trigger downstream execution", its own comment.)
B. ``hold_output_for_timers``: a stateful step's pending event-time timers hold its output watermark, as in the
   Beam model (a timer's output timestamp holds the watermark; Dataflow does so): the runner held nothing for
   them, so what a timer emitted could reach the next step after that step's watermark had passed it. The hold
   binds only once the input watermark reaches the timer, until the timer has fired and its bundle is
   committed. The baselines depend on it: the per-stage roll folds an interval only after every shard's
   counts of it arrived, however far the watermark jumps.
C. ``pubsub_watermark_behind_messages``: the Pub/Sub reader's watermark never passes the messages it reads. Beam's
   sets it to the wall clock at every pull (its own "TODO(udim): Correct value for watermark hold"), so with a
   backlog, or lines published out of order, every line behind the wall clock was late (the soak: a fifth of
   them, and false stalls as the watermark ran ahead of the backlog). Dataflow estimates the watermark from the
   timestamps of the messages not yet read; this runner cannot see those, so it holds the watermark at the
   oldest timestamp of the messages it just read (the wall clock when none came; lines further than the
   allowance from the pull's median line count for nothing: a writer with a stale clock), less the job's
   ``allowed_lateness_s`` -- the backtest's allowance, counted from the oldest line of a pull rather than the
   newest event: more lenient -- and never moves it back.

Fixes (measured: ``benchmarks/stream_throughput.py``; each removes work whose result is already known, and a
test runs the job with and without each one and compares every output byte for byte). The runner spends nearly
all of a local run on bookkeeping that grows with bundles times keys, not on the job's code:

1. (= correction A) empty bundles are not handed to consumers; with per-UID state upstream, most of a run was
   empty bundles cascading down every branch.
2. ``cache_specs_and_signatures``: DoFn state and timer specs are looked up once per DoFn class (they are
   declared on the class), and a method's parameter list once per function, not by inspecting every method for
   every bundle.
3. ``reuse_side_input_views``: a side input's view is built again only when new values arrived (the runner
   built one for every bundle, re-filtering every value of every window).
4. ``skip_quiet_timer_scans``: a step's timers are not scanned again when nothing that decides them changed
   (its input watermark, its committed state, the last scan's result); each scan visits every key it ever held.
5. ``immutable_deepcopy``: ``copy.deepcopy`` keeps Beam's timestamps and windows as they are (immutable values):
   the runner deep-copies a key's timers each time a bundle touches the key.
6. ``pickle_each_dofn_once``: each bundle still gets its own copy of its DoFn, unpickled from bytes pickled once
   per DoFn (the runner's own TODO: "Consider storing the serialized form as an optimization").
7. ``fire_due_timers_in_bundle``: event-time timers that a bundle sets at or before its input watermark fire in
   that bundle, in rounds, earliest first, instead of a bundle per round; the trace step releases a file's
   events one timer at a time, and each bundle cascaded down every step. Beam lets a runner fire a timer at any
   moment after the watermark passed it; the runner's own scan uses the same test.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stagewatch.stream.parameters import PARAMETERS

__all__ = ["BEAM_VERSION", "CORRECTIONS", "FIXES", "PATCHES", "Patch", "Patcher"]

#: The Beam release these patches were written for and tested against (setup.py pins it).
BEAM_VERSION = "2.77.0"

_MISSING = object()

#: ``allowed_lateness_s`` when the pipeline's options do not say (the job's own default).
DEFAULT_LATENESS_S = float(next(p.default or 0 for p in PARAMETERS if p.name == "allowed_lateness_s"))


class Patcher:
    """Sets attributes of Beam's classes and modules, remembering what was there, so that ``undo`` leaves them
    exactly as they were (an attribute that was not defined on the object itself is deleted again)."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, vars(owner).get(name, _MISSING)))
        setattr(owner, name, value)

    @property
    def originals(self) -> dict[tuple[Any, str], Any]:
        """Each attribute touched, and what it was before the first change (``None``: not on the object itself)."""
        out: dict[tuple[Any, str], Any] = {}
        for owner, name, value in self._saved:
            out.setdefault((owner, name), None if value is _MISSING else value)
        return out

    def undo(self) -> None:
        while self._saved:
            owner, name, value = self._saved.pop()
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


@dataclass(frozen=True)
class Patch:
    name: str
    correction: bool  # a correction is applied with or without the fixes
    apply: Callable[[Patcher], None]


def _skip_empty_bundles(p: Patcher) -> None:
    from apache_beam.runners.direct.executor import _ExecutorServiceParallelExecutor as Executor

    schedule = Executor.schedule_consumers

    def schedule_consumers(self: Any, committed_bundle: Any) -> None:
        if committed_bundle.has_elements():
            schedule(self, committed_bundle)

    p.set(Executor, "schedule_consumers", schedule_consumers)


def _hold_output_for_timers(p: Patcher) -> None:
    from apache_beam.runners.direct.transform_evaluator import _ParDoEvaluator
    from apache_beam.transforms.timeutil import TimeDomain

    finish = _ParDoEvaluator.finish_bundle

    def finish_bundle(self: Any) -> Any:
        result = finish(self)  # commits the bundle's state and timers into the keys it touched
        if self.user_state_context is not None:
            for encoded_key, state in self._step_context.partial_keyed_state.items():
                pending = [ts for timers in state.timers.values()
                           for (_, domain, _), ts in timers.items() if domain == TimeDomain.WATERMARK]
                result.keyed_watermark_holds[encoded_key] = min(pending, default=None)
        return result

    p.set(_ParDoEvaluator, "finish_bundle", finish_bundle)


def _pubsub_watermark_behind_messages(p: Patcher) -> None:
    import time

    from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator
    from apache_beam.utils.timestamp import Timestamp

    read, finish = _PubSubReadEvaluator._read_from_pubsub, _PubSubReadEvaluator.finish_bundle
    # Per run (its evaluation context) and subscription: the last hold, never moved back -- two local runs in
    # one process reading one subscription each have their own. Per options object: the allowance, parsed once.
    last_hold: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
    allowance: dict[int, tuple[Any, int]] = {}

    def read_from_pubsub(self: Any, timestamp_attribute: Any) -> Any:
        data = read(self, timestamp_attribute)
        self._stagewatch_times = [ts for ts, _ in data]
        return data

    def finish_bundle(self: Any) -> Any:
        result = finish(self)  # pulls, via read_from_pubsub
        holds = last_hold.setdefault(self._evaluation_context, {})
        previous = holds.get(self._sub_name)
        allow_us = _allowance_us(self, allowance)
        now_us = int(time.time() * 1_000_000)
        times = sorted(int(ts.micros) for ts in self.__dict__.get("_stagewatch_times", ()))
        # The oldest line of the pull holds the watermark, among those within the allowance of the pull's median
        # line: one writer with a stale (or a future) clock in every pull must not stop (or move) it.
        middle = times[len(times) // 2] if times else now_us
        oldest = min((t for t in times if abs(t - middle) <= allow_us), default=now_us)
        hold = Timestamp(micros=min(oldest, now_us) - allow_us)
        if previous is not None and hold < previous:
            hold = previous
        holds[self._sub_name] = hold
        result.keyed_watermark_holds[None] = hold
        return result

    p.set(_PubSubReadEvaluator, "_read_from_pubsub", read_from_pubsub)
    p.set(_PubSubReadEvaluator, "finish_bundle", finish_bundle)


def _allowance_us(evaluator: Any, cache: dict[int, tuple[Any, int]]) -> int:
    """The job's ``allowed_lateness_s`` (its default for a pipeline that is not stagewatch's)."""
    options = getattr(evaluator._evaluation_context, "pipeline_options", None)
    known = cache.get(id(options))
    if known is None or known[0] is not options:
        every = options.get_all_options(retain_unknown_options=True) if options is not None else {}
        value = every.get("allowed_lateness_s")
        try:
            seconds = float(value) if value not in (None, "") else DEFAULT_LATENESS_S
        except (TypeError, ValueError):
            seconds = DEFAULT_LATENESS_S
        if not 0 <= seconds < 10 * 365 * 86400:  # nan, inf, negative: not a setting (stagewatch refuses them)
            seconds = DEFAULT_LATENESS_S
        known = cache[id(options)] = (options, int(seconds * 1_000_000))
    return known[1]


def _cache_specs_and_signatures(p: Patcher) -> None:
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import core, userstate

    inspect_specs = userstate.get_dofn_specs
    by_class: dict[type, Any] = {}

    def get_dofn_specs(dofn: Any) -> Any:
        specs = by_class.get(type(dofn))
        if specs is None:
            specs = by_class[type(dofn)] = inspect_specs(dofn)
        return specs

    p.set(userstate, "get_dofn_specs", get_dofn_specs)
    p.set(transform_evaluator, "get_dofn_specs", get_dofn_specs)

    inspect_args = core.get_function_args_defaults
    by_function: dict[tuple[Any, bool], tuple[list[str], list[Any]]] = {}

    def get_function_args_defaults(f: Any) -> tuple[list[str], list[Any]]:
        # A bound method's parameters (self left out) are its function's, whichever instance it is bound to;
        # anything else (partials, callables, builtins) is inspected as before.
        if type(f) is types.MethodType:
            key = (f.__func__, True)
        elif type(f) is types.FunctionType:
            key = (f, False)
        else:
            return inspect_args(f)
        found = by_function.get(key)
        if found is None:
            found = by_function[key] = inspect_args(f)
        return list(found[0]), list(found[1])  # callers get lists of their own, as before

    p.set(core, "get_function_args_defaults", get_function_args_defaults)


def _reuse_side_input_views(p: Patcher) -> None:
    from apache_beam.runners.direct.evaluation_context import _SideInputsContainer

    to_value = _SideInputsContainer._pvalue_to_value

    def pvalue_to_value(self: Any, side_input: Any, values: list[Any]) -> Any:
        # Called under the container's lock with the view's own list of values, which only grows.
        views: dict[Any, tuple[tuple[int, int], Any]] = self.__dict__.setdefault("_stagewatch_views", {})
        key = (id(values), len(values))
        found = views.get(side_input)
        if found is None or found[0] != key:
            found = views[side_input] = (key, to_value(self, side_input, values))
        return found[1]

    p.set(_SideInputsContainer, "_pvalue_to_value", pvalue_to_value)


def _skip_quiet_timer_scans(p: Patcher) -> None:
    from apache_beam.runners.direct.evaluation_context import EvaluationContext
    from apache_beam.runners.direct.watermark_manager import _TransformWatermarks

    scan = _TransformWatermarks.extract_transform_timers

    def extract_transform_timers(self: Any) -> Any:
        watermark = self._input_watermark
        if not self.__dict__.get("_stagewatch_changed", True) and self.__dict__.get("_stagewatch_quiet") == watermark:
            return [], False
        self._stagewatch_changed = False
        fired, realtime = scan(self)
        self._stagewatch_quiet = watermark if not fired and not realtime else None
        return fired, realtime

    handle = EvaluationContext.handle_result

    def handle_result(self: Any, completed_bundle: Any, completed_timers: Any, result: Any) -> Any:
        # A bundle's state and timers are committed in here: mark its step changed before (a scan running
        # meanwhile may see either state) and after (the next scan sees the committed one).
        watermarks = self._watermark_manager.get_watermarks(result.transform)
        watermarks._stagewatch_changed = True
        try:
            return handle(self, completed_bundle, completed_timers, result)
        finally:
            watermarks._stagewatch_changed = True

    p.set(_TransformWatermarks, "extract_transform_timers", extract_transform_timers)
    p.set(EvaluationContext, "handle_result", handle_result)


def _immutable_deepcopy(p: Patcher) -> None:
    from apache_beam.transforms.window import BoundedWindow
    from apache_beam.utils.timestamp import Timestamp

    def same(self: Any, memo: Any) -> Any:
        return self

    p.set(Timestamp, "__deepcopy__", same)
    p.set(BoundedWindow, "__deepcopy__", same)


def _pickle_each_dofn_once(p: Patcher) -> None:
    from apache_beam import DoFn
    from apache_beam.internal import pickler
    from apache_beam.runners.direct import transform_evaluator

    lib = pickler.desired_pickle_lib
    dumps, loads = getattr(lib, "_dumps", None), getattr(lib, "_loads", None)
    if dumps is None or loads is None:  # another Beam's pickler: leave it as it is
        return
    roundtrip = pickler.roundtrip
    pickled: dict[int, tuple[Any, bytes]] = {}  # id -> (the DoFn, kept alive so its id is not reused; bytes)

    def roundtrip_once(o: Any) -> Any:
        if not isinstance(o, DoFn):
            return roundtrip(o)
        found = pickled.get(id(o))
        if found is None or found[0] is not o:
            found = pickled[id(o)] = (o, dumps(o))
        return loads(found[1])

    # Only where the runner copies a bundle's DoFn: elsewhere (building a ParDo) a DoFn may change between
    # two round trips, and must be pickled as it is then.
    p.set(transform_evaluator, "pickler", types.SimpleNamespace(roundtrip=roundtrip_once))


def _fire_due_timers_in_bundle(p: Patcher) -> None:
    from apache_beam.runners.direct.transform_evaluator import _ParDoEvaluator
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.transforms.userstate import _TimerTuple

    finish = _ParDoEvaluator.finish_bundle  # correction B's, applied before this
    consumed = _TimerTuple(cleared=True, timestamp=None)

    def due_timers(self: Any) -> list[tuple[Any, bytes, Any, Any, str]]:
        watermark = self._execution_context.watermarks.input_watermark
        due = []
        for (encoded_key, window, spec), timer in self.user_state_context.cached_timers.items():
            if spec.time_domain != TimeDomain.WATERMARK:
                continue
            for tag, recorded in timer._timer_recordings.items():
                if not recorded.cleared and recorded.timestamp is not None and recorded.timestamp <= watermark:
                    due.append((recorded.timestamp, encoded_key, window, spec, tag))
        return due

    def finish_bundle(self: Any) -> Any:
        if self.user_state_context is not None:
            while due := due_timers(self):
                due.sort(key=lambda d: d[0])
                for timestamp, encoded_key, window, spec, tag in due:
                    # Fired: the recording is consumed (committing it clears the timer); whatever the callback
                    # sets anew is recorded in its place.
                    self.user_state_context.cached_timers[(encoded_key, window, spec)]._timer_recordings[tag] = consumed
                    self.runner.process_user_timer(spec, self.key_coder.decode(encoded_key), window, timestamp,
                                                   None, tag)
        return finish(self)  # the correction's, when applied: timers fired here hold nothing any more

    p.set(_ParDoEvaluator, "finish_bundle", finish_bundle)


#: In the order they are applied (undone in reverse): the corrections first, fix 7 wrapping correction B.
PATCHES: tuple[Patch, ...] = (
    Patch("skip_empty_bundles", True, _skip_empty_bundles),
    Patch("hold_output_for_timers", True, _hold_output_for_timers),
    Patch("pubsub_watermark_behind_messages", True, _pubsub_watermark_behind_messages),
    Patch("cache_specs_and_signatures", False, _cache_specs_and_signatures),
    Patch("reuse_side_input_views", False, _reuse_side_input_views),
    Patch("skip_quiet_timer_scans", False, _skip_quiet_timer_scans),
    Patch("immutable_deepcopy", False, _immutable_deepcopy),
    Patch("pickle_each_dofn_once", False, _pickle_each_dofn_once),
    Patch("fire_due_timers_in_bundle", False, _fire_due_timers_in_bundle),
)
CORRECTIONS = tuple(p.name for p in PATCHES if p.correction)
FIXES = tuple(p.name for p in PATCHES if not p.correction)
