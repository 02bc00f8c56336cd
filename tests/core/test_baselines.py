"""The alert line of a baseline: modes, whole-millisecond logging, anomalies' weight, tenants, warm-up."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest

from stagewatch.core.baselines import BaselineConfig, BaselineStore
from stagewatch.core.bins import GAMMA, MAX_MS, MIN_MS, bin_of, bins_of, value_of
from stagewatch.core.interval_counts import bin_counts
from stagewatch.core.judged_by import lookup
from stagewatch.core.sketch import BIRTH_EACH, BIRTH_PARTS, CALM, LONG_RUN, HistogramBank

pytestmark = pytest.mark.unit

S = 1_000_000
# Tests of the body line's rules, and of what either line does alike with the body's smaller warm-up (30 samples).
BODY = BaselineConfig(line="body")


def feed(store: BaselineStore, values: list[float], start_s: int = 0, every_s: float = 5.0,
         stage: str = "call", tenant: str | None = None) -> int:
    t = start_s
    for v in values:
        store.advance(int(t * S))
        store.learn(stage, tenant, v)
        t += every_s
    t += 600  # past the next snapshot boundary, so what was learned is in the snapshot
    store.advance(int(t * S))
    return int(t)


def line(store: BaselineStore, stage: str = "call", tenant: str | None = None) -> float:
    snap, _ = lookup(store, stage, tenant)
    assert snap is not None
    return snap.threshold_ms


def test_sketch_quantiles_are_within_two_percent_and_decay_per_row() -> None:
    bank = HistogramBank(capacity=1)  # grows as keys arrive
    rng = random.Random(1)
    pending: dict[object, dict[int, float]] = {}
    columns = {key: sorted(rng.lognormvariate(mu, 1) for _ in range(20_000)) for key, mu in (("a", 3), ("b", 6))}
    for key, values in columns.items():
        counts = pending.setdefault(key, {})
        for v in values:
            counts[bin_of(v)] = counts.get(bin_of(v), 0) + 1
    never, full = np.array([1 << 30, 1 << 30]), np.ones(2)
    rows = bank.fold(pending, 0, 0.5, never, full)
    totals, q = bank.quantiles(rows, (0.1, 0.25, 0.5, 0.9, 0.99))
    assert totals.tolist() == [20_000, 20_000]
    for r, values in enumerate(columns.values()):
        for j, p in enumerate((0.1, 0.25, 0.5, 0.9, 0.99)):
            assert q[r, j] == pytest.approx(values[int(p * len(values))], rel=0.03)
    rows = bank.fold({"a": {0: 1.0}}, 2, 0.5, never[:1], full[:1])  # only "a" is touched and decayed
    totals, _ = bank.quantiles(bank.fold({"b": {}}, 2, 0.5, never[:1], full[:1]), (0.5,))
    assert bank.quantiles(rows, (0.5,))[0].tolist() == [5_001] and totals.tolist() == [5_000]
    # Counts above a key's line weigh what the caller says, and are counted as flagged.
    row = bank.fold({"c": {10: 4.0, 500: 2.0}}, 2, 0.5, np.array([100]), np.array([0.1]))
    assert bank.quantiles(row, (0.5,))[0].tolist() == [pytest.approx(4.2)]
    assert bank.seen[row].tolist() == [6.0] and bank.flagged[row].tolist() == [2.0]
    assert value_of(bin_of(1234.0)) == pytest.approx(1234.0, rel=0.021)


def test_a_common_second_mode_is_normal_not_an_incident() -> None:
    rng = random.Random(2)
    store = BaselineStore()
    # A cache: 60 % hits at ~5 ms, 40 % misses at ~141 ms.
    feed(store, [rng.choice([5, 5, 5, 141, 141]) + rng.random() for _ in range(2000)])
    assert 141 * 1.3 < line(store) < 500


def test_a_baseline_that_learned_one_mode_adopts_the_second_when_it_becomes_common() -> None:
    rng = random.Random(3)
    store = BaselineStore(BODY)
    end = feed(store, [2.0 + rng.random() for _ in range(500)])
    assert line(store) < 47  # 47 ms is an anomaly for a 2 ms call
    feed(store, [rng.choice([2.0, 47.0]) + rng.random() for _ in range(3000)], start_s=end)
    assert line(store) > 48  # half the calls take 47 ms now: that is how this call behaves


def test_whole_millisecond_logging_does_not_make_every_millisecond_an_alert() -> None:
    rng = random.Random(4)
    store = BaselineStore()
    feed(store, [float(rng.choice([2, 2, 2, 3])) for _ in range(2000)])
    assert 7 <= line(store) < 20  # 6 ms on a 2 ms call pages nobody; 20 ms does


def test_flagged_values_weigh_a_tenth_until_they_are_common() -> None:
    store = BaselineStore(BODY)
    rng = random.Random(5)
    end = feed(store, [100 * rng.lognormvariate(0, 0.2) for _ in range(1000)])
    before = lookup(store, "call", None)[0]
    assert before is not None
    bank, row = store.bank, store.bank.rows[("call", None)]
    total, step = float(bank.weights[row].sum()), int(bank.steps[row])
    feed(store, [before.threshold_ms * 3] * 20, start_s=end, every_s=1)  # 20 s: one interval, one fold
    after = lookup(store, "call", None)[0]
    assert after is not None
    decay = store.cfg.decay_per_interval ** (int(bank.steps[row]) - step)
    assert float(bank.weights[row].sum()) == pytest.approx(total * decay + 20 * 0.1, rel=1e-6)
    assert after.flagged_share > 0
    assert after.threshold_ms == pytest.approx(before.threshold_ms, rel=0.05)


def test_warm_up_and_going_cold_after_a_long_silence() -> None:
    store = BaselineStore(BaselineConfig(warmup_n=30, line="body"))
    end = feed(store, [10.0] * 20)
    assert lookup(store, "call", None)[0] is None  # 20 samples: still warming up
    end = feed(store, [10.0] * 20, start_s=end)
    assert lookup(store, "call", None)[0] is not None
    # A stage-wide key under ``keep_n`` forgets at the longest half-life (``core.forgetting``): five of the three hours'
    # half-lives later it still judges (its files stuck in it are still stalled); 40 samples fall under 30 in 2.9 days.
    store.advance(int((end + 5 * 3 * 3600) * S))
    assert lookup(store, "call", None)[0] is not None
    store.advance(int((end + 3 * 24 * 3600) * S))
    assert lookup(store, "call", None)[0] is None


def test_tenant_baseline_judges_when_warm_and_chronic_tenant_is_not_an_incident() -> None:
    rng = random.Random(6)
    store = BaselineStore()
    t = 0
    for k in range(3000):
        tenant = "slowhome" if k % 10 == 0 else f"t{k % 3}"
        value = (50_000 if tenant == "slowhome" else 5_000) * rng.lognormvariate(0, 0.2)
        store.advance(t * S)
        store.learn("upload", tenant, value)
        t += 5
        if k == 45:  # slowhome has 5 samples, far above the stage-wide line: it is warming up
            store.advance((t + 300) * S)
            assert lookup(store, "upload", "slowhome") == (None, False)
    store.advance((t + 300) * S)
    snap, by_tenant = lookup(store, "upload", "slowhome")
    assert by_tenant and snap is not None and 40_000 < snap.median_ms < 60_000
    stage_snap, by_tenant = lookup(store, "upload", "new-tenant")
    assert not by_tenant and stage_snap is not None and stage_snap.median_ms < 10_000


def test_binning_an_interval_at_once_bins_each_value_as_bin_of() -> None:
    rng = random.Random(8)
    values = [0.0, MIN_MS, MIN_MS * 1.0001, 1.0, 2.0, 1e12, MAX_MS, MAX_MS * 3]
    values += [rng.lognormvariate(5, 3) for _ in range(20_000)]
    # Values a hair either side of bin borders, where numpy's log and math.log may disagree in the last bit.
    borders = MIN_MS * np.exp(np.arange(1, 400) * math.log(GAMMA))
    for border in borders.tolist():
        values += [border, math.nextafter(border, 0), math.nextafter(border, math.inf)]
    assert bins_of(np.array(values)).tolist() == [bin_of(v) for v in values]
    assert bins_of(np.array([])).tolist() == []


def test_learning_is_counted_per_key_when_the_interval_is_folded() -> None:
    """Values learned in an interval reach the stage-wide key and the tenant's (within ``max_tenants``, new
    tenants of an interval in name order) when the interval is folded; the store's epoch moves with every fold."""
    store = BaselineStore(BaselineConfig(max_tenants=1, warmup_n=5, line="body"))
    store.advance(0)
    epoch = store.epoch
    for tenant in ("second", "first", None, "second", "first"):  # "second" comes first: names decide
        for _ in range(10):
            store.learn("call", tenant, 100.0)
    store.learn("other", "second", 100.0)  # each stage has its own places
    assert store.pending == {} and store.epoch == epoch  # nothing counted before the interval ends
    store.advance(300 * S)
    assert store.epoch > epoch
    assert store.admitted == {"call": {"first"}, "other": {"second"}} and store.tenants_over_limit == 20
    assert lookup(store, "call", None)[0].n == 50  # type: ignore[union-attr]
    assert lookup(store, "call", "first") == (store.snaps[("call", "first")], True)
    assert store.snaps[("call", "first")].n == 20
    assert ("call", "second") not in store.snaps


