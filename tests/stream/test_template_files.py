"""The flex template's files checked against the repository. The Dockerfile pins the Beam version that setup.py
pins. Everything it COPYs exists. Its FLEX_TEMPLATE_PYTHON_* paths are files that the image really contains. The
launcher (templates/stagewatch/main.py) submits without waiting and turns a bad option into exit status 2.

No Docker and no network: the Dockerfile is read as text, and the launcher runs against a fake pipeline module.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import posixpath
import re
import shlex
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "templates" / "stagewatch" / "Dockerfile"
SETUP_PY = REPO / "setup.py"
LAUNCHER = REPO / "templates" / "stagewatch" / "main.py"
BEAM_PIN = re.compile(r"apache-beam(\[[^\]]*\])?==([^\s\"',;]+)")


# --- reading the Dockerfile ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]  # relative to the build context (the repository root)
    dest: str  # absolute in the image
    into_dir: bool  # the sources land inside dest (dest ends with / or there are several sources)


@dataclass
class Dockerfile:
    env: dict[str, str] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with comments dropped and backslash continuations joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        word, _, rest = (buf + s).partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def parse_dockerfile(text: str) -> Dockerfile:
    df = Dockerfile()
    variables: dict[str, str] = {}
    workdir = "/"

    def subst(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), s)

    for word, rest in _instructions(text):
        if word == "ARG":
            name, _, default = rest.partition("=")
            variables[name.strip()] = subst(default.strip().strip("\"'"))
        elif word == "ENV":
            if "=" in rest.split()[0]:
                pairs = [item.split("=", 1) for item in shlex.split(subst(rest))]
            else:
                pairs = [rest.split(None, 1)]
                pairs[0][1] = subst(pairs[0][1].strip().strip("\"'"))
            for key, value in pairs:
                df.env[key] = variables[key] = value
        elif word == "WORKDIR":
            workdir = posixpath.join(workdir, subst(rest))
        elif word in ("COPY", "ADD"):
            args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            args = [subst(a) for a in args if not a.startswith("--")]
            *sources, dest = args
            dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
            into_dir = dest.endswith("/") or dest in (".", "..") or len(sources) > 1
            df.copies.append(Copy(tuple(sources), dest_abs, into_dir))
        elif word == "RUN":
            df.runs.append(subst(rest))
    return df


def image_file(df: Dockerfile, path: str) -> Path | None:
    """The repository file that the image holds at ``path`` (the last COPY that puts one there wins)."""
    for copy in reversed(df.copies):
        for src in copy.sources:
            local = REPO / src
            if local.is_dir():  # a folder's contents land in dest
                if path.startswith(copy.dest.rstrip("/") + "/"):
                    candidate = local / path[len(copy.dest.rstrip("/")) + 1 :]
                    if candidate.is_file():
                        return candidate
            elif path == (posixpath.join(copy.dest, posixpath.basename(src)) if copy.into_dir else copy.dest):
                return local
    return None


# --- reading setup.py ------------------------------------------------------------------------------------------


def setup_requirements() -> list[str]:
    """setup(install_requires=[...]) with module-level string constants filled into f-strings."""
    tree = ast.parse(SETUP_PY.read_text(encoding="utf-8"))
    consts = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def text(node: ast.expr) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(text(v) for v in node.values)
        if isinstance(node, ast.FormattedValue) and isinstance(node.value, ast.Name) and node.value.id in consts:
            return consts[node.value.id]
        raise AssertionError(f"setup.py: cannot read {ast.unparse(node)!r} in install_requires")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setup":
            for kw in node.keywords:
                if kw.arg == "install_requires" and isinstance(kw.value, ast.List):
                    return [text(e) for e in kw.value.elts]
    raise AssertionError("setup.py: no setup(install_requires=[...])")


def setup_beam_pin() -> tuple[str, str]:
    pins = [BEAM_PIN.fullmatch(r.replace(" ", "")) for r in setup_requirements() if r.startswith("apache-beam")]
    assert len(pins) == 1 and pins[0] is not None, f"setup.py must pin apache-beam exactly once with ==: {pins}"
    return pins[0][1] or "", pins[0][2]


def setup_reads() -> list[str]:
    """Files setup.py opens by a relative path (they must sit next to setup.py wherever it is built)."""
    return re.findall(r"open\(\s*[\"']([^\"'/][^\"']*)[\"']", SETUP_PY.read_text(encoding="utf-8"))


# --- the checks (functions, so that a test below can show that each one catches a broken Dockerfile) ------------


def check_beam_pin(df: Dockerfile, pin: tuple[str, str]) -> None:
    found = [f"apache-beam{extras}=={version}" for run in df.runs for extras, version in BEAM_PIN.findall(run)]
    assert found, "the Dockerfile installs no apache-beam[...]==VERSION"
    want = f"apache-beam{pin[0]}=={pin[1]}"
    assert set(found) == {want}, f"the Dockerfile pins {found}, setup.py {want}"


def check_copies_exist(df: Dockerfile) -> None:
    assert df.copies, "the Dockerfile COPYs nothing"
    for copy in df.copies:
        for src in copy.sources:
            assert not src.startswith("/") and ".." not in Path(src).parts, f"COPY {src}: outside the build context"
            assert (REPO / src).exists(), f"COPY {src}: no such file in the repository (the build context)"


def check_flex_env(df: Dockerfile) -> None:
    expected = {"FLEX_TEMPLATE_PYTHON_PY_FILE": LAUNCHER, "FLEX_TEMPLATE_PYTHON_SETUP_FILE": SETUP_PY}
    for name, repo_file in expected.items():
        assert name in df.env, f"the Dockerfile does not set {name}"
        held = image_file(df, df.env[name])
        assert held == repo_file, f"{name}={df.env[name]} is {held} in the image, not {repo_file.relative_to(REPO)}"
    setup_dir = posixpath.dirname(df.env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"])
    for name in setup_reads():  # Beam builds the workers' sdist in setup.py's folder
        assert image_file(df, posixpath.join(setup_dir, name)) == REPO / name, f"setup.py reads {name}: COPY it"


def check_package_layout(df: Dockerfile) -> None:
    """setup.py finds the package by relative paths (package_dir), so the image must keep the repository's
    layout around it: every module of pipelines/stagewatch at the same place relative to setup.py."""
    setup_dir = posixpath.dirname(df.env.get("FLEX_TEMPLATE_PYTHON_SETUP_FILE", "/"))
    for module in sorted((REPO / "pipelines" / "stagewatch").rglob("*.py")):
        rel = module.relative_to(REPO).as_posix()
        assert image_file(df, posixpath.join(setup_dir, rel)) == module, f"{rel} is not next to setup.py in the image"


# --- the tests -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def test_dockerfile_pins_the_beam_version_of_setup_py(dockerfile: Dockerfile) -> None:
    extras, version = setup_beam_pin()
    assert extras == "[gcp]" and re.fullmatch(r"\d+\.\d+\.\d+", version)
    check_beam_pin(dockerfile, (extras, version))


def test_dockerfile_copies_only_files_that_exist(dockerfile: Dockerfile) -> None:
    check_copies_exist(dockerfile)


def test_flex_template_env_points_at_the_launcher_and_setup_py_in_the_image(dockerfile: Dockerfile) -> None:
    check_flex_env(dockerfile)
    check_package_layout(dockerfile)


@pytest.mark.parametrize(
    ("pattern", "replacement", "says"),
    [
        pytest.param(r"BEAM_VERSION=2\.", "BEAM_VERSION=1.", "the Dockerfile pins", id="other-beam"),
        pytest.param(r"apache-beam\[gcp\]==\S+", "apache-beam[gcp]", "installs no apache-beam", id="unpinned-beam"),
        pytest.param(r"COPY pipelines/", "COPY pipeline/", "no such file", id="missing-source"),
        pytest.param(r" README\.md \./", " ./", "setup.py reads README.md", id="no-readme"),
        pytest.param(r"PY_FILE=/template/templates/stagewatch/", "PY_FILE=/template/", "PY_FILE", id="wrong-py-file"),
        pytest.param(r"ENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=.*", "", "does not set FLEX_TEMPLATE_PYTHON_SETUP",
                     id="no-setup-file"),
        pytest.param(r"COPY pipelines/ pipelines/", "COPY pipelines/stagewatch/ pipelines/", "not next to setup.py",
                     id="moved-package"),
    ],
)
def test_the_checks_catch_a_broken_dockerfile(pattern: str, replacement: str, says: str) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    broken = re.sub(pattern, replacement, text)
    assert broken != text, f"{pattern!r} no longer matches the Dockerfile: update this test"
    df = parse_dockerfile(broken)
    failures = []
    checks = (
        lambda: check_beam_pin(df, setup_beam_pin()),
        lambda: check_copies_exist(df),
        lambda: check_flex_env(df),
        lambda: check_package_layout(df),
    )
    for check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    assert any(says in f for f in failures), failures


def _launch(monkeypatch: pytest.MonkeyPatch, argv: list[str], fake_run: Any) -> Any:
    """Run main.py as Dataflow's launcher does (as __main__, flags in sys.argv) against a fake
    ``stagewatch.stream.pipeline``; returns the exit status."""
    fake = types.ModuleType("stagewatch.stream.pipeline")
    fake.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stagewatch.stream.pipeline", fake)
    monkeypatch.setattr(sys, "argv", [str(LAUNCHER), *argv])
    spec = importlib.util.spec_from_file_location("__main__", LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(SystemExit) as exited:
        spec.loader.exec_module(module)
    return exited.value.code


def test_launcher_submits_without_waiting(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Any, bool]] = []

    def fake_run(argv: list[str] | None = None, wait: bool = True) -> None:
        calls.append((argv, wait))

    argv = ["--input_subscription=projects/my-proj/subscriptions/logs", "--stages=a,b?,c", "--runner=DataflowRunner"]
    assert _launch(monkeypatch, argv, fake_run) == 0
    assert calls == [(argv, False)]
    assert capsys.readouterr() == ("", "")
    # Without a --runner (the launcher does not have to pass one), the job is still built for Dataflow.
    calls.clear()
    assert _launch(monkeypatch, argv[:2], fake_run) == 0
    assert calls == [([*argv[:2], "--runner=DataflowRunner"], False)]


def test_launcher_reports_a_bad_option_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_run(argv: list[str] | None = None, wait: bool = True) -> None:
        raise ValueError("bad")

    assert _launch(monkeypatch, ["--stages="], fake_run) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "stagewatch: error: bad\n"


def test_launcher_does_not_hide_other_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: list[str] | None = None, wait: bool = True) -> None:
        raise RuntimeError("staging failed")

    with pytest.raises(RuntimeError, match="staging failed"):
        _launch(monkeypatch, [], fake_run)


def _setup_requirements() -> dict[str, list[str]]:
    """setup.py's requirements, read from its source: ``install`` and each extra (names only)."""
    tree = ast.parse(SETUP_PY.read_text(encoding="utf-8"))
    lists = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.List)}

    def names(value: ast.expr) -> list[str]:
        if isinstance(value, ast.Name):
            value = lists[value.id]
        out: list[str] = []
        for item in value.elts if isinstance(value, ast.List) else []:
            if isinstance(item, ast.Starred) and isinstance(item.value, ast.Name):
                out += names(lists[item.value.id])
            elif isinstance(item, ast.Constant | ast.JoinedStr):
                text = item.value if isinstance(item, ast.Constant) else ast.unparse(item)
                out.append(re.split(r"[\[<>=!~ ;]", str(text).strip("f'\""), maxsplit=1)[0])
        return out

    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: k.value for k in call.keywords}
    found = {"install": names(kw["install_requires"])}
    extras = kw["extras_require"]
    assert isinstance(extras, ast.Dict)
    for key, value in zip(extras.keys, extras.values, strict=True):
        assert isinstance(key, ast.Constant)
        found[str(key.value)] = names(value)
    return found


def test_the_workers_install_only_what_the_job_runs(dockerfile: Dockerfile) -> None:
    """A Dataflow worker installs the package without extras: no matplotlib (the report's) or selenium (the
    tests'). The image installs it the same way."""
    requirements = _setup_requirements()
    assert {"apache-beam", "orjson", "msgspec", "numpy"} <= set(requirements["install"])
    assert not {"matplotlib", "selenium", "pytest"} & set(requirements["install"])
    assert "matplotlib" in requirements["report"] and {"matplotlib", "selenium"} <= set(requirements["test"])
    installs = [r for r in dockerfile.runs if re.search(r"pip install .*\s\.(\s|$)", r)]
    assert installs and all("[" not in r.split("pip install", 1)[1] for r in installs)
