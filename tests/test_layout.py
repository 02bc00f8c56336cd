"""The package's shape, checked: modules small, no import cycle, packages depend only downwards, Beam only in the
streaming driver, the core pure. Read from the source (every import statement, lazy ones included), and two
imports run in a fresh interpreter to see what they really pull in."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "pipelines" / "stagewatch"
MAX_LINES = 400

# Which of stagewatch's packages each may import (itself always): the data flow, parse → core → drivers → sinks →
# investigation, with the command line on top.
ALLOWED = {
    "core": set(),
    "logfiles": {"core"},  # its time parser: which way an export's entries run
    "secrets": {"core"},
    "backtest": {"core", "logfiles"},
    "store": {"core"},
    "stream": {"core", "logfiles", "store", "secrets"},
    "notify": {"core", "secrets"},
    "investigate": {"core", "store"},
    "evaluation": {"core", "backtest", "logfiles"},
    "cli": {"core", "logfiles", "backtest", "store", "stream", "notify", "investigate", "evaluation", "secrets"},
}
# Standard-library modules that do I/O or touch the process: none of them in the core.
IO_MODULES = {"os", "sys", "io", "subprocess", "socket", "pathlib", "glob", "gzip", "urllib", "tempfile", "shutil",
              "http", "threading", "multiprocessing", "pickle"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level) for every import in the file; ``if TYPE_CHECKING:`` blocks left out
    (they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, top
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base
                                                                                                         else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    yield (full if full in MODULES else base), top
            else:
                inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                yield from visit(child, inner)

    yield from visit(tree, True)


IMPORTS = {name: list(_imports(name, path)) for name, path in MODULES.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_is_over_400_lines() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_no_import_cycle() -> None:
    """Lazy imports included: a cycle broken only by importing inside a function is still two modules that
    need each other."""
    graph = {m: {i for i, _ in imports if i in MODULES and i != m} for m, imports in IMPORTS.items()}
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_packages_depend_only_on_the_packages_below_them() -> None:
    wrong = []
    for module, imports in IMPORTS.items():
        here = _package(module)
        if here not in ALLOWED:
            continue  # stagewatch/__init__ and __main__
        for imported, _ in imports:
            if imported.startswith("stagewatch.") and imported != "stagewatch":
                there = _package(imported)
                if there != here and there not in ALLOWED[here]:
                    wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_beam_only_in_the_streaming_driver() -> None:
    """apache_beam under stagewatch.stream (but not its Beam-free parameter table or package docstring), and lazily
    in the evaluation's Beam peers; nowhere else."""
    found = {(m, top) for m, imports in IMPORTS.items() for i, top in imports if i.split(".")[0] == "apache_beam"}
    outside = sorted(m for m, top in found
                     if not (m.startswith("stagewatch.stream.") and m != "stagewatch.stream.parameters")
                     and not (m == "stagewatch.evaluation.peers" and not top))
    assert outside == []


def test_the_core_is_pure() -> None:
    """No Beam, no Google client, no matplotlib, nothing of stagewatch outside the core, no I/O module."""
    wrong = []
    for module, imports in IMPORTS.items():
        if _package(module) != "core":
            continue
        for imported, _ in imports:
            top = imported.split(".")[0]
            if top in {"apache_beam", "google", "matplotlib"} | IO_MODULES or (
                    top == "stagewatch" and _package(imported) != "core"):
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_matplotlib_only_in_the_report() -> None:
    users = sorted({m for m, imports in IMPORTS.items() for i, _ in imports if i.split(".")[0] == "matplotlib"})
    assert users == ["stagewatch.investigate.report_plots"]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # The child's stderr in the failure: a CalledProcessError alone says only "exit status 1".
    assert done.returncode == 0, done.stderr[-4000:]
    return set(done.stdout.split())


def test_the_job_imports_no_report_or_test_library() -> None:
    """What a Dataflow worker loads to run the job: no matplotlib, selenium or pytest."""
    loaded = _loaded_after("import stagewatch.stream.pipeline")
    assert "apache_beam" in loaded
    assert loaded & {"matplotlib", "selenium", "pytest"} == set()


def test_the_command_line_is_built_without_beam() -> None:
    """Building ``stagewatch``'s argument parser (every command's flags, run's included) imports no Beam: a
    replay does not pay for it."""
    loaded = _loaded_after("from stagewatch.cli import build_parser; build_parser()")
    assert "apache_beam" not in loaded and "matplotlib" not in loaded
