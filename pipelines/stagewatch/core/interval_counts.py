"""One interval's measurements of a baseline stage as bin counts by (tenant, bin): how the streaming job's shards
count them (``bin_counts``), and what of them a stage's store learns (``admitted_counts``) -- the same keys
and the same tenants as the backtest's store counting its own values (``BaselineStore._count_values``)."""

from __future__ import annotations

import numpy as np

from stagewatch.core.baselines import BaselineKey, BaselineStore
from stagewatch.core.bins import bins_of

__all__ = ["Counts", "admitted_counts", "bin_counts"]

Counts = dict[tuple[str | None, int], float]  # (tenant, or None for the whole stage; bin) -> count


def bin_counts(heard: list[tuple[str | None, float]]) -> Counts:
    """{(tenant, bin): count} of (tenant, value) pairs heard for one baseline stage: every value counts for the
    stage-wide key (tenant ``None``) and for its tenant's. The streaming job's shards count this way; the
    store's own learning (``_count_values``) does the same, admitting tenants as it goes."""
    if not heard:
        return {}
    bins = bins_of(np.fromiter((v for _, v in heard), dtype=np.float64, count=len(heard))).tolist()
    counts: Counts = {}
    for (tenant, _), b in zip(heard, bins, strict=True):
        counts[(None, b)] = counts.get((None, b), 0.0) + 1.0
        if tenant is not None:
            counts[(tenant, b)] = counts.get((tenant, b), 0.0) + 1.0
    return counts


def admitted_counts(store: BaselineStore, stage: str, counts: Counts) -> dict[BaselineKey, dict[int, float]]:
    """``counts`` of ``stage`` by baseline key, for the tenants ``store.admit`` lets in (and the stage-wide
    key); a tenant turned away is counted in ``store.tenants_over_limit``, as ``_count_values`` counts it."""
    admitted = store.admit(stage, [tenant for tenant, _ in counts])
    by_key: dict[BaselineKey, dict[int, float]] = {}
    for (tenant, b), n in counts.items():
        if tenant is None or tenant in admitted:
            bucket = by_key.setdefault((stage, tenant), {})
            bucket[b] = bucket.get(b, 0.0) + n
        elif tenant and store.cfg.tenant_baselines:
            store.tenants_over_limit += int(n)
    return by_key
