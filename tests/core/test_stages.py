"""``stagewatch.core.stages``: ``StageOrder`` (parsed or built) and ``infer_stage_order`` from traces."""

from __future__ import annotations

import random

import pytest

from stagewatch.core.stages import OPTIONAL_BELOW, REQUIRED_FROM, StageOrder, infer_stage_order

pytestmark = pytest.mark.unit

S = 1_000_000
T0 = 1_780_000_000_000_000

# --- StageOrder ---------------------------------------------------------------------------------------------


def test_parse_with_optional_stage() -> None:
    order = StageOrder.parse("a,b?,c")
    assert order.stages == ("a", "b", "c")
    assert order.optional == frozenset({"b"})
    assert order.terminal == "c"
    assert order.index == {"a": 0, "b": 1, "c": 2}
    assert str(order) == "a,b?,c"


def test_parse_strips_whitespace() -> None:
    order = StageOrder.parse(" upload , register , done ")
    assert order.stages == ("upload", "register", "done")
    assert order.optional == frozenset()
    assert order.terminal == "done"


def test_terminal_is_the_last_required_stage() -> None:
    order = StageOrder.parse("a,b,c?,d?")
    assert order.terminal == "b"
    assert str(order) == "a,b,c?,d?"
    assert StageOrder.parse("only").terminal == "only"


@pytest.mark.parametrize("text", ["a,b?,c", "upload,register,done", "x?,y", "a,b?,c?,d"])
def test_str_parse_round_trip(text: str) -> None:
    order = StageOrder.parse(text)
    assert str(order) == text
    assert StageOrder.parse(str(order)) == order


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_parse_empty_raises(text: str) -> None:
    with pytest.raises(ValueError, match="stage names"):
        StageOrder.parse(text)


@pytest.mark.parametrize("text", ["a,b,a", "a,a", "a,b?,b", "a, a"])
def test_parse_repeats_raise(text: str) -> None:
    with pytest.raises(ValueError, match="repeat"):
        StageOrder.parse(text)


@pytest.mark.parametrize("text", ["a?", "a?,b?", "a?,b?,c?"])
def test_all_optional_raises(text: str) -> None:
    with pytest.raises(ValueError, match="required"):
        StageOrder.parse(text)


def test_unknown_optional_raises() -> None:
    with pytest.raises(ValueError, match="not in the stage list"):
        StageOrder(("a", "b"), frozenset({"z"}))
    with pytest.raises(ValueError, match="not in the stage list"):
        StageOrder.parse("a,b??")  # "b?" optional, but the stage is "b"


def test_direct_construction_validates() -> None:
    with pytest.raises(ValueError):
        StageOrder(())
    with pytest.raises(ValueError):
        StageOrder(("a", "a"))
    with pytest.raises(ValueError):
        StageOrder(("a",), frozenset({"a"}))
    assert StageOrder(("a", "b")).terminal == "b"


def test_stage_order_is_frozen_and_hashable() -> None:
    order = StageOrder.parse("a,b?,c")
    with pytest.raises(AttributeError):
        order.stages = ("x",)  # type: ignore[misc]
    assert {order: 1}[StageOrder.parse("a,b?,c")] == 1


def test_parse_rejects_a_bare_question_mark() -> None:
    with pytest.raises(ValueError):
        StageOrder.parse("a,?")


# --- infer_stage_order --------------------------------------------------------------------------------------


def make_traces(
    stages: list[str],
    n: int,
    seed: int,
    *,
    incomplete: float = 0.25,
    swapped: float = 0.2,
    optional: dict[str, float] | None = None,
    shuffle: bool = True,
) -> list[list[tuple[int, str]]]:
    """Synthetic traces ``[(t_us, stage), ...]`` of a pipeline with the given true order.

    ``incomplete`` of the traces stop after a random prefix (files still in flight); ``swapped``
    of the traces have two adjacent stages swapped in time (clock skew); ``optional[stage]`` is the share
    of traces that pass through that stage at all. Events within a trace arrive in random order when
    ``shuffle``.
    """
    rng = random.Random(seed)
    optional = optional or {}
    traces = []
    for i in range(n):
        names = [s for s in stages if s not in optional or rng.random() < optional[s]]
        if rng.random() < incomplete and len(names) > 1:
            names = names[: rng.randrange(1, len(names))]
        t = T0 + i * 60 * S
        times = []
        for _ in names:
            t += rng.randint(1, 120) * S
            times.append(t)
        if rng.random() < swapped and len(names) >= 2:
            j = rng.randrange(len(names) - 1)
            times[j], times[j + 1] = times[j + 1], times[j]
        trace = list(zip(times, names, strict=True))
        if shuffle:
            rng.shuffle(trace)
        traces.append(trace)
    return traces


PIPELINES = [
    ["ingest", "scan", "ocr", "index", "notify"],
    ["upload", "register", "done"],
    ["zeta", "alpha", "mid", "beta", "omega", "aardvark", "final"],  # true order is not alphabetical
    ["b", "a"],
]


