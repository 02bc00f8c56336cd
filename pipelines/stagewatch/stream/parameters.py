"""The streaming job's parameters: one table from which come the ``run`` command's flags and help, the
``PipelineOptions`` class and its validation (``beam.options``), and the flex template's ``metadata.json``.

Apart from ``beam.options`` so that building the ``stagewatch`` command line does not import Beam: that import
cost every ``stagewatch replay`` a second and 120 MB before it read a line.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagewatch.core.lines import DEFAULT_LINE
from stagewatch.store.schemas import DATASET_RE, PROJECT_PATTERN

__all__ = ["PARAMETERS", "SUBSCRIPTION_RE", "TOPIC_RE", "Parameter"]

_PROJECT = PROJECT_PATTERN
_RESOURCE = r"[A-Za-z][-A-Za-z0-9_.~+%]{2,254}"
SUBSCRIPTION_RE = rf"^projects/{_PROJECT}/subscriptions/{_RESOURCE}$"
TOPIC_RE = rf"^projects/{_PROJECT}/topics/{_RESOURCE}$"
_NUMBER_RE = r"^[0-9]+(\.[0-9]+)?$"
SECRET_RE = r"^projects/[^/\s]+/secrets/[^/\s]+(/versions/[^/\s]+)?$"
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
              "Local runs (--input_file): the watermark trails the fourth newest event time by this much (one "
              "line ahead of the rest does not pull it), as the backtest's does; from Pub/Sub on "
              "StagewatchLocalRunner it trails the oldest line of each pull by this much (on Dataflow the "
              "watermark is Dataflow's estimate). Either way, an event older than what its file already processed "
              "is dead-lettered with reason late.",
              _NUMBER_RE, "60", float),
    Parameter("max_ahead_s", "Furthest event time ahead (seconds)",
              "An event dated further ahead than this of the time its line arrived (the processing time; for "
              "a local file, the file's robust clock, as in the backtest) is dead-lettered with reason future: "
              "it never reaches a watermark or a file's state.", _NUMBER_RE, "600", float),
    Parameter("max_age_s", "Oldest event time (seconds)",
              "An event dated further back than this from the time its line arrived is dead-lettered with "
              "reason too_old (the default, 7 days, is Pub/Sub's default retention: a job catching up on a "
              "backlog loses nothing).", _NUMBER_RE, "604800", float),
    Parameter("stall_factor", "Stall factor",
              "A file is stalled when its next stage has not arrived within this many times that stage's "
              "alert line.", _NUMBER_RE, "8", float),
    Parameter("half_life_s", "Baseline half-life (seconds)",
              "How fast the rolling baselines forget.", _NUMBER_RE, "10800", float),
    Parameter("baseline_interval_s", "Baseline interval (seconds)",
              "How often each stage's baseline folds in what it learned and its alert lines are redrawn (whole "
              "seconds, 60 to 3600). A stage's first interval is judged at its end, so a shorter interval gives "
              "the first verdicts sooner, for more work per stage and tenant; replay's --baseline-interval.",
              r"^[0-9]+$", "300", int),
    Parameter("alert_line", "Alert line rule",
              "How each stage's alert line is read from its baseline: tail (the default: from the estimated "
              "p99.9 of its own durations; a bounded false-alert rate whatever their shape) or body (from the "
              "lower half of its durations; also catches a slow share of up to 30 % present from the start, but "
              "pages on stages with a second mode or a long tail). docs/detection.md compares them.",
              r"^(tail|body)$", DEFAULT_LINE),
    Parameter("hash_uids", "Hash file uids",
              "true: every uid is replaced by a keyed hash (HMAC-SHA256) when its line is parsed, so no table or "
              "message holds a raw uid; the key is read by each worker from uid_key_secret (or, for local runs, "
              "$STAGEWATCH_UID_KEY).", r"^(true|false)$", "false"),
    Parameter("uid_key_secret", "Uid key secret",
              "Secret Manager secret holding the uid key (at least 16 bytes), e.g. "
              "projects/my-proj/secrets/stagewatch-uid-key; implies hash_uids.", SECRET_RE),
    Parameter("dead_letter_payload", "Dead-letter payload",
              "How much of a rejected line its dead letter keeps: trimmed (the first 1,000 characters; the "
              "default), full (the whole line, up to 256 KiB) or none (reason, detail, time and step only; the "
              "default when uids are hashed: a rejected line may hold a raw uid).",
              r"^(full|trimmed|none)$"),
)
