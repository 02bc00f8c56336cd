"""The incident bar's arithmetic and the records it reads, at their edges (a review's findings)."""

from __future__ import annotations

import math
import pickle

import pytest

from stagewatch.core.candidates import binomial_tail, poisson_tail
from stagewatch.core.lots import Lot, add_file
from stagewatch.core.records import Anomaly, LotRecord
from tests.records import anomaly, closed_summary, lot_record
from tests.streams import T0


@pytest.mark.unit
def test_the_tails_hold_for_a_busy_pipeline() -> None:
    """exp(-lam) underflows past lam ~ 745: every count then looked ordinary and no incident could open."""
    assert poisson_tail(2000, 1024.0) < 1e-6
    assert poisson_tail(1000, 1024.0) > 0.7
    assert poisson_tail(5, 0.1) == pytest.approx(1 - sum(math.exp(-0.1) * 0.1 ** i / math.factorial(i)
                                                         for i in range(5)), rel=1e-6)
    assert poisson_tail(0, 3.0) == 1.0 and poisson_tail(3, 0.0) == 0.0
    assert binomial_tail(7, 7, 0.07) < 1e-7 and binomial_tail(5, 5, 0.86) > 0.4
    assert 0.0 <= binomial_tail(900, 1000, 0.86) <= 1.0


@pytest.mark.unit
def test_records_pickled_by_the_release_before_load_with_the_new_fields_empty() -> None:
    """The streaming job's buffers hold anomalies and lot records across --update."""
    a = anomaly("slow_trace", "u", "end_to_end", T0, "t", cause_stage="analyse")
    assert pickle.loads(pickle.dumps(a)) == a
    old = Anomaly.__new__(Anomaly)
    old.__setstate__(a.__getstate__()[:-1])  # type: ignore[attr-defined]
    assert old.cause_stage is None and old.uid == "u"
    lot = lot_record("lot-1", "lot_slow", T0, [])
    older = LotRecord.__new__(LotRecord)
    older.__setstate__(lot.__getstate__()[:-1])  # type: ignore[attr-defined]
    assert older.slowed_by is None and older.lot == "lot-1"


@pytest.mark.unit
def test_a_lot_saved_before_spans_existed_names_no_single_file() -> None:
    lot = None
    for i in range(3):
        lot = add_file(lot, closed_summary(f"f{i}", "acme", T0 + i * 1_000_000))
    assert isinstance(lot, Lot) and lot.without_last()[0] == "f2"
    del lot.spans["f0"]  # as if f0 had been added by the release before, which kept no spans
    assert lot.without_last() == (None, None)
