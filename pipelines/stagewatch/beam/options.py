"""The streaming job's options: one table of parameters, from which come the ``PipelineOptions`` flags, their
validation, and the flex template's ``metadata.json`` (a test holds the committed file to this table).

Validation runs before any graph is built and says what to type instead (``validate``). The existence of
cloud resources (a dataset, a subscription) is checked at launch by the clients, not here: this module does
not talk to Google Cloud.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from stagewatch.bigquery_tables import DATASET_RE, PROJECT_PATTERN
from stagewatch.stages import StageOrder

__all__ = ["PARAMETERS", "Parameter", "StagewatchOptions", "ValidatedOptions", "template_metadata", "validate"]

_PROJECT = PROJECT_PATTERN
_RESOURCE = r"[A-Za-z][-A-Za-z0-9_.~+%]{2,254}"
SUBSCRIPTION_RE = rf"^projects/{_PROJECT}/subscriptions/{_RESOURCE}$"
TOPIC_RE = rf"^projects/{_PROJECT}/topics/{_RESOURCE}$"
_NUMBER_RE = r"^[0-9]+(\.[0-9]+)?$"
_PATH_RE = r"^\S.*$"


@dataclass(frozen=True)
class Parameter:
    name: str
    label: str
    help: str
    regex: str
    default: str | None = None
    kind: type = str


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("input_subscription", "Log entries subscription",
              "Pub/Sub subscription of the Cloud Logging sink's topic, e.g. "
              "projects/my-proj/subscriptions/stagewatch-logs. Message data is a LogEntry.", SUBSCRIPTION_RE),
    Parameter("input_file", "Log entries file (local runs)",
              "A file of LogEntry JSON lines (plain or .gz) to run over instead of a subscription; for local "
              "runs and tests.", _PATH_RE),
    Parameter("timestamp_attribute", "Event-time attribute",
              "Pub/Sub message attribute holding the event time, so the watermark follows the logs' time.",
              r"^[^\s]+$", "logging.googleapis.com/timestamp"),
    Parameter("output_topic", "Incident topic",
              "Pub/Sub topic for incident events (and per-file anomalies with publish_anomalies; JSON body; "
              "attributes kind, stage, tenant, severity, event, scope), e.g. "
              "projects/my-proj/topics/stagewatch-anomalies.", TOPIC_RE),
    Parameter("publish_anomalies", "Publish per-file anomalies",
              "true: the topic carries every per-file anomaly as well as the incident events (off by default: "
              "one slowdown can make thousands).", r"^(true|false)$", "false"),
    Parameter("bigquery_dataset", "BigQuery dataset",
              "Dataset for the anomalies, traces, dead_letters, incidents and lots tables (created when missing, "
              "new columns added), e.g. my-proj.stagewatch.", DATASET_RE),
    Parameter("output_dir", "Local output folder",
              "Folder for anomalies*.jsonl, traces*.jsonl, dead_letters*.jsonl, incidents*.jsonl and "
              "lots*.jsonl (local runs).", _PATH_RE),
    Parameter("stages", "Stage order",
              "Comma-separated stage names in order (a trailing ? marks a stage optional). Inferred from the "
              "data when empty.", r"^[^,]+(,[^,]+)*$"),
    Parameter("session_gap_s", "Trace session gap (seconds)",
              "Silence after which a file's trace is closed as open (its session ends) and its state freed; "
              "events of the file within another gap after that are dead-lettered (after_close).",
              _NUMBER_RE, "3600", float),
    Parameter("allowed_lateness_s", "Allowed lateness (seconds)",
              "Local runs (--input_file): the watermark trails the newest event time by this much, as the "
              "backtest's does (from Pub/Sub the watermark is the runner's estimate). Either way, an event "
              "older than what its file already processed is dead-lettered with reason late.",
              _NUMBER_RE, "60", float),
    Parameter("stall_factor", "Stall factor",
              "A file is stalled when its next stage has not arrived within this many times that stage's "
              "alert line.", _NUMBER_RE, "8", float),
    Parameter("half_life_s", "Baseline half-life (seconds)",
              "How fast the rolling baselines forget.", _NUMBER_RE, "10800", float),
)


class StagewatchOptions(PipelineOptions):
    """The job's flags: exactly ``PARAMETERS``, which are also the flex template's parameters."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        for p in PARAMETERS:
            parser.add_argument(f"--{p.name}", default=p.default, help=p.help)