@pytest.mark.parametrize("stages", PIPELINES, ids=lambda s: ",".join(s))
@pytest.mark.parametrize("seed", range(5))
def test_infer_recovers_order_despite_shuffles_prefixes_and_swaps(stages: list[str], seed: int) -> None:
    traces = make_traces(stages, 300, seed)
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages)
    assert order.optional == frozenset()
    assert order.terminal == stages[-1]


def test_infer_ignores_arrival_order_within_a_trace() -> None:
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 100, 7, incomplete=0, swapped=0, shuffle=True)
    assert sum(sorted(t) != t for t in traces) > 50  # most traces arrive out of order ...
    assert infer_stage_order(traces).stages == tuple(stages)  # ... and are ordered by time, not position
    reversed_traces = [list(reversed(sorted(t))) for t in traces]
    assert infer_stage_order(reversed_traces).stages == tuple(stages)


def test_infer_accepts_tuples_and_generators() -> None:
    stages = ["upload", "register", "done"]
    traces = make_traces(stages, 50, 11)
    order = infer_stage_order(tuple(t) for t in traces)
    assert order.stages == tuple(stages)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_infer_marks_a_rare_middle_stage_optional(seed: int) -> None:
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 400, seed, optional={"ocr": 0.2})
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages)
    assert order.optional == frozenset({"ocr"})
    assert order.terminal == "notify"
    assert str(order) == "ingest,scan,ocr?,index,notify"


@pytest.mark.parametrize("seed", [7, 8])
def test_infer_a_rare_last_stage_is_optional_and_not_terminal(seed: int) -> None:
    stages = ["upload", "register", "thumbnail", "done", "archive"]
    traces = make_traces(stages, 400, seed, optional={"archive": 0.2})
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages)
    assert order.optional == frozenset({"archive"})
    assert order.terminal == "done"


@pytest.mark.parametrize("present", [0.55, 0.8, 0.85])
def test_infer_a_stage_a_share_of_the_files_skip_is_optional(present: float) -> None:
    # A scan only some customers need: taken for required, every file that skips it was flagged "still in" it and
    # then stalled there (the zoo's optional stages are skipped by 20-60 % of the files).
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 400, 9, optional={"ocr": present})
    assert OPTIONAL_BELOW < present < REQUIRED_FROM
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages)
    assert order.optional == frozenset({"ocr"})


@pytest.mark.parametrize("seed", [9, 10, 11])
def test_infer_a_stage_whose_lines_are_sometimes_lost_is_required(seed: int) -> None:
    # Three lines in a hundred lost: still a stage every file goes through.
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 400, seed, optional={"ocr": 0.97})
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages)
    assert order.optional == frozenset()


@pytest.mark.parametrize("seed", [12, 13, 14])
def test_files_in_flight_when_the_sample_began_do_not_make_early_stages_optional(seed: int) -> None:
    # A job started with files half-way through: 40 % of the sample's files lost the stages before their first
    # (a stream read from now), which they did not skip.
    rng = random.Random(seed)
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 400, seed, incomplete=0.0, swapped=0.0, shuffle=False)
    traces = [t[rng.randrange(1, len(t)):] if rng.random() < 0.4 else t for t in traces]
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages)
    assert order.optional == frozenset()
    # ... and a stage a share of them skip is still told apart from those.
    traces = make_traces(stages, 400, seed, incomplete=0.0, swapped=0.0, shuffle=False, optional={"index": 0.7})
    traces = [t[rng.randrange(1, len(t)):] if rng.random() < 0.4 else t for t in traces]
    assert infer_stage_order(traces).optional == frozenset({"index"})


def test_in_flight_files_do_not_make_late_stages_optional() -> None:
    # 40 % of the files stopped somewhere before the end; presence counts among files that reached it.
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 400, 10, incomplete=0.4, swapped=0)
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages)
    assert order.optional == frozenset()
    assert order.terminal == "notify"


def test_a_few_files_starting_at_made_up_stages_change_nothing_else() -> None:
    # A review's: two files that start at two made-up stages (one skips the real first stage) were all the evidence
    # for the second made-up stage, which came out required -- and every real file was then missing it.
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 400, 15, optional={"ocr": 0.7})
    clean = infer_stage_order(traces)
    assert clean.optional == frozenset({"ocr"})
    hostile = [[(T0 - 2 * S, "0x"), (T0 - S, "0y"), *((T0 + k * S, s) for k, s in enumerate(stages[skip:]))]
               for skip in (0, 1)]
    order = infer_stage_order(traces + hostile)
    assert order.stages == ("0x", "0y", *stages)
    assert order.optional == frozenset({"0x", "0y", "ocr"}) and order.paths == frozenset({"ocr"})
    # Nor does one file that never reaches the end make an optional first stage required.
    traces = make_traces(["pre", *stages], 400, 16, incomplete=0.0, optional={"pre": 0.3})
    odd = [(T0 + k * S, f"x{k}") for k in range(6)]
    assert infer_stage_order(traces).optional == frozenset({"pre"})
    assert infer_stage_order([*traces, odd]).optional == frozenset({"pre", *(s for _, s in odd)})


