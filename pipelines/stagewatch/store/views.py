"""The views and parameterised queries of ``templates/bigquery/``: reading them, creating the views, running a query.

Each ``templates/bigquery/NAME.sql`` is one question, in BigQuery Standard SQL over the tables of
``stagewatch.store.schemas``, with the dataset written as ``${dataset}`` (``envsubst`` and the bq tool can
fill it in; so does this module). Its leading comment block documents it and is read here::

    -- What it answers, in a sentence or a paragraph.
    --
    -- Partitions read: which partitions of which tables, and why.
    --
    -- param @day DATE: the day to look at (UTC)
    -- param @weeks INT64 = 4: how many earlier weeks to compare it with
    -- view stage_latency_today: day = CURRENT_DATE(); weeks = 4

A ``view`` line makes a view of the query: BigQuery views take no parameters, so the view is the query with
each parameter replaced by the SQL expression given (``CURRENT_DATE()`` for "today").

What is sent to BigQuery is the query without that comment block: the BigQuery emulator (bqemulator 1.4.0)
binds ``@name`` wherever it appears in the text, comments included, and a parameter named in a comment then
counts as one more parameter than was given. The comment changes nothing for BigQuery itself.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewatch.store.bigquery import create_tables
from stagewatch.store.schemas import TABLES

__all__ = [
    "PLACEHOLDER",
    "Param",
    "Query",
    "View",
    "create_all",
    "create_views",
    "load_queries",
    "query_parameters",
    "run_query",
    "sql_dir",
]

#: How the SQL files name the dataset: ``${dataset}`` (shell / envsubst syntax, so the files run with ``bq``).
PLACEHOLDER = "${dataset}"
#: Where ``setup.py`` puts ``templates/bigquery`` inside an installed package (see its ``build_py``).
PACKAGED_DIR = Path(__file__).resolve().parent / "bigquery_sql"
#: ``templates/bigquery`` of the repository this module is in (a checkout, an editable install, the image).
REPO_DIR = Path(__file__).resolve().parents[3] / "templates" / "bigquery"

_TYPES: dict[str, Any] = {
    "DATE": dt.date.fromisoformat,
    "INT64": int,
    "FLOAT64": float,
    "STRING": str,
}
_PARAM_LINE = re.compile(r"^param @(\w+) (\w+)(?: = ([^:]+?))?: (.+)$")
_VIEW_LINE = re.compile(r"^view (\w+): (.+)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_USED_PARAM = re.compile(r"@(\w+)")
_TABLE_REF = re.compile(r"`\$\{dataset\}\.(\w+)`")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # a BigQuery query-parameter type: DATE, INT64, FLOAT64, STRING
    default: str | None  # as typed on the command line
    help: str


@dataclass(frozen=True)
class View:
    name: str
    bindings: dict[str, str]  # parameter -> the SQL expression that stands for it in the view


@dataclass(frozen=True)
class Query:
    name: str
    path: Path
    summary: str  # what it answers
    reads: str  # the partitions it reads
    params: tuple[Param, ...]
    views: tuple[View, ...]
    text: str  # the whole file
    body: str  # the file without its leading comment block
    tables: tuple[str, ...]  # the stagewatch tables it reads

    def sql(self, dataset: str) -> str:
        """The file as it is, for the dataset: what to paste into the console or give ``bq query``."""
        return self.text.replace(PLACEHOLDER, dataset)

    def runnable(self, dataset: str) -> str:
        """What is sent to BigQuery: the body for the dataset (see the module's docstring for why)."""
        return self.body.replace(PLACEHOLDER, dataset)

    def view_sql(self, view: View, dataset: str) -> str:
        """The body with each parameter replaced by the view's expression for it."""
        bound = _USED_PARAM.sub(lambda m: f"({view.bindings[m.group(1)]})", self.body.replace(PLACEHOLDER, dataset))
        said = "; ".join(f"{k} = {v}" for k, v in view.bindings.items())
        # No "@" in this comment: a view's text is parsed again in every query that reads it.
        return f"-- {view.name}: {self.name} ({self.path.name}) with {said}\n{bound}"


def sql_dir() -> Path:
    """Where the SQL files are: inside the installed package, else the repository's ``templates/bigquery``."""
    for folder in (PACKAGED_DIR, REPO_DIR):
        if folder.is_dir() and any(folder.glob("*.sql")):
            return folder
    raise ValueError(f"the BigQuery SQL files are not in {PACKAGED_DIR} nor in {REPO_DIR}: reinstall stagewatch "
                     "(pip install .) from a checkout that has templates/bigquery/")


def _parse(path: Path) -> Query:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    n_header = next((i for i, line in enumerate(lines) if not line.startswith("--")), len(lines))
    header = [line[2:].strip() for line in lines[:n_header]]
    body = "\n".join(lines[n_header:]).strip() + "\n"
    name = path.stem

    def bad(why: str) -> ValueError:
        return ValueError(f"{path}: {why}")

    if not _NAME.match(name):
        raise bad("a query's file name must be lower_case_with_underscores.sql")
    paragraphs: list[list[str]] = [[]]
    for line in header:
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    summary = " ".join(paragraphs[0])
    reads = next((" ".join(p) for p in paragraphs if p and p[0].startswith("Partitions read:")), "")
    if not summary or summary.startswith(("Partitions read:", "param ", "view ")):
        raise bad("the comment block must open with what the query answers")
    if not reads:
        raise bad("the comment block must say which partitions it reads ('-- Partitions read: ...')")
    params: list[Param] = []
    views: list[View] = []
    for line in header:
        if line.startswith("param "):
            m = _PARAM_LINE.match(line)
            if not m or m.group(2) not in _TYPES:
                raise bad(f"cannot read {line!r}: '-- param @name TYPE[ = default]: help', TYPE one of "
                          f"{', '.join(_TYPES)}")
            params.append(Param(m.group(1), m.group(2), m.group(3), m.group(4)))
        elif line.startswith("view "):
            m = _VIEW_LINE.match(line)
            if not m:
                raise bad(f"cannot read {line!r}: '-- view NAME: param = SQL; param = SQL'")
            bindings = dict(part.split(" = ", 1) for part in (p.strip() for p in m.group(2).split(";")) if part)
            views.append(View(m.group(1), {k.strip(): v.strip() for k, v in bindings.items()}))
    declared = {p.name for p in params}
    used = set(_USED_PARAM.findall(body))
    if used != declared:
        raise bad(f"parameters used {sorted(used)} but declared {sorted(declared)}")
    for view in views:
        if set(view.bindings) != declared:
            raise bad(f"view {view.name} binds {sorted(view.bindings)}, the query takes {sorted(declared)}")
    tables = tuple(dict.fromkeys(_TABLE_REF.findall(body)))
    unknown = [t for t in tables if t not in TABLES]
    if not tables or unknown:
        raise bad("reads no stagewatch table (`${dataset}.TABLE`)" if not tables else f"unknown tables {unknown}")
    return Query(name, path, summary, reads, tuple(params), tuple(views), text, body, tables)


def load_queries(folder: Path | None = None) -> dict[str, Query]:
    """Every ``*.sql`` of ``folder`` (default: ``sql_dir()``), by name; ``ValueError`` for a malformed file."""
    queries = {q.name: q for q in map(_parse, sorted((folder or sql_dir()).glob("*.sql")))}
    views = [v.name for q in queries.values() for v in q.views]
    clashes = sorted({v for v in views if views.count(v) > 1 or v in queries or v in TABLES})
    if clashes:
        raise ValueError(f"view names used twice or shadowing a query or table: {clashes}")
    return queries


def query_parameters(query: Query, values: dict[str, str]) -> list[Any]:
    """The ``ScalarQueryParameter``s of ``query`` from ``name -> text`` (defaults filled in), checked."""
    from google.cloud import bigquery

    unknown = sorted(set(values) - {p.name for p in query.params})
    if unknown:
        takes = ", ".join(f"{p.name} ({p.type})" for p in query.params) or "no parameters"
        raise ValueError(f"{query.name} has no parameter {', '.join(unknown)}; it takes {takes}")
    out = []
    for p in query.params:
        text = values.get(p.name, p.default)
        if text is None:
            raise ValueError(f"{query.name} needs --param {p.name}=... ({p.type}: {p.help})")
        try:
            value = _TYPES[p.type](text)
        except ValueError:
            raise ValueError(f"--param {p.name}={text}: not a {p.type} ({p.help})") from None
        out.append(bigquery.ScalarQueryParameter(p.name, p.type, value))
    return out


def run_query(client: Any, dataset: str, query: Query, values: dict[str, str]) -> list[dict[str, Any]]:
    """Run ``query`` on ``dataset`` with the parameters ``values`` (``name -> text``); its rows as dicts."""
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(query_parameters=query_parameters(query, values))
    return [dict(row.items()) for row in client.query(query.runnable(dataset), job_config=config).result()]


def _string_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def create_views(client: Any, dataset: str, queries: dict[str, Query] | None = None) -> list[str]:
    """Create or replace every view of ``queries`` (default: all) in ``dataset``; returns their names.

    ``CREATE OR REPLACE VIEW`` rather than the tables API: it replaces a view in one statement, and the
    emulator can replace only views that DDL made."""
    made = []
    for query in (queries or load_queries()).values():
        for view in query.views:
            said = "; ".join(f"{k} = {v}" for k, v in view.bindings.items())
            description = _string_literal(f"stagewatch {query.name} with {said}: {query.summary}")
            ddl = (f"CREATE OR REPLACE VIEW `{dataset}.{view.name}`\nOPTIONS (description = {description})\nAS\n"
                   f"{query.view_sql(view, dataset)}")
            client.query(ddl).result()
            made.append(view.name)
    return made


def create_all(client: Any, dataset: str) -> tuple[list[str], list[str]]:
    """The dataset, its missing tables, and every view: (tables created, views created or replaced)."""
    queries = load_queries()  # a malformed file stops it before anything is created
    return create_tables(client, dataset), create_views(client, dataset, queries)
