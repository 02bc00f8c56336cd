"""The runner of local runs: Beam's bundle-based DirectRunner, with one measured fix to its per-bundle cost.

Why this runner: ``DirectRunner`` hands a pipeline to Prism when it can, and Prism downloads a binary first
(it hangs offline); the bundle-based DirectRunner runs streaming pipelines in process.

Why the fix: that runner builds a fresh DoFn runner for every bundle, and each time looks up the DoFn's state
and timer specs by inspecting the signature of every method of the DoFn (``userstate.get_dofn_specs``). With
this job's stateful steps that inspection was half of a local run's time (py-spy, a 3-hour simulated day).
The specs are declared on the class (``StateParam``/``TimerParam`` defaults of its methods), so they are the
same for every instance of a class: the lookup is cached per class. ``benchmarks/stream_throughput.py``
measures the job with and without it.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["local_runner"]


@functools.cache
def _install_spec_cache() -> None:
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import userstate

    inspect_specs = userstate.get_dofn_specs
    by_class: dict[type, Any] = {}

    def get_dofn_specs(dofn: Any) -> Any:
        specs = by_class.get(type(dofn))
        if specs is None:
            specs = by_class[type(dofn)] = inspect_specs(dofn)
        return specs

    userstate.get_dofn_specs = get_dofn_specs
    transform_evaluator.get_dofn_specs = get_dofn_specs


def local_runner(cache_specs: bool = True) -> Any:
    """A fresh in-process streaming runner; ``cache_specs=False`` leaves Beam's lookup as it is (the
    benchmark's comparison; once installed, the cache stays for the process)."""
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    if cache_specs:
        _install_spec_cache()
    return BundleBasedDirectRunner()
