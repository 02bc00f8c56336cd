"""A stage order given by the user, checked against the data before anything is judged by it.

A wrong order is a silent wrong result: stages it does not name are ignored (``--stages foo,bar``: no
anomaly), a reversed one measures every wait against the wrong stage (no anomaly either), a typo
(``uplaod``) leaves a required stage that never comes (every file stalls). So an order given by flag or
config is set against the first events of the input (the sample the order is inferred from when none is
given) and refused, with the order the data shows, when:

* its stages match under half of the sample's events;
* a required stage matches none, while the data has a stage of a close name it does not give;
* two of its stages, seen together in at least ``MIN_FILES`` files, come the other way round in most of them.

``--force`` runs anyway, said in the summary. The streaming job from Pub/Sub cannot read ahead: not checked.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence

from stagewatch.core.events import StageEvent
from stagewatch.core.stages import StageOrder, infer_from_events

__all__ = ["MIN_FILES", "disagreement"]

MIN_FILES = 5  # files with both stages of a pair before the data can contradict their order


def disagreement(order: StageOrder, sample: Sequence[StageEvent]) -> str | None:
    """What the data says against ``order``, with the order it shows; None when it agrees (or says nothing)."""
    if not sample:
        return None
    counts = Counter(ev.stage for ev in sample)
    observed = infer_from_events(sample, len(sample))
    shows = f"the data's order is {observed}"
    matched = sum(counts[s] for s in order.stages)
    if 2 * matched < len(sample):
        return (f"the stages given ({order}) match {matched} of the first {len(sample)} events; {shows}")
    others = [s for s in counts if s not in order.index]
    for stage in order.stages:
        if stage in order.optional or counts[stage]:
            continue
        close = difflib.get_close_matches(stage, others, n=1)
        if close:
            return f"stage {stage!r} of the order given names no event; the data has {close[0]!r}; {shows}"
    first: dict[str, dict[str, int]] = {}  # uid -> stage -> its earliest time
    for ev in sample:
        times = first.setdefault(ev.uid, {})
        if ev.stage not in times or ev.t_us < times[ev.stage]:
            times[ev.stage] = ev.t_us
    given = [s for s in order.stages if counts[s]]
    for i, a in enumerate(given):
        for b in given[i + 1:]:
            both = [t for t in first.values() if a in t and b in t]
            reversed_ = sum(1 for t in both if t[b] < t[a])
            if len(both) >= MIN_FILES and 2 * reversed_ > len(both):
                return (f"the order given puts {a} before {b}, but {reversed_} of {len(both)} files logged {b} "
                        f"first; {shows}")
    return None
