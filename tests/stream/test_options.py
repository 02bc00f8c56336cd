"""The streaming job's options: validation before any graph, and the flex template's metadata."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from stagewatch.stream.options import PARAMETERS, template_metadata, validate

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SUB = "projects/my-proj/subscriptions/stagewatch-logs"


def v(*argv: str):  # type: ignore[no-untyped-def]
    return validate(PipelineOptions(list(argv)))


def test_local_run_defaults() -> None:
    o = v("--input_file", "logs.jsonl", "--output_dir", "out")
    assert o.local and o.session_gap_s == 3600 and o.allowed_lateness_s == 60 and o.stages is None
    assert o.timestamp_attribute == "logging.googleapis.com/timestamp"


def test_production_options() -> None:
    o = v("--input_subscription", SUB, "--output_topic", "projects/my-proj/topics/anomalies",
          "--bigquery_dataset", "my-proj:stagewatch", "--stages", "a,b?,c", "--session_gap_s", "600")
    assert not o.local and o.bigquery_dataset == "my-proj.stagewatch" and o.session_gap_s == 600
    assert o.stages is not None and o.stages.optional == frozenset({"b"})


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "give exactly one input"),
        (["--input_file", "x", "--input_subscription", SUB, "--output_dir", "o"], "give exactly one input"),
        (["--input_subscription", "my-sub", "--output_topic", "projects/my-proj/topics/t"],
         "projects/PROJECT/subscriptions/NAME"),
        (["--input_subscription", SUB], "needs somewhere to send anomalies"),
        (["--input_subscription", SUB, "--output_topic", "anomalies"], "projects/PROJECT/topics/NAME"),
        (["--input_subscription", SUB, "--bigquery_dataset", "stagewatch"], "PROJECT.DATASET"),
        (["--input_file", "x"], "give --output_dir"),
        (["--input_file", "x", "--output_dir", "o", "--session_gap_s", "0"], "--session_gap_s must be > 0"),
        (["--input_file", "x", "--output_dir", "o", "--session_gap_s", "-5"], "must be > 0"),
        (["--input_file", "x", "--output_dir", "o", "--allowed_lateness_s", "soon"], "must be a number"),
        (["--input_file", "x", "--output_dir", "o", "--allowed_lateness_s", "nan"], "must be a number"),
        (["--input_file", "x", "--output_dir", "o", "--stall_factor", "inf"], "must be a number"),
        (["--input_file", "x", "--output_dir", "o", "--stall_factor", "0.5"], "--stall_factor must be >= 1"),
        (["--input_file", "x", "--output_dir", "o", "--max_ahead_s", "0"], "--max_ahead_s must be > 0"),
        (["--input_file", "x", "--output_dir", "o", "--max_age_s", "1e12"], "--max_age_s must be > 0 and at most 100"),
        (["--input_file", "x", "--output_dir", "o", "--stages", ",?"], "--stages needs"),
        (["--input_file", "x", "--output_dir", "o", "--publish_anomalies", "yes"], "must be true or false"),
        (["--input_file", "x", "--output_dir", "o", "--alert_line", "p99"], "--alert_line must be one of body, tail"),
        *[(["--input_file", "x", "--output_dir", "o", "--baseline_interval_s", bad],
           "--baseline_interval_s must be whole seconds from 60 to 3600")
          for bad in ("59", "3601", "90.5", "nan", "", "\u0666\u0660", "\u00b2")],
    ],
)
def test_bad_options_say_what_to_type(argv: list[str], says: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        v(*argv)
    assert says in str(err.value)


def test_committed_metadata_is_the_parameter_table() -> None:
    committed = orjson.loads((REPO / "templates" / "stagewatch" / "metadata.json").read_bytes())
    assert committed == template_metadata()
    names = [p["name"] for p in committed["parameters"]]
    assert names == [p.name for p in PARAMETERS]
    for p in committed["parameters"]:
        assert p["label"] and p["helpText"] and p["regexes"] and p["isOptional"] is True


def test_defaults_match_their_own_regexes() -> None:
    import re

    for p in PARAMETERS:
        if p.default is not None:
            assert re.match(p.regex, p.default), p.name
    assert re.match(PARAMETERS[0].regex, SUB)