@pytest.mark.parametrize("hostile", [["notify", "x1", "x2"], ["notify", "x1", "x2", "x3", "x4"], ["index", "x1", "x2"]])
def test_one_file_of_made_up_stages_does_not_reorder_the_real_ones(hostile: list[str]) -> None:
    # A review's: such a file handed the real stage beside its made-up ones a win over each, put it before the
    # stages it follows and made another the terminal stage -- every stall then unreported.
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    traces = make_traces(stages, 400, 17, optional={"ocr": 0.7})
    order = infer_stage_order([*traces, [(T0 + k * S, s) for k, s in enumerate(hostile)]])
    assert [s for s in order.stages if s in stages] == stages and order.terminal == "notify"
    assert order.optional == frozenset({"ocr", "x1", "x2", "x3", "x4"} & {"ocr", *hostile})
    assert order.paths == frozenset({"ocr"})


@pytest.mark.parametrize("late_s", [30, 60, 90])
def test_a_service_whose_lines_come_late_is_still_required(late_s: int) -> None:
    # The sample is in arrival order: a file that reached the end near its close may not have the lagging
    # service's line yet (a file a second for 200 s; scan's lines late_s late: the last files lack it).
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    end = T0 + 200 * S
    traces = [[(t, s) for k, s in enumerate(stages)
               if (t := T0 + f * S + k * S // 10) + (late_s * S if s == "scan" else 0) <= end] for f in range(200)]
    order = infer_stage_order(traces)
    assert order.stages == tuple(stages) and order.optional == frozenset()


def test_infer_repeated_stage_in_a_trace_counts_its_first_occurrence() -> None:
    traces = [[(T0, "a"), (T0 + S, "b"), (T0 + 2 * S, "b"), (T0 + 3 * S, "c")] for _ in range(5)]
    traces.append([(T0, "a"), (T0 + S, "b"), (T0 + 2 * S, "c"), (T0 + 3 * S, "b")])  # a retry of b after c
    order = infer_stage_order(traces)
    assert order.stages == ("a", "b", "c")


def test_infer_single_trace_and_single_stage() -> None:
    assert infer_stage_order([[(T0 + 5, "z"), (T0, "y")]]).stages == ("y", "z")
    single = infer_stage_order([[(T0, "only")]])
    assert single.stages == ("only",)
    assert single.terminal == "only"


@pytest.mark.parametrize("traces", [[], [[]], [[], []]], ids=["no-traces", "one-empty", "two-empty"])
def test_infer_empty_input_raises(traces: list[list[tuple[int, str]]]) -> None:
    with pytest.raises(ValueError):
        infer_stage_order(traces)


def test_infer_result_is_a_valid_stage_order() -> None:
    stages = ["ingest", "scan", "ocr", "index", "notify"]
    order = infer_stage_order(make_traces(stages, 200, 12, optional={"scan": 0.2, "index": 0.3}))
    assert order.stages == tuple(stages)
    assert order.optional == frozenset({"scan", "index"})
    assert StageOrder.parse(str(order)) == order


def _sample(order: tuple[str, ...], files: int = 20) -> list:
    from stagewatch.core.events import StageEvent

    return [StageEvent(f"f{k}", s, (k * 100 + i) * 1_000_000, "t", None, f"f{k}-{i}", False, None)
            for k in range(files) for i, s in enumerate(order)]


@pytest.mark.parametrize(("given", "says"), [
    ("foo,bar", "match 0 of the first 60 events"),
    ("c,b,a", "puts c before b, but 20 of 20 files logged b first"),
    ("a,b,c,dnoe", None),  # an order may name a stage the sample has not reached: nothing close to it
    ("a,bb,c", "stage 'bb' of the order given names no event; the data has 'b'"),
])
def test_a_given_order_the_data_contradicts_is_refused_with_the_order_it_shows(given: str, says: str | None) -> None:
    from stagewatch.core.stage_check import disagreement

    found = disagreement(StageOrder.parse(given), _sample(("a", "b", "c")))
    if says is None:
        assert found is None
    else:
        assert found is not None and says in found and "the data's order is a,b,c" in found


def test_the_order_the_data_shows_and_a_minority_of_skewed_files_agree() -> None:
    from stagewatch.core.stage_check import disagreement

    sample = _sample(("a", "b", "c"))
    skewed = _sample(("b", "a", "c"), files=6)  # a customer's clock: b before a in a few files
    assert disagreement(StageOrder.parse("a,b,c"), sample + [e._replace(uid="s" + e.uid) for e in skewed]) is None
    assert disagreement(StageOrder.parse("a,b,c?"), []) is None


@pytest.mark.parametrize("text", ["detect,,upload", ",", "a, ,b", ""])
def test_an_empty_stage_name_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="none empty"):
        StageOrder.parse(text)