def test_a_store_pickled_before_learning_was_deferred_still_loads() -> None:
    """A running job's state holds pickled stores; ``--update`` must not break them."""
    store = BaselineStore(BODY)
    end = feed(store, [10.0] * 40)
    state = {k: v for k, v in store.__dict__.items() if k not in ("values", "epoch")}
    old = BaselineStore.__new__(BaselineStore)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    feed(restored, [10.0] * 5, start_s=end)
    assert lookup(restored, "call", None)[0] is not None


def test_bin_counts_count_each_value_for_the_stage_and_its_tenant() -> None:
    rng = random.Random(8)
    heard = [(rng.choice(["t1", "t2", None]), rng.lognormvariate(7, 1.5)) for _ in range(2000)]
    heard += [(None, 0.0), ("t1", 1e12)]  # the first and last bins
    want: dict[tuple[str | None, int], float] = {}
    for tenant, value in heard:
        for key in {(None, bin_of(value)), (tenant, bin_of(value))}:
            want[key] = want.get(key, 0.0) + 1.0
    assert bin_counts(heard) == want
    assert bin_counts([]) == {}


def test_a_bank_pickled_before_disturbed_runs_held_intervals_and_levels_were_kept_still_loads() -> None:
    store = BaselineStore(BaselineConfig(line="tail"))
    feed(store, [100.0 + k % 7 for k in range(1500)], every_s=1.0)  # over hold_n: its last calm interval waits
    bank = store.bank
    state = bank.__reduce_ex__(2)[2]  # (None, {slot: value}), as pickle keeps it
    assert isinstance(state, tuple) and {"since", "held", "level"} <= state[1].keys()
    del state[1]["since"], state[1]["held"], state[1]["level"]
    old = HistogramBank.__new__(HistogramBank)
    old.__setstate__(state)
    assert old.since.tolist() == [-1] * len(old.steps)
    assert old.held == {}
    assert np.isnan(old.level).all()  # judged as before until a level is known
    again = pickle.loads(pickle.dumps(bank))
    assert again.since.tolist() == bank.since.tolist()
    assert again.held.keys() == bank.held.keys() == {0}
    assert again.level[0] == bank.level[0] == pytest.approx(np.log(103.0), abs=0.05)


