"""``LocalRunner``: the runner of local runs -- Beam's bundle-based in-process runner, with the corrections and
fixes of ``patches`` applied while a run is going and undone when it ends.

Why this runner: ``DirectRunner`` hands a streaming pipeline to Prism, which downloads a binary first (and hangs
offline); the bundle-based runner runs it in this process. ``stagewatch run`` uses it for ``--input_file`` runs
and when asked by name (``--runner StagewatchLocalRunner``, e.g. against the emulators); any other ``--runner``
is Beam's own, untouched.

Scope: the patches change classes and module functions of Beam's that the whole process shares, so they are
applied when a run starts (``run_pipeline``) and undone when it is waited for or cancelled: a graph built for
Dataflow before or after a local run, in the same process, is built by Beam's own code. One set of patches is
in force at a time; overlapping local runs share it (and must ask for the same fixes).

Version: the patches reach into private parts of Beam ``BEAM_VERSION``. On any other Beam the runner says so in
one warning line and runs as Beam ships it, patching nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import apache_beam
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.runner import PipelineResult

from stagewatch.stream.local.patches import BEAM_VERSION, CORRECTIONS, FIXES, PATCHES, Patcher

__all__ = ["NAME", "LocalRunner", "applied"]

#: What ``--runner`` names this runner (any case).
NAME = "StagewatchLocalRunner"

_LOG = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, Any] = {"names": None, "patcher": None, "runs": 0}


def applied() -> frozenset[str] | None:
    """The patches in force now (None: Beam as shipped)."""
    with _lock:
        names: frozenset[str] | None = _state["names"]
        return names


def _acquire(names: frozenset[str]) -> None:
    with _lock:
        if _state["runs"] == 0:
            patcher = Patcher()
            try:
                for patch in PATCHES:
                    if patch.name in names:
                        patch.apply(patcher)
            except BaseException:
                patcher.undo()
                raise
            _state.update(names=names, patcher=patcher, runs=1)
        elif _state["names"] == names:
            _state["runs"] += 1
        else:
            raise RuntimeError(f"another local run with other runner fixes ({sorted(_state['names'])}) is going on "
                               "in this process; wait for it to end")


def _release() -> None:
    with _lock:
        _state["runs"] -= 1
        if _state["runs"] == 0:
            _state["patcher"].undo()
            _state.update(names=None, patcher=None)


class _ScopedResult(PipelineResult):
    """The run's result; the patches are undone once it has finished or was cancelled."""

    def __init__(self, inner: PipelineResult) -> None:
        super().__init__(inner.state)
        self._inner = inner
        self._open = True

    def _end(self) -> None:
        if self._open:
            self._open = False
            _release()

    @property
    def state(self) -> Any:
        return self._inner.state

    def wait_until_finish(self, duration: Any = None) -> Any:
        try:
            return self._inner.wait_until_finish(duration)
        finally:
            self._end()

    def cancel(self) -> Any:
        try:
            return self._inner.cancel()
        finally:
            self._end()

    def metrics(self) -> Any:
        return self._inner.metrics()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class LocalRunner(BundleBasedDirectRunner):
    """``fixes``: which of ``patches.FIXES`` to apply (default all; the corrections always are);
    ``beam_version``: the Beam this runs on (a test's stand-in for another release)."""

    def __init__(self, fixes: Iterable[str] | None = None, beam_version: str = apache_beam.__version__) -> None:
        super().__init__()
        chosen = frozenset(FIXES if fixes is None else fixes)
        unknown = chosen - set(FIXES)
        if unknown:
            raise ValueError(f"unknown runner fixes {sorted(unknown)}; the fixes: {', '.join(FIXES)}")
        self.patches = frozenset(CORRECTIONS) | chosen
        self.supported = beam_version == BEAM_VERSION
        if not self.supported:
            _LOG.warning("stagewatch: the local runner's corrections are written for Beam %s, this is Beam %s: "
                         "running on Beam's own in-process runner, unpatched", BEAM_VERSION, beam_version)

    def run_pipeline(self, pipeline: Any, options: Any) -> PipelineResult:
        if not self.supported:
            return super().run_pipeline(pipeline, options)
        _acquire(self.patches)
        try:
            result = super().run_pipeline(pipeline, options)
        except BaseException:
            _release()
            raise
        return _ScopedResult(result)
