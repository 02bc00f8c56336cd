"""The streaming job's options: from the one table of parameters (``run_parameters``) come the
``PipelineOptions`` flags, their validation, and the flex template's ``metadata.json`` (a test holds the
committed file to this table).

Validation runs before any graph is built and says what to type instead (``validate``). The existence of
cloud resources (a dataset, a subscription) is checked at launch by the clients, not here: this module does
not talk to Google Cloud.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from stagewatch.core.clock import TimeBounds
from stagewatch.core.lines import DEFAULT_LINE, LINE_RULES
from stagewatch.core.privacy import PAYLOADS, default_payload
from stagewatch.core.stages import StageOrder
from stagewatch.secrets import UidKey
from stagewatch.store.schemas import DATASET_RE
from stagewatch.stream.parameters import PARAMETERS, SECRET_RE, SUBSCRIPTION_RE, TOPIC_RE, Parameter

__all__ = ["PARAMETERS", "Parameter", "StagewatchOptions", "ValidatedOptions", "template_metadata", "validate",
           "validate_argv"]


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
    time_bounds: TimeBounds
    stall_factor: float
    half_life_s: float
    baseline_interval_s: int  # BaselineConfig.interval_s
    alert_line: str  # BaselineConfig.line
    uid_key: UidKey | None  # uids hashed with the key found there (core/privacy.py)
    dead_letter_payload: str

    @property
    def local(self) -> bool:
        return self.input_file is not None


def _number(name: str, raw: Any, minimum: float, strict: bool) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):  # nan and inf parse as floats, and no setting means them
        unit = "of seconds" if name.endswith("_s") else "(a factor)"
        raise ValueError(f"--{name} must be a number {unit}, got {raw!r}")
    if value < minimum or (strict and value == minimum):
        rel = ">" if strict else ">="
        raise ValueError(f"--{name} must be {rel} {minimum:g}, got {raw!r}")
    return value


def _interval(raw: Any) -> int:
    """Whole seconds, 60 to 3600: a fold waits half an interval for late counts (under 30 s, Pub/Sub's
    delivery delays would miss it), and a stage keeps emitting snapshots every interval while it is quiet."""
    text = str(raw if raw is not None else "300").strip()
    if not re.fullmatch(r"[0-9]+", text) or not 60 <= int(text) <= 3600:
        raise ValueError(f"--baseline_interval_s must be whole seconds from 60 to 3600 (e.g. 300), got {raw!r}")
    return int(text)


def _choice(name: str, raw: Any, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {raw!r}")
    return str(raw)


def _bounds(ahead: Any, age: Any) -> TimeBounds:
    ahead_s = _number("max_ahead_s", ahead, 0, strict=True)
    age_s = _number("max_age_s", age, 0, strict=True)
    try:
        return TimeBounds(ahead_s, age_s)
    except ValueError as exc:
        raise ValueError(f"--{exc}".replace(" (replay: --max-ahead)", "").replace(" (replay: --max-age)", "")) from None


def _flag(name: str, raw: Any) -> bool:
    text = str(raw if raw is not None else "false").strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"--{name} must be true or false, got {raw!r}")
    return text == "true"


def validate_argv(argv: list[str]) -> ValidatedOptions:
    """``validate`` of a command line (the ``run`` command checks its flags before the input they name)."""
    return validate(PipelineOptions(argv))


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
        raise ValueError(f"--input_subscription must look like projects/PROJECT/subscriptions/NAME (PROJECT: 6 to 30 "
                         "lowercase letters, digits or hyphens, starting with a letter; NAME: 3 to 255 characters, "
                         f"starting with a letter), got {sub!r}")
    topic = o.get("output_topic") or None
    if topic is not None and not re.match(TOPIC_RE, topic):
        raise ValueError(f"--output_topic must look like projects/PROJECT/topics/NAME (PROJECT: 6 to 30 lowercase "
                         "letters, digits or hyphens, starting with a letter; NAME: 3 to 255 characters, starting "
                         f"with a letter), got {topic!r}")
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
        time_bounds=_bounds(o.get("max_ahead_s"), o.get("max_age_s")),
        stall_factor=_number("stall_factor", o.get("stall_factor"), 1, strict=False),
        half_life_s=_number("half_life_s", o.get("half_life_s"), 0, strict=True),
        baseline_interval_s=_interval(o.get("baseline_interval_s")),
        alert_line=_choice("alert_line", o.get("alert_line") or DEFAULT_LINE, LINE_RULES),
        uid_key=(key := _uid_key(o, local=path is not None)),
        dead_letter_payload=_payload(o.get("dead_letter_payload"), hashed=key is not None),
    )


def _uid_key(o: dict[str, Any], local: bool) -> UidKey | None:
    """Where the uid key is, when uids are hashed; read once here, so a missing or short key is said now."""
    secret = o.get("uid_key_secret") or None
    if secret is not None and not re.match(SECRET_RE, secret):
        raise ValueError(f"--uid_key_secret must look like projects/PROJECT/secrets/NAME, got {secret!r}")
    if secret is None and not _flag("hash_uids", o.get("hash_uids")):
        return None
    if secret is None and not local:
        raise ValueError("--hash_uids true on Pub/Sub needs --uid_key_secret projects/PROJECT/secrets/NAME: the "
                         "workers read the key there ($STAGEWATCH_UID_KEY is only for local runs)")
    key = UidKey(secret)
    key.resolve()
    return key


def _payload(raw: Any, hashed: bool) -> str:
    payload = default_payload(str(raw) if raw else None, hashed)
    if payload not in PAYLOADS:
        raise ValueError(f"--dead_letter_payload must be one of {', '.join(PAYLOADS)}, got {raw!r}")
    return payload


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