@dataclass(frozen=True)
class ValidatedOptions:
    input_subscription: str | None
    input_file: str | None
    timestamp_attribute: str
    output_topic: str | None
    publish_anomalies: bool
    bigquery_dataset: str | None  # "project.dataset"
    output_dir: str | None
    stages: StageOrder | None
    session_gap_s: float
    allowed_lateness_s: float
    stall_factor: float
    half_life_s: float

    @property
    def local(self) -> bool:
        return self.input_file is not None


def _number(name: str, raw: Any, minimum: float, strict: bool) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be a number of seconds, got {raw!r}") from None
    if value < minimum or (strict and value == minimum):
        rel = ">" if strict else ">="
        raise ValueError(f"--{name} must be {rel} {minimum:g}, got {raw!r}")
    return value


def _flag(name: str, raw: Any) -> bool:
    text = str(raw if raw is not None else "false").strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"--{name} must be true or false, got {raw!r}")
    return text == "true"


def validate(opts: PipelineOptions) -> ValidatedOptions:
    """Check the flags and say what to type instead; raises ``ValueError`` before any graph is built."""
    o = opts.view_as(StagewatchOptions).get_all_options()
    sub, path = o.get("input_subscription") or None, o.get("input_file") or None
    if (sub is None) == (path is None):
        raise ValueError(
            "give exactly one input: --input_subscription projects/PROJECT/subscriptions/NAME (production) or "
            "--input_file LOGS.jsonl (a local run)"
        )
    if sub is not None and not re.match(SUBSCRIPTION_RE, sub):
        raise ValueError(f"--input_subscription must look like projects/PROJECT/subscriptions/NAME, got {sub!r}")
    topic = o.get("output_topic") or None
    if topic is not None and not re.match(TOPIC_RE, topic):
        raise ValueError(f"--output_topic must look like projects/PROJECT/topics/NAME, got {topic!r}")
    dataset = o.get("bigquery_dataset") or None
    if dataset is not None:
        if not re.match(DATASET_RE, dataset):
            raise ValueError(f"--bigquery_dataset must look like PROJECT.DATASET, got {dataset!r}")
        dataset = dataset.replace(":", ".", 1)
    out_dir = o.get("output_dir") or None
    if sub is not None and topic is None and dataset is None and out_dir is None:
        raise ValueError(
            "a streaming job needs somewhere to send anomalies: --output_topic and/or --bigquery_dataset "
            "(or --output_dir for a local test)"
        )
    if path is not None and out_dir is None:
        raise ValueError("a local run (--input_file) writes JSONL files: give --output_dir FOLDER")
    attribute = o.get("timestamp_attribute") or "logging.googleapis.com/timestamp"
    stages_text = o.get("stages") or None
    stages = StageOrder.parse(stages_text) if stages_text else None
    return ValidatedOptions(
        input_subscription=sub,
        input_file=path,
        timestamp_attribute=attribute,
        output_topic=topic,
        publish_anomalies=_flag("publish_anomalies", o.get("publish_anomalies")),
        bigquery_dataset=dataset,
        output_dir=out_dir,
        stages=stages,
        session_gap_s=_number("session_gap_s", o.get("session_gap_s"), 0, strict=True),
        allowed_lateness_s=_number("allowed_lateness_s", o.get("allowed_lateness_s"), 0, strict=False),
        stall_factor=_number("stall_factor", o.get("stall_factor"), 1, strict=False),
        half_life_s=_number("half_life_s", o.get("half_life_s"), 0, strict=True),
    )


def template_metadata() -> dict[str, Any]:
    """The flex template's metadata.json, from ``PARAMETERS``."""
    params = []
    for p in PARAMETERS:
        params.append(
            {"name": p.name, "label": p.label, "helpText": p.help, "regexes": [p.regex], "isOptional": True}
        )
    return {
        "name": "stagewatch",
        "description": "Per-file latency anomaly detection for multi-service pipelines: Cloud Logging entries "
        "from Pub/Sub in, anomaly events to Pub/Sub and BigQuery out.",
        "parameters": params,
    }
