"""stagewatch report: one self-contained HTML page from a run's tables, its content, and how it renders in a browser.

The content tests run the report over a real backtest of a simulated day (five hours, so that the batches in
flight during the injected faults have gone quiet and been judged as lots). The browser test opens the page
in Debian's headless Chromium through selenium, with no network, and looks at what it drew.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import orjson
import pytest

from stagewatch.cli import main
from stagewatch.core.timeutil import US_PER_S, format_rfc3339, parse_rfc3339_us
from stagewatch.investigate.page import breakable_id
from stagewatch.investigate.report import render_report
from stagewatch.investigate.report_data import END_TO_END, gather, latest_incidents, stage_order
from stagewatch.store.readers import LocalTables
from stagewatch.store.schemas import TABLES
from tests.streams import T0

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MIN = 60 * US_PER_S


def _rows(folder: Path, table: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for p in sorted(folder.glob(f"{table}*.jsonl"))
            for line in p.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backtest's tables in one folder, as ``stagewatch run --output_dir`` names them (replay writes every
    one in its table's shape)."""
    root = tmp_path_factory.mktemp("report")
    assert main(["simulate", str(root / "sim"), "--short", "--hours", "5", "--seed", "4", "--rate", "8"]) == 0
    out = root / "out"
    out.mkdir()
    assert main(["replay", str(root / "sim" / "logs.jsonl"), "-o", str(out / "anomalies.jsonl"),
                 "--traces", str(out / "traces.jsonl"), "--incidents", str(out / "incidents.jsonl"),
                 "--lots", str(out / "lots.jsonl"), "--dead-letters", str(out / "dead_letters.jsonl"),
                 "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def report_file(run_out: Path) -> Path:
    target = run_out.parent / "report.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["report", str(run_out), "-o", os.path.relpath(target)]) == 0
    # The absolute path, alone on stdout: what a script (or the README's quickstart) opens next.
    assert stdout.getvalue() == f"{target.resolve()}\n"
    return target


@pytest.mark.cli
def test_the_report_holds_every_section_incident_and_unfinished_lot(run_out: Path, report_file: Path) -> None:
    html = report_file.read_text(encoding="utf-8")
    traces, anomalies = _rows(run_out, "traces"), _rows(run_out, "anomalies")
    events, lots = _rows(run_out, "incidents"), _rows(run_out, "lots")
    assert {"lot_incomplete", "lot_slow"} <= {r["kind"] for r in lots}, "the fixture's run must judge lots"
    for section in ("summary", "stages", "incidents", "tenants", "end-to-end", "lots"):
        assert f'<section id="{section}">' in html
    headline = html[html.index('<p class="headline">'):]
    assert headline.startswith(f'<p class="headline">{len(traces):,} files, {len(anomalies):,} anomalies')
    incident_ids = {e["incident_id"] for e in events}
    assert len(incident_ids) >= 3
    # Each incident once (its id is printed in its row only), in its latest state; a narrow column breaks an
    # id only between its parts, never inside a word or its timestamp.
    for incident_id in incident_ids:
        shown = breakable_id(incident_id)
        assert html.count(shown) == 1 and shown.replace("<wbr>", "") == escape(incident_id), incident_id
        assert re.search(r"\d{4}-\d\d-\d\dT[\d:.]+Z$", shown) and "<wbr>" not in shown[-27:], shown
    assert html.count('<span class="badge ') == len(incident_ids)
    still_open = {i["incident_id"] for i in latest_incidents(events) if not i["resolved_at"]}
    assert html.count('<span class="badge open">') == len(still_open)
    lots_html = html[html.index('<section id="lots">'):]
    for r in lots:
        assert r["lot"] in lots_html
        for f in r["unfinished"][:8]:  # grouped by how they ended, the first eight of each group shown
            if sum(g["status"] == f["status"] and g["last_stage"] == f["last_stage"] for g in r["unfinished"]) <= 8:
                assert f["uid"] in lots_html, (r["lot"], f["uid"])
    tenants_html = html[html.index('<section id="tenants">'):html.index('<section id="end-to-end">')]
    for tenant in {t["tenant"] for t in traces if t["tenant"]}:
        assert f"<td>{tenant}</td>" in tenants_html
    stages_html = html[html.index('<section id="stages">'):html.index('<section id="incidents">')]
    for stage in {s["stage"] for t in traces for s in t["stages"] if s["duration_ms"] is not None}:
        assert f"<td>{stage}</td>" in stages_html
    # Self-contained: two inline charts, and nothing the browser would fetch.
    assert html.count("<svg ") == 2 and html.count("</svg>") == 2
    for tag in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "@import", "url(http", "url(//"):
        assert tag not in html.lower(), tag
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert {m for m in re.findall(r'([\w:-]+)="https?://', html)} <= {"xmlns", "xmlns:xlink"}
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "two charts in one page must not share element ids"
    assert report_file.stat().st_size < 2_000_000


@pytest.mark.cli
def test_the_headline_and_tenants_tell_the_incidents_story(report_file: Path) -> None:
    """The quickstart demo's page had "Slowest stage: upload (8.7x)" in red, no incident for it and wayne
    unmarked: one customer's uploads were the story. Now the incident is named with its customer, the stage out
    of range says whose incident it is, and wayne's row is marked with the stage it has trouble at."""
    html = report_file.read_text(encoding="utf-8")
    summary = html[html.index('<section id="summary">'):html.index('<section id="stages">')]
    assert "tenant wayne: upload slow" in summary
    assert re.search(r'<p class="headline">Out of usual range: upload: p95 wait [^<]*— the incident above: '
                     r"tenant wayne: upload slow", summary)
    assert 'headline bad">Out of usual range: <b>upload' not in summary
    tenants = html[html.index('<section id="tenants">'):html.index('<section id="end-to-end">')]
    row = re.search(r"<tr class=above><td>wayne</td>.*?</tr>", tenants)
    assert row and re.search(r"<td>upload: \d+ of \d+ flagged</td>", row.group(0)), row
    assert re.search(r"<td>upload slow \d\d:\d\d–\d\d:\d\d</td>", row.group(0))


@pytest.mark.unit
def test_lots_not_yet_judged_are_said_to_be_neither_good_nor_bad() -> None:
    traces = [_trace(f"f{i}", T0 + i * MIN, 1_000.0) | {"lot": "lot-1"} for i in range(30)]
    html = render_report(MemoryTables(traces=traces), since_us=None, until_us=None)
    tile = re.search(r'<div class="tile ([a-z]*)"><b>[^<]*</b>lot records<div class="note">([^<]*)</div>', html)
    assert tile and tile.groups() == ("", "no lot judged yet: 2 h after its last file"), tile
    assert "No lot judged yet: lots are judged 2.0 h after their last file" in html
    later = [*traces, _trace("g", T0 + 4 * 60 * MIN, 1_000.0)]  # lot-1 has been quiet for over 2 h by then
    html = render_report(MemoryTables(traces=later), since_us=None, until_us=None)
    assert "1 lot judged: none incomplete or slow" in html and "No lot judged yet" not in html


@pytest.mark.cli
def test_the_span_filters_what_is_reported(run_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = _rows(run_out, "incidents")
    first_event = min(parse_rfc3339_us(e["at"]) for e in events)
    before = tmp_path / "before.html"
    assert main(["report", str(run_out), "-o", str(before), "--until", format_rfc3339(first_event)]) == 0
    html = before.read_text(encoding="utf-8")
    assert "No incidents in this span." in html
    assert not any(escape(e["incident_id"]) in html for e in events)
    # Anomalies of the window only: the headline counts those whose event time is before the first incident.
    early = [a for a in _rows(run_out, "anomalies") if parse_rfc3339_us(a["event_time"]) < first_event]
    assert f"files, {len(early):,} anomalies" in html
    capsys.readouterr()
    assert main(["report", str(run_out), "-o", str(before), "--since", "yesterday"]) == 2
    assert "--since must be an RFC 3339 time" in capsys.readouterr().err
    assert main(["report", str(run_out), "-o", str(before), "--since", "2026-06-06T14:00:00Z",
                 "--until", "2026-06-06T13:00:00Z"]) == 2
    assert "--since must be before --until" in capsys.readouterr().err
    assert main(["report", str(run_out.parent / "sim"), "-o", str(before)]) == 2
    assert "holds none of" in capsys.readouterr().err
    assert main(["report", str(run_out), "-o", str(tmp_path / "no" / "such.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.cli
def test_the_same_tables_give_the_same_page(run_out: Path) -> None:
    """No clock, no random ids: a report can be diffed, cached and tested."""
    tables = LocalTables(str(run_out))
    assert render_report(tables, since_us=None, until_us=None) == render_report(tables, since_us=None,
                                                                                   until_us=None)


class MemoryTables:
    """The ``Tables`` protocol over rows in memory (filtered on the partition column like the real ones)."""

    where = "memory"
    incomplete = None

    def __init__(self, **tables: list[dict[str, Any]]) -> None:
        self.tables = tables

    def rows(self, table: str, *, uid: str | None = None, since_us: int | None = None,
             until_us: int | None = None) -> Iterator[dict[str, Any]]:
        column = TABLES[table].partition_field
        for row in self.tables.get(table, []):
            t = parse_rfc3339_us(row[column])
            if (uid is None or row.get("uid") == uid) and (since_us is None or t >= since_us) and (
                    until_us is None or t < until_us):
                yield row


def _trace(uid: str, t_us: int, wait_ms: float, tenant: str = "acme") -> dict[str, Any]:
    done = t_us + int(wait_ms * 1000)
    return {"uid": uid, "tenant": tenant, "lot": None, "status": "complete", "first_time": format_rfc3339(t_us),
            "last_time": format_rfc3339(done), "end_to_end_ms": wait_ms, "closed_at": format_rfc3339(done),
            "missing_stages": [], "negative_gaps": 0,
            "stages": [{"stage": "detect", "time": format_rfc3339(t_us), "duration_ms": None, "verdict": "start"},
                       {"stage": "work", "time": format_rfc3339(done), "duration_ms": wait_ms, "verdict": "pending"}]}


def _slow(uid: str, t_us: int, wait_ms: float) -> dict[str, Any]:
    return {"anomaly_id": uid, "kind": "slow_stage", "uid": uid, "stage": "work", "tenant": "acme",
            "event_time": format_rfc3339(t_us), "observed_ms": wait_ms, "expected_ms": 1000.0,
            "threshold_ms": 2500.0, "message": f"work of {uid} took {wait_ms} ms"}


@pytest.mark.unit
def test_the_usual_band_does_not_learn_the_flagged_waits() -> None:
    """Three hours of 1 s waits with a 40-minute block of 10 s waits in the middle, all of them flagged:
    the band stays at 1 s through the block and after it, and the headline names the stage."""
    traces, anomalies = [], []
    for i in range(180 * 2):  # a file every 30 s
        t = T0 + i * 30 * US_PER_S
        slow = 80 * MIN <= i * 30 * US_PER_S < 120 * MIN
        wait = 10_000.0 if slow else 1_000.0 + (i % 7) * 20
        traces.append(_trace(f"f{i}", t, wait))
        if slow:
            anomalies.append(_slow(f"f{i}", t + int(wait * 1000), wait))
    data = gather(MemoryTables(traces=traces, anomalies=anomalies), since_us=None, until_us=None)
    work = next(s for s in data.series if s.stage == "work")
    assert data.bucket_us == 10 * MIN
    block = [i for i, start in enumerate(work.starts_us) if T0 + 90 * MIN <= start < T0 + 120 * MIN]
    assert block and all(work.p95[i] == pytest.approx(10_000) for i in block)
    after = [i for i, start in enumerate(work.starts_us) if start >= T0 + 120 * MIN and work.n[i] >= 5]
    assert all(work.usual_p95[i] < 1_200 for i in block + after)
    assert work.ratio(work.worst() or 0) > 8
    html = render_report(MemoryTables(traces=traces, anomalies=anomalies), since_us=None, until_us=None)
    # Out of range with no incident (the tables hold none): said plainly, in red, with why none opened.
    assert re.search(r'<p class="headline bad">Out of usual range: <b>work: p95 wait 10 s[^<]*</b> — no incident: '
                     r"its \d+ flagged files", html)
    # Unflagged, the same slow block would have raised its own band: the flags are what keep it usual.
    unflagged = gather(MemoryTables(traces=traces), since_us=None, until_us=None)
    assert max(next(s for s in unflagged.series if s.stage == "work").usual_p95[i] for i in after) > 5_000
    assert {s.stage for s in data.series} == {"work", END_TO_END}


@pytest.mark.unit
def test_each_incident_once_in_its_latest_state_and_the_stage_order() -> None:
    def event(incident: str, kind: str, at_min: int, files: int) -> dict[str, Any]:
        return {"incident_id": incident, "event": kind, "started_at": format_rfc3339(T0 + MIN),
                "resolved_at": format_rfc3339(T0 + at_min * MIN) if kind == "resolved" else None,
                "at": format_rfc3339(T0 + at_min * MIN), "files": files}

    events = [event("b", "opened", 2, 5), event("a", "opened", 1, 5), event("a", "resolved", 30, 9),
              event("a", "updated", 30, 9), event("a", "updated", 10, 7), event("b", "updated", 4, 6)]
    latest = latest_incidents(events)
    assert [(e["incident_id"], e["event"], e["files"]) for e in latest] == [("a", "resolved", 9), ("b", "updated", 6)]
    stages = [{"stages": [{"stage": s} for s in order]} for order in (["detect", "upload", "done"],
                                                                      ["detect", "register", "done"],
                                                                      ["detect", "upload", "register", "done"])]
    # Two files each skipped an optional stage; the third says which comes first, wherever it is read.
    assert stage_order(stages) == stage_order(stages[::-1]) == ["detect", "upload", "register", "done"]


@pytest.mark.unit
def test_empty_tables_give_honest_empty_states() -> None:
    html = render_report(MemoryTables(), since_us=None, until_us=None)
    for text in ("0 files, 0 anomalies", "No stage waits in this span", "No incidents in this span.",
                 "No files in this span.", "No complete files in this span.", "No lot judged yet",
                 "No rejected input lines."):
        assert text in html, text
    assert "<svg" not in html


def _chromium() -> Any:
    """Headless Chromium driven by selenium, with Debian's binaries; never anything downloaded."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"the browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} missing): "
                    "apt-get install -y chromium chromium-driver", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    # A path to the binary and the driver: selenium-manager then has nothing to look up or download.
    options.binary_location = CHROMIUM
    # Without the background-networking flags Chromium's own connections are refused on a closed network
    # (and logged); a fresh profile per run keeps runs independent.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--force-device-scale-factor=1", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.mark.cli
def test_the_report_renders_in_headless_chromium(report_file: Path, tmp_path: Path) -> None:
    from PIL import Image
    from selenium.webdriver.common.by import By

    driver = _chromium()
    try:
        driver.set_window_size(1280, 900)
        driver.get(report_file.resolve().as_uri())
        assert driver.title.startswith("stagewatch report · 2026-06-06 12:00")
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        assert headings == ["Latency by stage", "Incidents", "Tenants", "End-to-end latency", "Lots", "Input"]
        charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(charts) == 2
        for chart in charts:
            assert chart.size["width"] > 600 and chart.size["height"] > 150, chart.size
        height = driver.execute_script("return document.documentElement.scrollHeight")
        # The whole page in one screenshot: the window's height is the viewport's plus the browser's frame.
        driver.set_window_size(1280, height)
        driver.set_window_size(1280, 2 * height - driver.execute_script("return window.innerHeight"))
        boxes = [(c.location["x"], c.location["y"], c.size["width"], c.size["height"]) for c in charts]
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()
    image = Image.open(shot).convert("RGB")
    assert image.height >= height
    # Not blank, and the charts drew: each chart's area holds the p95 line's orange and the band's blue.
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 200
    for x, y, w, h in boxes:
        area = image.crop((int(x), int(y), int(x + w), int(y + h)))
        colours = {c for _, c in area.getcolors(maxcolors=1 << 20) or []}
        assert len(colours) > 50
        assert any(abs(r - 0x1F) < 24 and abs(g - 0x77) < 24 and abs(b - 0xB4) < 24 for r, g, b in colours)
    stages_chart = image.crop(tuple(int(v) for v in (boxes[0][0], boxes[0][1], boxes[0][0] + boxes[0][2],
                                                     boxes[0][1] + boxes[0][3])))
    assert any(abs(r - 0xFF) < 16 and abs(g - 0x7F) < 24 and abs(b - 0x0E) < 24
               for _, (r, g, b) in stages_chart.getcolors(maxcolors=1 << 20) or [])


@pytest.mark.cli
@pytest.mark.parametrize("width", [900, 1400])
def test_the_report_reads_at_900_and_1400_pixels(report_file: Path, width: int) -> None:
    """Nothing wider than the window: the page does not scroll sideways, the headline and the incidents table
    are whole (at 900 px the incidents table had been cut off), ids are not broken inside a word."""
    driver = _chromium()
    try:
        driver.set_window_size(width, 1000)
        driver.get(report_file.resolve().as_uri())
        inner = driver.execute_script("return window.innerWidth")
        assert driver.execute_script("return document.documentElement.scrollWidth") <= inner
        cut = driver.execute_script(
            "const box = document.querySelector('#incidents .scroll');"
            "return [box.scrollWidth, box.clientWidth];")
        assert cut[0] <= cut[1], f"the incidents table is cut off at {width} px: {cut}"
        lines = driver.execute_script(
            "return [...document.querySelectorAll('.headline')].map(p => p.getBoundingClientRect().right);")
        assert lines and max(lines) <= inner
        # Where an id wraps, the line before ends with a dash: never inside a part of it or its timestamp.
        breaks = driver.execute_script(
            "return [...document.querySelectorAll('#incidents .id.mono')].map(e => {"
            "  const walk = document.createTreeWalker(e, NodeFilter.SHOW_TEXT), r = document.createRange();"
            "  let text = ''; const tops = [];"
            "  while (walk.nextNode()) { const n = walk.currentNode;"
            "    for (let i = 0; i < n.length; i++) { r.setStart(n, i); r.setEnd(n, i + 1);"
            "      tops.push(r.getBoundingClientRect().top); text += n.data[i]; } }"
            "  const out = []; for (let i = 1; i < tops.length; i++) if (tops[i] > tops[i - 1] + 2)"
            "    out.push(text.slice(0, i)); return out; });")
        assert breaks and all(line.endswith("-") for lines in breaks for line in lines), breaks
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


@pytest.mark.integration
def test_the_report_from_bigquery_is_the_report_from_the_folder(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``report --bigquery`` reads the job's dataset through the same ``Tables`` interface: the same rows (on
    the BigQuery emulator) make the same page."""
    import uuid

    from tests.emulators import PROJECT, bigquery_client
    from tests.simulated_run import load_run, write_run

    out = write_run(tmp_path)
    client = bigquery_client()
    dataset = f"{PROJECT}.stagewatch_report_{uuid.uuid4().hex[:8]}"
    span = ["--since", "2026-06-06T00:00:00Z", "--until", "2026-06-07T00:00:00Z"]
    try:
        load_run(client, dataset, out)
        assert main(["report", str(out), "-o", str(tmp_path / "local.html"), *span]) == 0
        assert main(["report", "--bigquery", dataset, "-o", str(tmp_path / "bq.html"), *span]) == 0
        # The same page but for where it says it read from.
        local = (tmp_path / "local.html").read_text().replace(f"from {out}<", "from SOURCE<")
        from_bigquery = (tmp_path / "bq.html").read_text().replace(f"from bigquery:{dataset}<", "from SOURCE<")
        assert "from SOURCE<" in local and from_bigquery == local
        assert capsys.readouterr().out.splitlines()[-1] == str((tmp_path / "bq.html").resolve())
        assert main(["report", "--bigquery", f"{PROJECT}.no_such_dataset", "-o", str(tmp_path / "x.html")]) == 2
        assert "BigQuery refused" in capsys.readouterr().err
        assert main(["report", str(out), "--bigquery", dataset, "-o", str(tmp_path / "x.html")]) == 2
        assert "either a local output folder" in capsys.readouterr().err
    finally:
        client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)
        client.close()