def test_a_bank_pickled_before_keys_were_watched_loads_with_its_keys_watched_for_long() -> None:
    # A running job updated in place: its keys must not go cold for the watch (``BaselineConfig.watch_for``),
    # and what the first quartile's level is stays unknown until its next learned interval.
    rng = random.Random(9)
    store = BaselineStore(BaselineConfig(line="tail"))
    minute = [60_000.0 * rng.lognormvariate(0, 0.7) for _ in range(700)]  # a one-minute stage, p99.9 8.6 min
    end = feed(store, minute[:400], every_s=1.0)
    assert lookup(store, "call", None)[0] is None  # watched for 1,000 s: under twice its line
    control = pickle.loads(pickle.dumps(store))
    state = pickle.loads(pickle.dumps(store.bank)).__reduce_ex__(2)[2]
    assert isinstance(state, tuple) and {"born", "level25", "lifts"} <= state[1].keys()
    del state[1]["born"], state[1]["level25"], state[1]["lifts"]
    old = HistogramBank.__new__(HistogramBank)
    old.__setstate__(state)
    assert np.isnan(old.level25).all()
    assert not old.lifts.any()
    store.bank = old
    store_state = {k: v for k, v in store.__dict__.items() if k != "cut_short_us"}
    loaded = BaselineStore.__new__(BaselineStore)
    loaded.__setstate__(pickle.loads(pickle.dumps(store_state)))
    assert loaded.cut_short_us == 0
    feed(loaded, minute[400:450], start_s=end, every_s=1.0)
    assert lookup(loaded, "call", None)[0] is not None  # watched for long
    feed(control, minute[400:450], start_s=end, every_s=1.0)
    assert lookup(control, "call", None)[0] is None  # watched for 1,650 s


def test_a_bank_pickled_before_the_long_run_share_loads_with_its_recent_share_as_that() -> None:
    # A running job updated in place: what a key flags in the long run (``HistogramBank.fold``: a mature key learns
    # an interval flagging no more than 3x that up to its alert line) starts from the best there is, its recent share.
    store = BaselineStore(BaselineConfig(line="tail"))
    feed(store, [100.0 + k % 7 for k in range(1500)], every_s=1.0)
    state = pickle.loads(pickle.dumps(store.bank)).__reduce_ex__(2)[2]
    assert isinstance(state, tuple) and {"long_seen", "long_flagged"} <= state[1].keys()
    del state[1]["long_seen"], state[1]["long_flagged"]
    old = HistogramBank.__new__(HistogramBank)
    old.__setstate__(state)
    assert old.long_seen.tolist() == store.bank.seen.tolist() and old.long_seen is not old.seen
    assert old.long_flagged.tolist() == store.bank.flagged.tolist()
    again = pickle.loads(pickle.dumps(store.bank))
    assert again.long_seen.tolist() == store.bank.long_seen.tolist()
    assert store.bank.long_seen[0] > store.bank.seen[0] > 0  # decayed more slowly


