"""The front half of a backtest: lines read and parsed, the stage order inferred, duplicates counted once,
late events and rejected lines dead-lettered, and the rest released in event-time order behind the
watermark -- to a ``Back`` (traces, timers and baselines: ``replay``'s) that knows nothing of lines.

The front runs in the same process as the back (``run_front``) or, for large inputs on a machine with a
second core, in a child process that reads the files itself (``run_front_in_child``): parsing is a third of
a backtest's work and needs nothing the back holds. The back then receives in batches exactly the calls it
would have received in-process, in the same order, so the output is the same byte for byte (a test holds
the two to that).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from stagewatch.backtest.engine import DetectorConfig, Ingest
from stagewatch.core.clock import BlockClock, Held
from stagewatch.core.events import BLANK, Rejected, StageEvent
from stagewatch.core.outbox import Outbox
from stagewatch.core.parser import Parser
from stagewatch.core.privacy import payload_chars
from stagewatch.core.records import DeadLetter, dead_letter, event_json
from stagewatch.core.stages import INFER_SAMPLE, StageOrder, infer_from_events
from stagewatch.core.timeutil import US_PER_S, format_rfc3339
from stagewatch.logfiles import DAMAGE_REASON, Damage, iter_lines

__all__ = ["Back", "FrontSettings", "FrontStats", "run_front", "run_front_in_child"]

_DRAIN_EVERY = 4096  # events: how often the back hands its records on (and late events are dead-lettered)
_SHIP_EVERY = 4096  # events: how many the child process sends at once (a send costs ~30 us; an event ~0.3)
# A batch is ~200 KB pickled: a pipe that holds one lets the child write it and go on parsing the next while
# this process is still busy with the last (a kernel pipe is 64 KiB unless asked; 1 MiB is the usual ceiling).
_PIPE_BYTES = 1 << 20
_COLLECT_EVERY = 100  # batches
_REPEATING = (StageEvent._fields.index("stage"), StageEvent._fields.index("tenant"), StageEvent._fields.index("lot"))
_new_event = tuple.__new__  # StageEvent from a plain tuple without NamedTuple's Python-level __new__


@dataclass(frozen=True)
class FrontSettings:
    """How the front reads: what the child process is given, whole. ``order`` None: inferred from the first
    ``infer_sample`` events. ``dead_letters`` False: rejected lines are counted, not written."""

    parser: Parser
    cfg: DetectorConfig
    order: StageOrder | None = None
    dead_letters: bool = True
    infer_sample: int = INFER_SAMPLE


@dataclass
class FrontStats:
    """Every line read is an event, a rejected line (by reason) or a blank line: ``lines == events +
    sum(rejected.values()) + blank``. Duplicates and late events are events, counted again in ``counts``."""

    lines: int = 0
    events: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    blank: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # duplicates, late, latencies_dropped, truncated_input


class Back(Protocol):
    """What the front drives, in this order: ``start`` once, then ``release``, ``dead_letter`` and ``drain``
    as they come, then ``end_of_input`` and ``end``."""

    def start(self, order: StageOrder | None, inferred: bool) -> None: ...

    def release(self, events: list[StageEvent], watermark: int) -> None: ...

    def dead_letter(self, row: DeadLetter) -> None: ...

    def drain(self) -> None: ...

    def end_of_input(self) -> None: ...

    def end(self, stats: FrontStats) -> None: ...


def run_front(lines: Iterable[bytes], settings: FrontSettings, back: Back, damaged: list[Damage] | None = None) -> None:
    """Drive ``back`` over ``lines``. Without a stage order, the first ``infer_sample`` events are read ahead,
    the order inferred from them, and replayed from the first (kept parsed; nothing is read twice). ``damaged``:
    the inputs that ``lines`` could not read to their end, filled as it reads: each is counted
    (``truncated_input``) and dead-lettered once the lines are exhausted."""
    order, dead_letters = settings.order, settings.dead_letters
    stats = FrontStats()
    rejected = stats.rejected
    parse = settings.parser.parse
    it = iter(lines)
    # Event times are judged against the file's robust clock, a block of events later (core/clock.py): one
    # line from the far future must not move the watermark. Rejected lines are filed at that clock too.
    bounds = settings.cfg.time_bounds
    clock: BlockClock[StageEvent] = BlockClock()
    held: Held[Rejected] = Held()  # rejects before the clock knows any time
    keep = payload_chars(settings.parser.payload)  # of a rejected line, in its dead letter

    def reject(r: Rejected) -> None:
        if r.reason == BLANK:  # counted, not a dead letter
            stats.blank += 1
            return
        rejected[r.reason] = rejected.get(r.reason, 0) + 1
        if not dead_letters:
            return
        # The shape of the dead_letters table; a line without a usable time is filed at the file's clock, as
        # the streaming job's file source files it -- held until there is one.
        seen = clock.now
        if seen < 0:
            if held.add(r, len(r.line)):
                # A long run of junk before the first event: filed at the epoch rather than kept in memory.
                flush_held(seen)
            return
        flush_held(seen)
        back.dead_letter(dead_letter(r.reason, r.detail, r.line, format_rfc3339(seen), "parse", keep))

    def flush_held(t_us: int) -> None:
        if held and dead_letters:
            for h in held.take():
                back.dead_letter(dead_letter(h.reason, h.detail, h.line, format_rfc3339(max(t_us, 0)), "parse",
                                             keep))

    def late_letters() -> None:
        assert ingest is not None
        if ingest.late:
            if dead_letters:
                for ev, watermark in ingest.late:  # the watermark it arrived behind, not today's
                    back.dead_letter(_late_record(ev, watermark))
            ingest.late.clear()

    ingest: Ingest | None = None
    sample: list[StageEvent] = []
    inferred = order is None
    # Blocks the clock completed while the stage order was being inferred: judged once it is known. The clock
    # moves as lines are read, inference or not, so a rejected line is filed at the clock when it was read --
    # as the streaming job's file source files it.
    early_blocks: list[tuple[list[StageEvent], int]] = []
    if order is None:
        for raw in it:
            stats.lines += 1
            parsed = parse(raw)
            if type(parsed) is StageEvent:
                sample.append(parsed)
                if (done := clock.push(parsed, parsed.t_us)) is not None:
                    flush_held(done[1])
                    early_blocks.append(done)
                if len(sample) >= settings.infer_sample:
                    break
            else:
                reject(parsed)  # type: ignore[arg-type]
        # No event at all (every line rejected or blank): nothing to order; the back reports what it read.
        order = infer_from_events(sample, len(sample)) if sample else None
    back.start(order, inferred)
    ingest = Ingest(settings.cfg, back.release, Outbox(keep_summaries=False))
    push, verdict, window, n_events = ingest.push, bounds.verdict, bounds.window, 0

    lateness_us = int(settings.cfg.allowed_lateness_s * US_PER_S)

    def judged(block: list[StageEvent], at: int) -> None:
        nonlocal n_events
        flush_held(at)  # the lines rejected before the clock knew a time go out first, filed at its first time
        ingest.cap_lead(at + lateness_us)  # a line further ahead of the clock does not pull the watermark
        lo, hi = window(at)
        for ev in block:
            if not lo <= ev.t_us <= hi:
                reason = verdict(ev.t_us, at) or ""
                reject(Rejected(reason, bounds.detail(reason, ev.t_us, at), event_json(ev)))
                continue
            n_events += 1
            push(ev)
            if not n_events % _DRAIN_EVERY:
                back.drain()
                late_letters()

    for done in early_blocks:
        judged(*done)
    on_clock = clock.push
    n_lines = stats.lines
    for raw in it:
        n_lines += 1
        parsed = parse(raw)
        if type(parsed) is StageEvent:
            if (done := on_clock(parsed, parsed.t_us)) is not None:
                judged(*done)
        else:
            reject(parsed)  # type: ignore[arg-type]
    for done in clock.end(bounds):
        judged(*done)
    ingest.flush()
    back.end_of_input()
    flush_held(clock.now)
    for damage in damaged or ():
        if dead_letters:
            back.dead_letter(dead_letter(DAMAGE_REASON, f"{damage.path}: {damage.detail}", "",
                                         format_rfc3339(max(clock.now, 0)), "read"))
    back.drain()
    late_letters()
    stats.lines, stats.events = n_lines, n_events
    stats.counts = dict(ingest.out.counts)
    if damaged:
        stats.counts[DAMAGE_REASON] = len(damaged)
    if settings.parser.latencies_dropped:
        stats.counts["latencies_dropped"] = settings.parser.latencies_dropped
    back.end(stats)


def _late_record(ev: StageEvent, watermark: int) -> DeadLetter:
    behind_s = (watermark - ev.t_us) / 1e6
    return dead_letter(
        "late", f"event time {format_rfc3339(ev.t_us)} is {behind_s:.1f} s behind the watermark "
        f"{format_rfc3339(watermark)} (beyond the allowed lateness)", event_json(ev),
        format_rfc3339(ev.t_us), "late")


# -- the front in a child process -------------------------------------------------------------------------


class _Shipper:
    """The child's ``Back``: records the calls and sends them to the parent in batches, pickled on a pipe.

    Events travel by column (uids, stages, ...), each repeated string (stage, tenant, lot) one object per
    batch, so pickle writes it once: smaller messages, and about 0.3 us per event to send and to load.
    """

    def __init__(self, pipe: BinaryIO) -> None:
        self.pipe = pipe
        self.calls: list[tuple[Any, ...]] = []
        self.events = 0
        self.bytes = 0
        self.strings: dict[object, object] = {}
        self.sent = 0

    def read(self, n: int) -> None:
        self.bytes += n

    def start(self, order: StageOrder | None, inferred: bool) -> None:
        self.calls.append(("start", order, inferred))

    def release(self, events: list[StageEvent], watermark: int) -> None:
        columns = list(zip(*events, strict=True))  # by field: zip does in C what a loop over events did in Python
        if columns:
            same = self.strings.setdefault
            for k in _REPEATING:
                columns[k] = tuple(map(same, columns[k], columns[k]))
        self.calls.append(("release", columns, watermark))
        self.events += len(events)
        if self.events >= _SHIP_EVERY:
            self.send()

    def dead_letter(self, row: DeadLetter) -> None:
        self.calls.append(("dead_letter", row))
        if len(self.calls) >= _SHIP_EVERY:  # an input of junk releases no events: send by calls too
            self.send()

    def drain(self) -> None:
        self.calls.append(("drain",))

    def end_of_input(self) -> None:
        self.calls.append(("end_of_input",))

    def end(self, stats: FrontStats) -> None:
        self.calls.append(("end", stats))
        self.send()

    def fail(self, exc: BaseException) -> None:
        self.calls = [("failed", type(exc).__name__, str(exc), isinstance(exc, OSError | ValueError))]
        self.send()

    def send(self) -> None:
        pickle.dump((self.bytes, self.calls), self.pipe, protocol=pickle.HIGHEST_PROTOCOL)
        self.pipe.flush()
        self.calls, self.events, self.bytes = [], 0, 0
        self.strings = {}
        self.sent += 1
        if not self.sent % _COLLECT_EVERY:
            gc.collect()


def _child_main() -> None:
    """``python -m stagewatch.backtest.front``: the arguments arrive pickled on stdin; the calls leave on stdout."""

    pipe = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not land in the middle of a pickle
    # Ctrl-C reaches the whole process group: the parent stops this process itself, without a second
    # traceback from here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The front makes tuples and dictionaries and drops them: no reference cycles for the cyclic collector to
    # find, whose passes over the dedup sets and the buffer were a tenth of this process's time. It runs
    # every ``_COLLECT_EVERY`` batches instead, in case a cycle turns up after all.
    gc.disable()
    ship = _Shipper(pipe)
    try:
        paths, settings = pickle.load(sys.stdin.buffer)
        damaged: list[Damage] = []
        run_front(iter_lines(paths, ship.read, damaged), settings, ship, damaged)
    except BrokenPipeError:
        pass  # the parent stopped listening (it failed or was interrupted): nothing left to tell it
    except BaseException as exc:  # whatever stopped the front, the parent must hear why
        with contextlib.suppress(BrokenPipeError):
            ship.fail(exc)
    finally:
        with contextlib.suppress(BrokenPipeError):
            pipe.close()


def run_front_in_child(
    paths: list[str], settings: FrontSettings, back: Back, on_bytes: Callable[[int], None] | None = None
) -> None:
    """``run_front`` over the files at ``paths``, read and parsed in a child process; ``back`` is driven here.

    The child is a fresh interpreter running this module (not a fork: the parent may hold threads, a progress
    bar's or a client's; and not multiprocessing's spawn, which re-runs the parent's main script).
    """
    # The child imports the stagewatch this process runs, wherever that came from.
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen(
        [sys.executable, "-m", "stagewatch.backtest.front"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert child.stdin is not None and child.stdout is not None
    with contextlib.suppress(ImportError, OSError, AttributeError):  # Linux: room for a batch (64 KiB by default)
        import fcntl

        fcntl.fcntl(child.stdout.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    calls: dict[str, Callable[..., None]] = {
        "start": back.start, "dead_letter": back.dead_letter, "drain": back.drain,
        "end_of_input": back.end_of_input, "end": back.end,
    }
    release = back.release
    try:
        with child.stdin:
            pickle.dump((paths, settings), child.stdin)
        while True:
            try:
                n_bytes, batch = pickle.load(child.stdout)
            except EOFError:
                raise RuntimeError(
                    f"the process reading the logs stopped without a word (exit code {child.wait(5)})"
                ) from None
            if on_bytes is not None and n_bytes:
                on_bytes(n_bytes)
            for name, *args in batch:
                if name == "release":
                    columns, watermark = args
                    release(list(map(_new_event, repeat(StageEvent), zip(*columns, strict=True))), watermark)
                elif name == "failed":
                    kind, message, input_error = args
                    if input_error:
                        raise ValueError(f"reading the logs: {kind}: {message}")
                    raise RuntimeError(f"the process reading the logs failed: {kind}: {message}")
                else:
                    calls[name](*args)
                    if name == "end":
                        return
    finally:
        child.stdout.close()
        if child.poll() is None:
            child.terminate()
        child.wait(5)


if __name__ == "__main__":
    # Run as the module stagewatch.backtest.front, not as __main__: what the child pickles must name classes the parent
    # can find (FrontStats, StageOrder ...).
    from stagewatch.backtest.front import _child_main as child_main

    child_main()
