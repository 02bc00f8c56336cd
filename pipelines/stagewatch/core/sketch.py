"""A fixed-size, exponentially decayed quantile sketch over log-spaced bins.

Why not a library sketch (DDSketch, t-digest, KLL)? A rolling baseline must forget: yesterday's traffic must
weigh less than the last hour's. Those sketches only grow; decaying them means rebuilding. Log-spaced bins with
a relative width ``GAMMA`` (``stagewatch.core.bins``) give the same guarantee as DDSketch (every quantile within
±2 % of the true value), and decay is one vector multiply. Memory is fixed: ``N_BINS`` float64 (~5 KiB) per key
whatever the traffic.

Counts arrive as sparse ``{bin: count}`` dictionaries (one interval's learning) and are folded in with
``HistogramBank.fold``; adding counts is commutative, which lets a distributed driver combine partial counts
in any order.
"""

from __future__ import annotations

import math

import numpy as np

from stagewatch.core.bins import BIN_VALUES as _VALUES
from stagewatch.core.bins import LAST_BIN, N_BINS, quartiles_of
from stagewatch.core.forgetting import decay_factors

__all__ = ["CALM", "HistogramBank"]

SHIFT_MIN_N = 10  # an interval with fewer values has no median to tell a shift by: judged by what it flags alone
LEVEL_ALPHA = 0.3  # how much of a learned interval's median moves a key's level: a few intervals' memory
# A median of n values whose logs spread with sigma s is off by about sqrt(pi / 2) s / sqrt(n) (one standard
# error); a normal's interquartile range is 1.349 sigmas.
_MEDIAN_SE, _IQR_SIGMAS = 1.2533, 1.349
CALM = -1  # ``HistogramBank.since`` of a key that is not in a run of disturbed intervals
WATCHED = np.iinfo(np.int64).min // 4  # ``HistogramBank.born`` of a key watched long enough
# How much more slowly a key's long-run share over its line decays than its counts (``HistogramBank.fold``): with a
# 3 h half-life, a day's.
LONG_RUN = 8.0
# What a key flagged from its start (``HistogramBank.fold``; ``birth_seen`` and ``birth_flagged``, undecayed): the least
# share over its line in ``BIRTH_PARTS`` parts of its first judged values (``BIRTH_EACH`` or more each, an interval at
# least), from ``BIRTH_MIN`` (a mode).
BIRTH_PARTS, BIRTH_EACH, BIRTH_MIN = 3, 333.0, 0.02
# A key whose long-run share over its alert line is at least this (eight times a calm lognormal key's, 1 in 4,000)
# learns a calm interval paging no more than usual over that line too (``fold``).
STEADY_MIN = 0.002
OWN_RATIO = 3.0  # an interval paging up to this x what a key's histogram holds over its line is its shape (``fold``)
PAGED_SHARE, PAGED_MIN = 0.25, 3.0  # a busy interval this much over the alert line too is a slow share (``fold``)
_NEW_ROW = {"since": CALM, "level": np.nan, "level25": np.nan, "level75": np.nan, "level_at": CALM}  # a new row's


