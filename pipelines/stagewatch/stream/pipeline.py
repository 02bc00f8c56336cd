"""The streaming job: ``build`` wires the steps onto a PCollection of raw lines (I/O-free, so TestStream can
stand in for Pub/Sub); ``run`` attaches the sources and sinks the options ask for and runs it.

    lines → ParseEvents → Dedup → AssembleTraces ─ measurements ─┬→ LearnBaselines → snapshots ─┐
                 │                     │    │  │                 └→ JudgeMeasurements ←─────────┘
                 │                     │    │  └ progress ───────────────────┐   │ anomalies, deadlines
                 │                     │    └ summaries ──→ WatchStalls ←────┴───┘
                 └ dead letters        └ failures              │ stalls, final summaries
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from stagewatch.core.anomalies import overdue_at
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.clock import TimeBounds
from stagewatch.core.parser import Parser
from stagewatch.core.privacy import NONE, payload_chars
from stagewatch.core.records import DeadLetter, dead_letter, without_payload
from stagewatch.core.stages import infer_from_events
from stagewatch.core.timeutil import US_PER_S, format_rfc3339
from stagewatch.core.traces import TraceRules
from stagewatch.logfiles import DAMAGE_REASON, Damage
from stagewatch.store import manifest
from stagewatch.stream.bigquery_sink import WriteTableRows
from stagewatch.stream.dry_run import is_dry_run, summary
from stagewatch.stream.file_source import file_stream
from stagewatch.stream.local import NAME as LOCAL_RUNNER
from stagewatch.stream.local import LocalRunner
from stagewatch.stream.options import ValidatedOptions, validate
from stagewatch.stream.sinks import PublishAnomalies, WriteJsonl, append_local_rows, clear_local_output
from stagewatch.stream.steps.assemble import FAILURES, LATE, PROGRESS, STRAGGLERS, SUMMARIES, AssembleTraces
from stagewatch.stream.steps.contain import ContainedStep
from stagewatch.stream.steps.dedup import Dedup
from stagewatch.stream.steps.incidents import TrackIncidents
from stagewatch.stream.steps.judging import JudgeMeasurements
from stagewatch.stream.steps.learn import LearnBaselines
from stagewatch.stream.steps.lots import TrackLots
from stagewatch.stream.steps.parse import DEAD_LETTERS, ParseEvents
from stagewatch.stream.steps.stalls import ARRIVALS, STALLED_SUMMARIES, WatchStalls

__all__ = ["Outputs", "build", "construct", "run"]


@dataclass
class Outputs:
    anomalies: beam.PCollection
    traces: beam.PCollection
    dead_letters: beam.PCollection
    incidents: beam.PCollection
    lots: beam.PCollection


def build(
    lines: beam.PCollection, rules: TraceRules, baseline: BaselineConfig, stamp: bool = True,
    end_us: int | None = None, watermark_step_s: float = 0.0, bounds: TimeBounds | None = None,
    parser: Parser | None = None,
) -> Outputs:
    """The detection graph on ``lines``; ``end_us``: a finite input's last event time (in-flight files at the
    end are open, not stalled, as in the backtest); ``watermark_step_s``: how far the source's watermark
    jumps at once (a local file's ``TestStream``); ``bounds``: how far an event time may be from when its line
    arrived (``core/clock.py``); ``parser``: how lines are read (its uid key, its dead-letter payload)."""
    steps: list[ContainedStep] = []

    def step(transform: Any) -> Any:
        steps.append(transform)
        return transform

    parsed = lines | "Parse" >> step(ParseEvents(parser or Parser(), stamp=stamp, bounds=bounds))
    events = parsed.events | "Dedup" >> step(Dedup())
    assembled = events | "Assemble" >> step(AssembleTraces(rules))
    measurements, progress = assembled.measurements, assembled[PROGRESS]
    snapshots = measurements | "Learn" >> step(LearnBaselines(rules, baseline, end_us=end_us))
    to_judge = (measurements, progress) | "ToJudge" >> beam.Flatten()
    verdicts, deadlines = (to_judge, snapshots) | "Judge" >> step(JudgeMeasurements(rules, baseline, end_us))
    if end_us is not None:
        # Only deadlines with something to say before the input ends (in progress at the stage's line, or
        # stalled); ``WatchStalls`` says nothing past the end either.
        deadlines = deadlines | "UntilEndOfInput" >> beam.Filter(
            lambda d: min(d.deadline_us, overdue_at(d.progress.last_t_us, d.stall) or d.deadline_us) <= end_us)
    moves = (progress, assembled[STRAGGLERS]) | "ProgressAndStragglers" >> beam.Flatten()
    watched = (moves, deadlines, assembled[SUMMARIES], verdicts) | "Stalls" >> step(WatchStalls(rules, end_us))
    anomalies = (assembled[FAILURES], watched.stalls) | "AllAnomalies" >> beam.Flatten()
    traces = watched[STALLED_SUMMARIES]
    lots = traces | "Lots" >> step(TrackLots(end_us=end_us))
    # Verdicts reach the incident step up to the baseline fold's grace (half an interval) behind the
    # watermark, and a jumping watermark adds its step: the tracker decides that far behind it.
    incidents = (anomalies, traces, watched[ARRIVALS], lots) | "Incidents" >> step(TrackIncidents(
        interval_s=baseline.interval_s, end_us=end_us, hold_s=baseline.interval_s / 2 + watermark_step_s))
    # What no step could handle (an element its code did not foresee) is a dead letter too: contained.py.
    internal = [pc for s in steps for pc in s.internal_errors]
    dead = (parsed[DEAD_LETTERS], assembled[LATE], *internal) | "AllDeadLetters" >> beam.Flatten()
    return Outputs(anomalies, traces, dead, incidents, lots)


def _runner(name: str | None, opts: ValidatedOptions) -> Any:
    """The runner ``--runner`` names, or None for Beam to make it: ours for a local file when none is named (or
    when ours is named), Beam's own for any other name."""
    if name is None:
        if opts.local:
            return LocalRunner()
        raise ValueError(f"a job from Pub/Sub needs --runner: DataflowRunner (production), or {LOCAL_RUNNER} to run "
                         "it in this process (e.g. against the emulators)")
    if name.lower() == LOCAL_RUNNER.lower():
        return LocalRunner()
    return None


def _check_credentials(options: PipelineOptions, opts: ValidatedOptions) -> None:
    """Said before anything is tried, in one line: the Google services this run needs and no credentials for
    them (without, Beam and the clients retry, warn and trace for minutes). The emulators need none; a dry
    run touches nothing."""
    every = options.get_all_options()
    if is_dry_run(options):
        return
    needs = []
    if (every.get("runner") or "").lower().startswith("dataflow"):
        needs.append("Dataflow")
    if (opts.input_subscription or opts.output_topic) and not os.environ.get("PUBSUB_EMULATOR_HOST"):
        needs.append("Pub/Sub")
    if opts.bigquery_dataset and not os.environ.get("BIGQUERY_EMULATOR_HOST"):
        needs.append("BigQuery")
    if not needs:
        return
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise ValueError(
            f"no Google credentials for {', '.join(needs)}: run gcloud auth application-default login (or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a key file), or point at the emulators (PUBSUB_EMULATOR_HOST, "
            "BIGQUERY_EMULATOR_HOST)") from None


def construct(argv: list[str] | None = None,
              broken_off: list[DeadLetter] | None = None) -> tuple[beam.Pipeline, ValidatedOptions]:
    """Validate the options and build the whole job, sources and sinks included, without running it or
    touching anything outside (the step-name test and ``run`` share it). ``broken_off``: see ``run``."""
    options = PipelineOptions(argv)
    opts: ValidatedOptions = validate(options)
    baseline = BaselineConfig(interval_s=opts.baseline_interval_s, half_life_s=opts.half_life_s,
                              line=opts.alert_line)
    options.view_as(StandardOptions).streaming = True
    end_us = None
    damaged: list[Damage] | None = None if broken_off is None else []
    if opts.local:
        assert opts.input_file is not None
        if not os.path.exists(opts.input_file):
            raise ValueError(f"--input_file {opts.input_file} does not exist")
        # Watermark steps shorter than interval - grace (LearnBaselines): a third of an interval.
        stream, sample, end_us = file_stream(
            opts.input_file, int(opts.allowed_lateness_s * US_PER_S), baseline.interval_us // 3, opts.time_bounds,
            damaged=damaged, keep=payload_chars(opts.dead_letter_payload),
        )
        if broken_off is not None and damaged:  # filed at the last event time read (the backtest: its clock)
            broken_off.extend(dead_letter(DAMAGE_REASON, f"{d.path}: {d.detail}", "", format_rfc3339(end_us),
                                          "read") for d in damaged)
        order = opts.stages or infer_from_events(sample)
    else:
        if opts.stages is None:
            raise ValueError("a streaming job from Pub/Sub needs --stages a,b,c (it cannot read ahead to infer them)")
        order = opts.stages
    rules = TraceRules(order, stall_factor=opts.stall_factor, ttl_s=opts.session_gap_s)
    runner = _runner(options.view_as(StandardOptions).runner, opts)
    p = beam.Pipeline(runner=runner, options=options)
    parser = Parser(uid_key=opts.uid_key, payload=opts.dead_letter_payload)
    if opts.local:
        lines = p | "ReadLogFile" >> stream
        out = build(lines, rules, baseline, stamp=True, end_us=end_us,
                    watermark_step_s=baseline.interval_us // 3 / US_PER_S, bounds=opts.time_bounds, parser=parser)
    else:
        lines = p | "ReadLogEntries" >> beam.io.ReadFromPubSub(
            subscription=opts.input_subscription, timestamp_attribute=opts.timestamp_attribute
        )
        out = build(lines, rules, baseline, stamp=False, bounds=opts.time_bounds, parser=parser)

    def payload(dead: beam.PCollection, label: str) -> beam.PCollection:
        """Payload none: no dead letter leaves with what it held (a late event, a row BigQuery refused...)."""
        if opts.dead_letter_payload != NONE:
            return dead
        return dead | label >> beam.Map(without_payload)

    dead_letters = out.dead_letters
    if opts.output_topic:
        # The topic carries incident events; per-file anomalies only when asked (they can be thousands).
        published = out.incidents
        if opts.publish_anomalies:
            published = (out.incidents, out.anomalies) | "IncidentsAndAnomalies" >> beam.Flatten()
        publish = PublishAnomalies(opts.output_topic)
        published | "PublishAnomalies" >> publish
        # A record that cannot be made a message is a dead letter, not a bundle retried without end.
        dead_letters = (dead_letters, *publish.internal_errors) | "WithPublishDeadLetters" >> beam.Flatten()
    if opts.output_dir:
        out.anomalies | "WriteAnomaliesJsonl" >> WriteJsonl(opts.output_dir, "anomalies")
        out.traces | "WriteTracesJsonl" >> WriteJsonl(opts.output_dir, "traces")
        payload(dead_letters, "DeadLettersWithoutPayload") | "WriteDeadLettersJsonl" >> WriteJsonl(
            opts.output_dir, "dead_letters")
        out.incidents | "WriteIncidentsJsonl" >> WriteJsonl(opts.output_dir, "incidents")
        out.lots | "WriteLotsJsonl" >> WriteJsonl(opts.output_dir, "lots")
    if opts.bigquery_dataset:
        rejected = [
            pc | f"WriteBigQuery{name.title()}" >> WriteTableRows(opts.bigquery_dataset, name)
            for name, pc in (("anomalies", out.anomalies), ("traces", out.traces), ("incidents", out.incidents),
                             ("lots", out.lots))
        ]
        dead = payload(([dead_letters, *rejected]) | "AllBigQueryDeadLetters" >> beam.Flatten(),
                       "BigQueryDeadLettersWithoutPayload")
        dead | "WriteBigQueryDeadLetters" >> WriteTableRows(opts.bigquery_dataset, "dead_letters")
    return p, opts


def run(argv: list[str] | None = None, wait: bool = True, broken_off: list[DeadLetter] | None = None) -> Any:
    """Validate, build, prepare the outputs, run. A flex-template launch passes ``wait=False``: submit and
    return. With ``broken_off``, a local input file that breaks off (a truncated or corrupt ``.gz``) is run up to
    the break, and its dead letter (``truncated_input``, source ``read``) is added there and to the output
    folder's; without it, the error is raised."""
    options = PipelineOptions(argv)
    _check_credentials(options, validate(options))  # before the graph: building it for Dataflow wants them too
    p, opts = construct(argv, broken_off)
    if is_dry_run(options):  # built (for Dataflow: translated too); nothing created, written or submitted
        said = summary(p)
        result = p.run()
        print(said, file=sys.stderr)
        return result
    if opts.output_dir:
        os.makedirs(opts.output_dir, exist_ok=True)
        clear_local_output(opts.output_dir)  # the local writers append; a new run replaces the old one's files
        manifest.start(opts.output_dir, "stagewatch run")  # until the end says otherwise, the folder is not whole
    if opts.bigquery_dataset:
        from stagewatch.store.bigquery import bigquery_client, create_tables

        create_tables(bigquery_client(opts.bigquery_dataset.split(".")[0]), opts.bigquery_dataset)
    result = p.run()
    if wait:
        result.wait_until_finish()
        if opts.output_dir:
            if broken_off:  # the driver read the file, not a step: its dead letters are the driver's to write
                append_local_rows(opts.output_dir, "dead_letters", [d.to_dict() for d in broken_off])
            manifest.finish(opts.output_dir, "stagewatch run")
    return result