def test_a_bank_pickled_before_the_long_run_share_over_the_alert_line_loads_with_none() -> None:
    # A running job updated in place: what its keys paged in the long run is not known, so none counts as steady
    # (``STEADY_MIN``) until it has paged again; the calm interval a key held is learned, as having paged nothing.
    store = BaselineStore(BaselineConfig(line="tail"))
    feed(store, [100.0 + k % 7 for k in range(1500)], every_s=1.0)
    bank = store.bank
    assert bank.held.keys() == bank.held_paged.keys() == {0} and len(bank.held[0]) == 5  # as a version before kept it
    state = pickle.loads(pickle.dumps(bank)).__reduce_ex__(2)[2]
    assert isinstance(state, tuple) and {"long_paged", "held_paged"} <= state[1].keys()
    del state[1]["long_paged"], state[1]["held_paged"]
    old = HistogramBank.__new__(HistogramBank)
    old.__setstate__(state)
    assert old.long_paged.shape == old.long_seen.shape and not old.long_paged.any() and old.held_paged == {}
    at, seen = old.held[0][0], old.held[0][3]
    before = old.long_seen[0]
    old._settle(np.array([0]), np.array([False]), at + 1, 0.5)
    assert old.long_seen[0] == pytest.approx(before + seen * 0.5 ** (1 / LONG_RUN)) and seen > 0
    assert old.long_paged[0] == 0.0 and old.held == {}


def test_a_bank_pickled_before_the_first_shares_loads_with_keys_born_flagging_nothing() -> None:
    # A running job updated in place: its keys' first values are gone, and they count as having flagged none of them
    # -- what they were judged by before (a key learns up to its alert line what it flagged from its start).
    store = BaselineStore(BaselineConfig(line="tail"))
    feed(store, [100.0 + k % 7 for k in range(1500)], every_s=1.0)
    assert store.bank.birth_seen[0, 0] > 0  # judged from its second interval on
    state = pickle.loads(pickle.dumps(store.bank)).__reduce_ex__(2)[2]
    assert isinstance(state, tuple) and {"birth_seen", "birth_flagged"} <= state[1].keys()
    del state[1]["birth_seen"], state[1]["birth_flagged"]
    old = HistogramBank.__new__(HistogramBank)
    old.__setstate__(state)
    assert old.birth_seen.shape == old.birth_flagged.shape == (len(old.steps), BIRTH_PARTS)
    used = len(old.rows)
    assert (old.birth_seen[:used] >= BIRTH_EACH).all() and not old.birth_flagged.any()
    assert used < len(old.steps) and not old.birth_seen[used:].any()  # a key new to the job is born as any


def test_a_bank_grown_past_its_first_rows_keeps_a_level_for_each() -> None:
    bank = HistogramBank(capacity=4)
    never = np.full(9, 1 << 30)
    for step in range(2):
        bank.fold({f"k{i}": {100 + i: 20.0} for i in range(9)}, step, 0.99, never, np.ones(9), np.full(9, np.inf))
    assert len(bank.level) == len(bank.steps) == len(bank.long_seen) == len(bank.long_flagged) >= 9
    assert len(bank.birth_seen) == len(bank.birth_flagged) == len(bank.steps)
    assert (bank.since[9:] == CALM).all() and np.isnan(bank.level[9:]).all() and not bank.weights[9:].any()
    assert np.exp(bank.level[:9]) == pytest.approx([value_of(100 + i) for i in range(9)])


def test_a_store_pickled_before_the_tenant_limit_keeps_the_first_tenants_by_name_only() -> None:
    """The streaming job applied no ``max_tenants`` before 2026-12-05: a store from its state may hold any
    number of tenants. Loaded (``--update``), the first by name keep their baselines, the others' snapshots
    are dropped (the stage-wide line judges them, as the backtest does)."""
    store = BaselineStore(BaselineConfig(max_tenants=2, warmup_n=5))
    counts = {("b", tenant): {bin_of(100.0): 40.0} for tenant in (None, "zz", "t03", "t01", "t02")}
    store.fold_interval(0, counts)
    assert {k[1] for k in store.snaps} == {None, "zz", "t03", "t01", "t02"}
    state = {k: v for k, v in store.__dict__.items() if k != "admitted"} | {"tenants": set()}
    old = BaselineStore.__new__(BaselineStore)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.admitted == {"b": {"t01", "t02"}} and not hasattr(old, "tenants")
    assert set(old.snaps) == {("b", None), ("b", "t01"), ("b", "t02")}
