"""UID privacy and dead-letter payloads: with a uid key no output of either driver holds a raw uid, ``explain``
finds a file by its raw uid with the same key, and a dead letter keeps all, some or none of its line."""

from __future__ import annotations

import pickle
from pathlib import Path

import orjson
import pytest

from stagewatch.cli import main
from stagewatch.core.events import Rejected, StageEvent
from stagewatch.core.parser import Parser
from stagewatch.core.privacy import UID_KEY_ENV, pseudonym
from stagewatch.core.records import DEAD_LINE_CHARS
from stagewatch.secrets import UidKey

KEY = "k3y-for-the-tests-only-0123456789abcdef"
LINE = b'{"timestamp": "2026-06-06T12:00:00Z", "jsonPayload": {"uid": "patient-4711.dcm", "stage": "upload"}}'


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(UID_KEY_ENV, KEY)
    return KEY


@pytest.mark.unit
def test_a_keyed_hash_replaces_the_uid_at_parse_time(key_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = Parser(uid_key=UidKey())
    ev = parser.parse(LINE)
    assert isinstance(ev, StageEvent) and ev.uid == pseudonym(KEY.encode(), "patient-4711.dcm")
    assert ev.uid.startswith("h-") and len(ev.uid) == 34 and "4711" not in ev.uid
    assert Parser(uid_key=UidKey()).parse(LINE) == ev  # the same key, the same hash: lines still join
    assert ev._replace(uid="patient-4711.dcm") == Parser().parse(LINE)  # nothing else changes
    # The graph carries where the key is, never the key: a worker reads it itself.
    shipped = pickle.dumps(parser)
    assert KEY.encode() not in shipped
    assert pickle.loads(shipped).parse(LINE) == ev
    monkeypatch.setenv(UID_KEY_ENV, KEY + "-rotated")
    assert Parser(uid_key=UidKey()).parse(LINE).uid != ev.uid  # type: ignore[union-attr]


@pytest.mark.unit
def test_a_missing_or_short_key_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UID_KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=r"no uid key: set \$STAGEWATCH_UID_KEY"):
        Parser(uid_key=UidKey())
    monkeypatch.setenv(UID_KEY_ENV, "sesame-123")
    with pytest.raises(ValueError, match="is 10 bytes; it must be at least 16") as caught:
        Parser(uid_key=UidKey())
    assert "sesame" not in str(caught.value)


@pytest.mark.unit
@pytest.mark.parametrize(("payload", "kept"), [("trimmed", DEAD_LINE_CHARS), ("full", 5_000), ("none", 0)])
def test_a_rejected_line_keeps_what_the_payload_says(payload: str, kept: int) -> None:
    junk = b"{" + b"x" * 4_999
    out = Parser(payload=payload).parse(junk)
    assert isinstance(out, Rejected) and out.reason == "invalid_json"
    assert out.line == junk[:kept].decode()
    with pytest.raises(ValueError, match="one of full, trimmed, none"):
        Parser(payload="some")


def _outputs(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("*.jsonl")))