class HistogramBank:
    """Many decayed histograms as the rows of one matrix, so that an interval's roll is a few numpy calls.

    Row ``r`` holds one key's bin weights, decayed to ``steps[r]``, with ``seen`` and ``flagged``: decayed
    counts of the samples learned and of those that were over the line, at weight 1 whatever their weight.
    Folding a whole interval's learning into every touched row and reading their quantiles costs about a
    millisecond for a few hundred keys, where a row at a time cost 25 us each: the rolls were half of a
    backtest's time.
    """

    __slots__ = ("birth_flagged", "birth_seen", "born", "flagged", "held", "held_paged", "level", "level25", "level75",
                 "level_at", "lifts", "long_flagged", "long_paged", "long_seen", "rows", "seen", "since", "steps",
                 "weights")

    def __init__(self, capacity: int = 64) -> None:
        self.weights = np.zeros((capacity, N_BINS), dtype=np.float64)
        self.steps = np.zeros(capacity, dtype=np.int64)
        self.seen, self.flagged = np.zeros((2, capacity), dtype=np.float64)
        # The same two counts decayed ``LONG_RUN`` times more slowly: what share of its values a key flags in the
        # long run, which a slow share that came later does not reach for hours (``fold``).
        self.long_seen = np.zeros(capacity, dtype=np.float64)
        self.long_flagged = np.zeros(capacity, dtype=np.float64)
        self.long_paged = np.zeros(capacity, dtype=np.float64)  # the same of those over the alert line (``fold``)
        self.birth_seen = np.zeros((capacity, BIRTH_PARTS), dtype=np.float64)
        self.birth_flagged = np.zeros((capacity, BIRTH_PARTS), dtype=np.float64)
        # The step at which a key's current run of disturbed intervals began; CALM while it is calm.
        self.since = np.full(capacity, CALM, dtype=np.int64)
        self.rows: dict[object, int] = {}
        # A watched key's last calm interval, waiting for the next (``fold``): row -> (its step, bins, weights,
        # seen, flagged); and what of it was over the alert line, apart: a job updated back to a version that knew
        # five fields still loads it (``__setstate__`` lets go of what it lacks).
        self.held: dict[int, tuple[int, np.ndarray, np.ndarray, float, float]] = {}
        self.held_paged: dict[int, float] = {}
        # The log of a key's recent interval medians (NaN before one is known): a disturbance moves the body
        # abruptly, the load's daily curve moves it gradually.
        self.level = np.full(capacity, np.nan)
        self.level25, self.level75 = np.full((2, capacity), np.nan)  # the same of their first and third quartiles
        self.level_at = np.full(capacity, CALM, dtype=np.int64)  # the step they last moved at (CALM: never)
        self.lifts = np.zeros(capacity)  # decayed count of the intervals not learned for a lifted body (``fold``)
        # The step at which each key was first folded (its first values learned in the interval before): how long it
        # has been watched (``watched``); WATCHED once that was long enough.
        self.born = np.zeros(capacity, dtype=np.int64)

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        # A bank pickled in a running job's state before ``since`` or ``held`` existed (``--update``); and one
        # from a later version, should a job be updated back to this one: what this version lacks is let go.
        slots = state[1]
        for name, value in slots.items():
            if name in HistogramBank.__slots__:
                setattr(self, name, value)
        if "held" not in slots:
            self.held = {}
        if "held_paged" not in slots:  # what a held interval paged was not kept: none
            self.held_paged = {}
        for name in ("since", "level", "level25", "level75", "level_at", "lifts"):  # each row as a new one's
            if name not in slots:
                setattr(self, name, np.full(len(self.steps), _NEW_ROW.get(name, 0.0)))
        if "born" not in slots:  # keys of a job that ran before: watched for long
            self.born = np.full(len(self.steps), WATCHED, dtype=np.int64)
        if "long_seen" not in slots:  # their recent share is the best there is of their long-run one
            self.long_seen, self.long_flagged = self.seen.copy(), self.flagged.copy()
        if "long_paged" not in slots:  # nothing known of it: nothing steady over the alert line yet
            self.long_paged = np.zeros(len(self.steps))
        if "birth_seen" not in slots:  # keys of a job that ran before: born flagging nothing, as they were judged
            self.birth_seen, self.birth_flagged = np.zeros((2, len(self.steps), BIRTH_PARTS))
            self.birth_seen[: len(self.rows)] = BIRTH_EACH

    def watched(self, rows: np.ndarray, step: int, need_us: np.ndarray, interval_us: int, cut_short_us: int = 0
                ) -> np.ndarray:
        """Whether each row has been watched for ``need_us`` as of the start of interval ``step`` (less
        ``cut_short_us``: an early snapshot's), since the start of the interval it first learned in; a row that was
        stays so (a line that rises later does not make it cold again)."""
        born = self.born[rows]
        enough = (born == WATCHED) | (need_us <= (step - born + 1) * float(interval_us) - cut_short_us)
        self.born[rows[enough]] = WATCHED
        return enough

    def in_a_run(self, key: object) -> bool:
        """Whether ``key`` is in a run of disturbed intervals (``fold``)."""
        r = self.rows.get(key)
        return r is not None and bool(self.since[r] != CALM)

    def run_warm_until(self, rows: np.ndarray, n: np.ndarray, step: int, adopt_steps: int, which: np.ndarray
                       ) -> np.ndarray:
        """The step until which each of ``which`` rows (of ``n`` samples) stays warm for its run of disturbed
        intervals (-1: in none, or not one of them): through the run, and at least until it could be adopted. It
        learns nothing meanwhile, and decay alone moves none of its quantiles (its line widens a little as its count
        falls); cold, a stage-wide key of five files an interval had no line at all from 3.9 h into a slowdown until
        it was adopted (a review's case)."""
        since = self.since[rows]
        running = which & (since != CALM) & (n > 0)
        return np.where(running, np.maximum(since + adopt_steps, step + 1), -1)

    def _row(self, key: object, step: int) -> int:
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = len(self.rows)
            if r >= len(self.steps):  # full (r rows): each per-row array doubles, new rows 0 but as ``_NEW_ROW`` says
                for name in HistogramBank.__slots__:
                    have = getattr(self, name)
                    if isinstance(have, np.ndarray):
                        more = np.full((r, *have.shape[1:]), _NEW_ROW.get(name, 0), dtype=have.dtype)
                        setattr(self, name, np.concatenate([have, more]))
            self.steps[r] = self.born[r] = step
        return r

    def fold(
        self,
        pending: dict[object, dict[int, float]],
        step: int,
        factor_per_step: float,
        over_bin: np.ndarray,
        over_weight: np.ndarray,
        disturbed: np.ndarray | None = None,
        adopt_steps: int = 0,
        adopt_share: float = 0.0,
        hold: np.ndarray | None = None,
        shift: float = 0.0,
        line_bin: np.ndarray | None = None,
        lift_steps: float = math.inf,
        parent: np.ndarray | None = None,
        median: np.ndarray | None = None,
        upto_ratio: np.ndarray | None = None,
        keep: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Decay every key in ``pending`` to ``step`` and add its raw counts ``{bin: n}``; returns their rows.

        Per key (in ``pending`` order): counts in bins above ``over_bin`` were over that key's line while they were
        learned; they count ``over_weight`` each and as flagged. When the counts over the line are at least
        ``disturbed`` (a count per key, ``inf`` for a key not judged that way; none when omitted) and the interval's
        median rose more than ``shift`` (a log ratio) over the key's recent level, and by more than three standard
        errors of a median of its values -- or its first quartile rose as much over its own level, whatever it flags
        (at most ``lift_steps`` such intervals, decayed) -- the interval was disturbed: nothing of it is learned --
        until the key has been disturbed for ``adopt_steps`` in a row with at least ``adopt_share`` of an interval
        over its line: then the change has lasted, it is learned in full, and its median and quartile are the key's
        levels. A slowdown moves the body at once; the load's daily curve moves it a percent or two an interval while
        flagging as much, over a line that lags it -- such an interval is learned, with what it put over the learning
        line up to the alert line (``line_bin``): zoo 10004's three hours of the curve judged disturbed, then adopted
        at once; zoo 10022's two-mode stage, whose upper mode the body line cuts, judged disturbed every interval and
        frozen for hours. Unless a quarter of what it flags (three values at least) is over the alert line too: it is
        disturbed then, the values of a slow share far over the body, whose fastest, under the lines, are slow too (a
        review's: 3-4 % of a mature key's calls 3x slower, learned so, 0.16-0.61 of them flagged). Not what the alert
        line flags: learned (a variant), a few files of one lot 20x slower, where the median stays, lifted an
        end-to-end line 8.6x. A disturbed interval that
        is not learned is not counted as seen or flagged either; everything else is, whatever its weight. A calm
        interval after a calm one, of a key marked in ``hold`` (judged that way), waits for the key's next one, and is
        not learned either if that one is disturbed: a slowdown that began late in it has its slow files still in the
        stage when it ends, flags too few to disturb it, and the fastest of them, under the line, are slow too (zoo
        10002: learned, they lifted a tail line 22 %). The caller marks only keys whose line is read near their tail
        (``BaselineConfig.hold_n``): a younger key's line is extrapolated from below its 99th percentile, its
        disturbances are as often that line under a second mode, and holding back its calm intervals kept the line there
        (zoo 10023 at 5,000 files: 18 false alerts -> 102 when held from 200 samples). A calm interval flagging no
        more than ``upto_ratio`` (per key; 0 for none) x the key's long-run share is learned up to the alert line
        too: what the key has flagged all along is how it behaves. A two-mode stage's upper mode that its body line
        cuts, flagged under ``adopt_share`` and held out, left the tail learned without the top of the mode (zoo
        30022: its line at 0.76-0.83x its p99.9 for twenty hours, 197 false alerts). A slow share that came later
        is not learned so until the long-run share, decayed ``LONG_RUN`` times more slowly than the counts, has
        followed it (about twelve hours for a share of 1 %; learned at once, a review's: half of a six-hour 3x
        slowdown of 1-5 % of a key's values went unflagged) -- nor by a key younger than about half a day, whose
        long run is short, unless it flagged as much from its start (below). Such an interval is learned over the alert
        line too when the key's long-run share over *that* line (``long_paged``, over all it has seen) is
        ``STEADY_MIN`` or more and the interval pages no more than ``upto_ratio`` x it: a narrow upper mode under
        ``adopt_share`` (a cache miss: 5 % or 1 % of a 10 ms call's calls at 100 ms), under a line read while young,
        was held out for good, and 5 % or 1 % of the key's normal calls paged for days (a review's cases). Not on
        the share over the learning line: a key whose alert line is over its mode flags that mode over its body line
        for good, and a later slow share was learned within two hours (a review's: 0.04-0.23 of it flagged on a
        two-mode or cache-miss key, 1.0 before). ``parent`` (each key's stage-wide key's index in ``pending``; -1: none)
        and ``median`` (its learned median's log; NaN: none) serve keys of few values. ``keep``: ``forgetting``'s.
        """
        rows = np.fromiter((self._row(key, step) for key in pending), dtype=np.int64, count=len(pending))
        decay = decay_factors(self.weights, rows, (step - self.steps[rows]).astype(np.float64), factor_per_step, keep)
        self.weights[rows] *= decay[:, None]
        self.seen[rows] *= decay
        self.flagged[rows] *= decay
        long_decay = decay ** (1.0 / LONG_RUN)
        self.long_seen[rows] *= long_decay
        self.long_flagged[rows] *= long_decay
        self.long_paged[rows] *= long_decay
        self.steps[rows] = step
        which: list[int] = []
        bins: list[int] = []
        counts: list[float] = []
        for k, entry in enumerate(pending.values()):
            which.extend([k] * len(entry))
            bins.extend(entry.keys())
            counts.extend(entry.values())
        kk = np.asarray(which, dtype=np.int64)
        bb = np.asarray(bins, dtype=np.int64)
        cc = np.asarray(counts, dtype=np.float64)
        over = bb > over_bin[kk]
        weight = np.where(over, cc * over_weight[kk], cc)
        counted = np.ones(len(rows), dtype=bool)
        hit, waits, steady = (np.zeros(len(rows), dtype=bool) for _ in range(3))
        if disturbed is not None:
            line_bin = over_bin if line_bin is None else line_bin
            flagged = np.bincount(kk, weights=np.where(over, cc, 0.0), minlength=len(rows))
            total = np.bincount(kk, weights=cc, minlength=len(rows))
            q25, now, q75 = quartiles_of(kk, bb, cc, total)
            level = self.level[rows]
            rise = now - level
            # Beyond the median's own noise too: three standard errors of a median of ``total`` values spread as
            # the interval's quartiles say (a young or slow key's intervals hold a few dozen values).
            noise = 3.0 * _MEDIAN_SE * (q75 - q25) / _IQR_SIGMAS / np.sqrt(np.maximum(total, 1.0))
            moved = np.isnan(level) | (total < SHIFT_MIN_N) | (rise > np.maximum(shift, noise))
            calm_before = self.since[rows] == CALM
            busy = flagged >= disturbed
            # Or its first quartile rose as its median did, over its own level: the whole body moved. A mild
            # slowdown of a narrow stage puts few files over its tail line (zoo 20017: 1.66x, 4 of 351), and
            # learned, it lifted that line from 1.35x to 1.8x the p99.9 within half an hour. A two-mode stage
            # whose median crosses between its modes keeps its first quartile in the lower one; the load's daily
            # curve moves both, slowly enough for the levels to follow.
            # Within ``lift_steps`` such intervals, decayed as the counts are: a stage that shifts back and forth
            # by itself (every quarter of an hour) is learned as it goes, a lasting shift after about an hour, not
            # held out for good (a review's case: a third of such a stage learned, and its high phase paged).
            level25 = self.level25[rows]
            self.lifts[rows] *= decay
            judged = np.isfinite(disturbed)
            lifted = (judged & moved & ~np.isnan(level) & ~np.isnan(level25)
                      & (total >= SHIFT_MIN_N) & (q25 - level25 > np.maximum(shift, noise))
                      & (self.lifts[rows] < lift_steps))
            self.lifts[rows] += lifted
            # An interval of a few values does not end a run while any of them is over the line (a calm key flags
            # one in 2,000) or their median sits as high, beyond its noise: one of three files over the line, or
            # none of two, are a third of such intervals in a slowdown that puts two thirds over it.
            small = (total > 0) & (total < SHIFT_MIN_N)
            # Against the key's level, or where it has none (no interval of ten values yet), its learned median
            # (``median``, the log of each snapshot's; NaN for none).
            base = level if median is None else np.where(np.isnan(level), median, level)
            high = now - base > np.maximum(shift, noise)
            still = judged & ~calm_before & small & ((flagged > 0) | high)
            paged = np.bincount(kk, weights=np.where(bb > line_bin[kk], cc, 0.0), minlength=len(rows))
            # Unless the key's own histogram holds that much over its alert line already (``STEADY_MIN`` or more, and
            # the interval pages no more than 3x it): a line read under a mode the key learned, not a slow share. A
            # key of 200-300 values an interval with a 5 % mode, whose young line fell under it, took its first such
            # interval for a disturbed one, every next one too (its usual share stays 0 in a run), and paged 5 % of
            # its calls for days, its count decayed to 0. A key's line sits over nearly all it learned otherwise.
            sharp = busy & ~moved & (paged >= np.maximum(PAGED_MIN, PAGED_SHARE * flagged))
            ask = np.flatnonzero(sharp)  # few, if any: the rows of every key are a backtest's time otherwise
            learned = self.weights[rows[ask]]
            above = np.where(np.arange(N_BINS)[None, :] > line_bin[ask, None], learned, 0.0).sum(axis=1)
            own = above / np.maximum(learned.sum(axis=1), 1e-300)
            sharp[ask] &= (own < STEADY_MIN) | (paged[ask] > OWN_RATIO * own * total[ask])
            hit = (busy & moved) | sharp | lifted | still
            if parent is not None:
                # A key's ``parent`` (its index in ``pending``, -1 for none) disturbed: so is the key if it flags at
                # least half the parent's share and its median rose too -- one slowdown of both, which a few files
                # an interval cannot show on their own (zoo 20006, held out: a tenant of 3-7 files an interval
                # learned a 4.3x slowdown its stage held out whenever only one of three came in over its line). Not
                # on what it flags alone: a customer whose line sits under a second mode of its own flags as much,
                # and another customer's slowdown froze it (a review's case: 19-49 intervals of 60 not learned).
                p = np.maximum(parent, 0)
                share = flagged / np.maximum(total, 1.0)
                alike = (flagged > 0) & (2 * share >= share[p])
                hit |= (parent >= 0) & hit[p] & alike & high
            upto = busy & ~moved  # a disturbed one is not learned (below)
            if upto_ratio is not None:
                # Over the history the key has, and as unflagged what it has not: a key a few hours old has no long
                # run, and a slow share that came an hour after it did was soon most of what it had (a review's case:
                # 2 % of a key's calls 3x slower two hours in: 0.96 of its clearly slow calls flagged, 0.28 without
                # this). Or, while young, what it flagged from its start: the least share in the parts of its first
                # judged values, not all of which a later share is in (zoo 30007: a two-mode stage's young customers, 19
                # false alerts); not for good (a review's case: a key born into a slow share missed later ones days on).
                had = np.maximum(self.long_seen[rows], LONG_RUN * self.seen[rows])
                long_share = self.long_flagged[rows] / np.maximum(had, 1e-300)
                born = self.birth_seen[rows]
                birth = (self.birth_flagged[rows] / np.maximum(born, 1)).min(axis=1) * (born >= BIRTH_EACH).all(axis=1)
                young = upto_ratio * self.long_seen[rows] < had  # until its long run vouches for a mode: ~13 h
                long_share = np.maximum(long_share, np.where(young & (birth >= BIRTH_MIN), birth, 0.0))
                usual = flagged <= upto_ratio * long_share * total
                upto |= usual
                paged_share = self.long_paged[rows] / np.maximum(self.long_seen[rows], 1e-300)
                steady = usual & (paged_share >= STEADY_MIN) & (paged <= upto_ratio * paged_share * total)
            weight = np.where(upto[kk] & ((bb <= line_bin[kk]) | steady[kk]), cc, weight)
            # An interval with no values tells nothing: a run goes on through it.
            since = np.where(hit, np.where(calm_before, step, self.since[rows]),
                             np.where(total > 0, CALM, self.since[rows]))
            self.since[rows] = since
            lasted = hit & (step - since >= adopt_steps) & (flagged >= adopt_share * total)
            weight = np.where(hit[kk], np.where(lasted[kk], cc, 0.0), weight)
            # What a key usually flags is measured on the intervals it learns from.
            counted = ~hit | lasted
            known = counted & (total >= SHIFT_MIN_N)
            first = np.isnan(level)
            # A change that lasted is the level from now on: followed a third of the way an interval, the body
            # stayed lifted over it for intervals more, and a second step then was taken in as part of the first.
            self.level[rows] = np.where(known, np.where(first | lasted, now, level + LEVEL_ALPHA * rise), level)
            for lq, qq in ((self.level25, q25), (self.level75, q75)):  # the third's: ``lines.level_moved``
                old = lq[rows]
                lq[rows] = np.where(known, np.where(np.isnan(old) | lasted, qq, old + LEVEL_ALPHA * (qq - old)), old)
            self.level_at[rows] = np.where(known, step, self.level_at[rows])
            if hold is not None:
                # Only after a calm one: a key disturbed every other interval (a batch every ten minutes) would
                # otherwise learn nothing, and its line, read from fewer and fewer samples, widened 1.9x.
                waits = hold & ~hit & calm_before
        if self.held:
            self._settle(rows, hit, step, factor_per_step)
        seen = np.where(counted[kk], cc, 0.0)
        flagged_now = np.where(over, seen, 0.0)
        # What was over the alert line: only the tail rule's keys (judged by ``disturbed``) learn by it and count it.
        tail = disturbed is not None
        paged_now = np.where(bb > line_bin[kk], seen, 0.0) if line_bin is not None and tail else np.zeros(len(seen))
        if disturbed is not None and upto_ratio is not None:
            part = (self.birth_seen[rows] >= BIRTH_EACH).sum(axis=1)  # the part of its first values a key is in
            into = ((part < BIRTH_PARTS) & (over_bin < N_BINS))[kk]  # ... while it has one, and is judged
            at = (rows[kk[into]], part[kk[into]])
            np.add.at(self.birth_seen, at, seen[into])
            np.add.at(self.birth_flagged, at, flagged_now[into])
        if waits.any():
            self._hold(rows, waits, kk, bb, weight, seen, flagged_now, paged_now, step)
            now = ~waits[kk]
            kk, bb, weight, seen, flagged_now = kk[now], bb[now], weight[now], seen[now], flagged_now[now]
            paged_now = paged_now[now]
        np.add.at(self.weights, (rows[kk], bb), weight)
        np.add.at(self.seen, rows[kk], seen)
        np.add.at(self.flagged, rows[kk], flagged_now)
        np.add.at(self.long_seen, rows[kk], seen)
        np.add.at(self.long_flagged, rows[kk], flagged_now)
        if tail:
            np.add.at(self.long_paged, rows[kk], paged_now)
        return rows

    def _settle(self, rows: np.ndarray, hit: np.ndarray, step: int, factor_per_step: float) -> None:
        """Learn each touched row's held interval, decayed to ``step``, unless this interval disturbed it."""
        for r, disturbed_now in zip(rows.tolist(), hit.tolist(), strict=True):
            held, paged = self.held.pop(r, None), self.held_paged.pop(r, 0.0)
            if held is None or disturbed_now:
                continue
            at, bins, weights, seen, flagged = held
            decay = factor_per_step ** (step - at)
            self.weights[r, bins] += weights * decay  # a held interval's bins are distinct
            self.seen[r] += seen * decay
            self.flagged[r] += flagged * decay
            long_decay = decay ** (1.0 / LONG_RUN)
            self.long_seen[r] += seen * long_decay
            self.long_flagged[r] += flagged * long_decay
            self.long_paged[r] += paged * long_decay

    def _hold(self, rows: np.ndarray, hold: np.ndarray, kk: np.ndarray, bb: np.ndarray, weight: np.ndarray,
              seen: np.ndarray, flagged: np.ndarray, paged: np.ndarray, step: int) -> None:
        """Keep the rows' counts of this interval (entries ``kk`` of each row are contiguous) for their next."""
        bounds = np.searchsorted(kk, np.arange(len(rows) + 1))
        for k in np.flatnonzero(hold).tolist():
            a, b = int(bounds[k]), int(bounds[k + 1])
            self.held[int(rows[k])] = (step, bb[a:b].astype(np.int16), weight[a:b].copy(),
                                       float(seen[a:b].sum()), float(flagged[a:b].sum()))
            self.held_paged[int(rows[k])] = float(paged[a:b].sum())

    def quantiles(self, rows: np.ndarray, qs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(totals, values): each row's total weight, and its value at each quantile (rows x len(qs))."""
        cum = np.cumsum(self.weights[rows], axis=1)
        totals = cum[:, -1]
        idx = np.stack([(cum < q * totals[:, None]).sum(axis=1) for q in qs], axis=1)
        return totals, _VALUES[np.minimum(idx, LAST_BIN)]
