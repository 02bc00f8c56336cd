"""Per-element containment: an exception while a step handles one element (or one timer firing) becomes a dead
letter -- reason ``internal_error``, the step, the error, what it was handling -- and a counter, and the step goes
on with the next.

Why: a bundle that raises is retried, and a streaming job on Dataflow retries it forever. One element that the
code did not foresee (a bug, an input nobody imagined) would stall its key, or the whole step, until someone
drains the job. Contained, it costs that element, visibly (``dead_letters``, reason ``internal_error``;
``stagewatch/internal_errors_<step>``). The state the handler changed before it raised stays as it was left,
and the element is not tried again. The job's own transient failures that should be retried (a sink's 5xx) are
raised in the sinks, which are not contained.

Timeline (an ``Assemble`` timer raising for one file)::

    12:00:05  fire for uid A -> Trace.release raises  -> dead letter (internal_error, assemble, the error, A)
    12:00:05  fire for uid B -> as usual                -> B's measurements go on downstream
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from stagewatch.core.records import DEAD_LINE_CHARS, DeadLetter, dead_letter
from stagewatch.core.timeutil import US_PER_S, format_rfc3339

__all__ = ["INTERNAL_ERRORS", "ContainedStep", "contained"]

INTERNAL_ERRORS = "internal_errors"

F = TypeVar("F", bound=Callable[..., Any])


def _letter(step: str, exc: Exception, handling: Any) -> DeadLetter:
    # The error's text can carry the element (a line of someone else's): cut like the line itself.
    detail = f"{step}: {type(exc).__name__}: {exc}"[:DEAD_LINE_CHARS]
    return dead_letter("internal_error", detail, repr(handling), format_rfc3339(int(time.time() * US_PER_S)),
                       step.lower())


def contained(step: str) -> Callable[[F], F]:
    """Wrap a DoFn's ``process`` (or a timer callback, under its ``@on_timer``): what it yields goes out as before;
    an exception becomes one dead letter on ``INTERNAL_ERRORS``. Beam reads the wrapped method's parameters
    (state, timers, side inputs) through the wrapper (``functools.wraps``)."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                result = method(self, *args, **kwargs)
                if result is not None:
                    yield from result
            except Exception as exc:  # the containment itself: see the module docstring
                Metrics.counter("stagewatch", f"internal_errors_{step.lower()}").inc()
                handling = args[0] if args else None
                yield beam.pvalue.TaggedOutput(INTERNAL_ERRORS, _letter(step, exc, handling))

        return guarded  # type: ignore[return-value]

    return wrap


class ContainedStep(beam.PTransform):
    """A composite step whose ParDos send their contained errors to ``internal_errors`` (one PCollection per
    ParDo, filled when the step is applied; the pipeline gathers them into the dead letters)."""

    def __init__(self) -> None:
        super().__init__()
        self.internal_errors: list[beam.PCollection] = []

    def pardo(self, pcoll: beam.PCollection, label: str, fn: beam.DoFn, *side: Any, outputs: tuple[str, ...] = (),
              main: str = "main") -> beam.pvalue.DoOutputsTuple:
        applied = pcoll | label >> beam.ParDo(fn, *side).with_outputs(INTERNAL_ERRORS, *outputs, main=main)
        # Dead letters live in the global window; a step inside a windowed part of the graph would otherwise
        # hand the flatten of all dead letters its own windowing.
        errors = applied[INTERNAL_ERRORS] | f"{label}/Errors" >> beam.WindowInto(GlobalWindows())
        self.internal_errors.append(errors)
        return applied

    def map(self, pcoll: beam.PCollection, label: str, fn: Callable[[Any], Any], step: str) -> beam.PCollection:
        """``beam.Map(fn)``, contained: for the keying steps that call code on each element."""
        return self.pardo(pcoll, label, _MapFn(fn, step)).main


class _MapFn(beam.DoFn):
    def __init__(self, fn: Callable[[Any], Any], step: str) -> None:
        self._fn = fn
        self._step = step

    def process(self, element: Any) -> Iterator[Any]:
        try:
            yield self._fn(element)
        except Exception as exc:  # as in ``contained``; a plain method, as the step's name is per instance
            Metrics.counter("stagewatch", f"internal_errors_{self._step.lower()}").inc()
            yield beam.pvalue.TaggedOutput(INTERNAL_ERRORS, _letter(self._step, exc, element))