@pytest.mark.cli
def test_no_output_of_either_driver_holds_a_raw_uid(key_env: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Replay and the streaming job with the same key: the same hashed anomalies, no raw uid anywhere (payload
    none: not in the dead letters either), and ``explain`` finds a file from its raw uid."""
    sim = tmp_path / "sim"
    assert main(["simulate", str(sim), "--short", "--seed", "37", "--rate", "3"]) == 0
    logs = sim / "logs.jsonl"
    raw_uids = {orjson.loads(x)["uid"] for x in (sim / "labels.jsonl").read_bytes().splitlines()}
    ahead = orjson.loads(logs.read_bytes().splitlines()[400])
    ahead["timestamp"], ahead["insertId"] = "2150-01-01T00:00:00Z", "ahead-1"  # an event dead letter, raw uid
    logs.write_bytes(logs.read_bytes() + orjson.dumps(ahead) + b"\n")
    replayed = tmp_path / "replayed"
    assert main(["replay", str(logs), "-o", str(replayed / "anomalies.jsonl"), "--traces",
                 str(replayed / "traces.jsonl"), "--incidents", str(replayed / "incidents.jsonl"),
                 "--dead-letters", str(replayed / "dead_letters.jsonl"), "--hash-uids",
                 "--dead-letter-payload", "none", "--no-progress"]) == 0
    ran = tmp_path / "ran"
    assert main(["run", "--input_file", str(logs), "--output_dir", str(ran), "--hash_uids", "true",
                 "--dead_letter_payload", "none"]) == 0
    for folder in (replayed, ran):
        text = _outputs(folder)
        assert text.count(b'"h-') > 100
        leaked = [uid for uid in raw_uids if uid.encode() in text]
        assert not leaked, (folder.name, leaked[:5])
        dead = [orjson.loads(x) for p in folder.glob("dead_letters*.jsonl") for x in p.read_bytes().splitlines()]
        assert dead and all(d["line"] == "" for d in dead) and "future" in {d["reason"] for d in dead}

    def anomalies(folder: Path) -> set[tuple[str, str, str]]:
        return {(a["kind"], a["uid"], a["stage"]) for p in folder.glob("anomalies*.jsonl")
                for a in map(orjson.loads, p.read_bytes().splitlines())}

    one, two = anomalies(replayed), anomalies(ran)
    assert len(one & two) / len(one | two) >= 0.99
    stalled = next(a for a in map(orjson.loads, (replayed / "anomalies.jsonl").read_bytes().splitlines())
                   if a["kind"] == "stalled")
    raw = next(u for u in raw_uids if pseudonym(KEY.encode(), u) == stalled["uid"])
    capsys.readouterr()
    assert main(["explain", raw, "--input", str(ran), "--hash-uids"]) == 0
    told = capsys.readouterr().out
    assert stalled["uid"] in told and "stalled" in told and raw not in told
    assert main(["explain", raw, "--input", str(ran)]) == 2  # without the key: no file of that (raw) uid


@pytest.mark.cli
def test_uid_key_mistakes_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(UID_KEY_ENV, raising=False)
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(LINE + b"\n")
    cases = [
        (["replay", str(logs), "--hash-uids"], "no uid key: set $STAGEWATCH_UID_KEY"),
        (["explain", "f-1", "--input", str(tmp_path), "--hash-uids"], "no uid key"),
        (["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "o"), "--hash_uids", "true"],
         "no uid key"),
        (["run", "--input_subscription", "projects/my-proj/subscriptions/logs", "--output_topic",
          "projects/my-proj/topics/anomalies",
          "--hash_uids", "true"], "needs --uid_key_secret"),
        (["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "o"), "--uid_key_secret", "my-key"],
         "--uid_key_secret must look like projects/PROJECT/secrets/NAME"),
        (["run", "--input_file", str(logs), "--output_dir", str(tmp_path / "o"), "--dead_letter_payload", "all"],
         "--dead_letter_payload must be one of full, trimmed, none"),
    ]
    for argv, says in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)


@pytest.mark.unit
def test_a_key_secret_without_google_credentials_is_one_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-credentials.json"))
    with pytest.raises(ValueError, match=r"no Google credentials to read projects/p/secrets/k/versions/latest "
                                         r"\(run: gcloud auth application-default login\)"):
        UidKey("projects/p/secrets/k").resolve()


@pytest.mark.cli
def test_with_hashed_uids_a_dead_letter_keeps_no_raw_uid_by_default(key_env: str, tmp_path: Path) -> None:
    logs = tmp_path / "logs.jsonl"
    logs.write_bytes(LINE + b"\n" + LINE.replace(b'"upload"', b'"up\\u0000load"') + b"\n")
    for extra, kept in (([], False), (["--dead-letter-payload", "trimmed"], True)):
        dead = tmp_path / "dead.jsonl"
        assert main(["replay", str(logs), "--hash-uids", "--dead-letters", str(dead), "-o", str(tmp_path / "a.jsonl"),
                     "--stages", "detect,upload", "--no-progress", *extra]) == 0
        rows = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
        assert [r["reason"] for r in rows] == ["bad_stage"]
        assert ("patient-4711" in rows[0]["line"]) is kept


@pytest.mark.cli
def test_explain_takes_a_hash_as_it_is(key_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hashed = pseudonym(KEY.encode(), "f-1")
    (tmp_path / "traces.jsonl").write_bytes(b"")
    assert main(["explain", hashed, "--input", str(tmp_path), "--hash-uids"]) == 2
    assert hashed in capsys.readouterr().err  # looked for as given, not hashed again
