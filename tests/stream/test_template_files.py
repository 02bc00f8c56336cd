"""The flex template's files checked against the repository. One image serves as the launcher and as the workers'
SDK container: it starts FROM Beam's SDK image of the Beam version that setup.py pins, takes Google's launcher
binary, installs the lock file (templates/stagewatch/requirements.txt) and the package without letting pip resolve
anything, and stages nothing for the workers. The lock pins every setup.py requirement once, inside its range, with
the dependencies of each locked package (as far as this environment can read them). Everything the Dockerfile COPYs
exists, and its FLEX_TEMPLATE_PYTHON_PY_FILE is the launcher in the image. The launcher
(templates/stagewatch/main.py) names that image as the workers' container, submits without waiting, turns a bad
option into exit status 2, and with the template's parameters builds the whole Dataflow job offline (dry run).

No Docker and no network: the Dockerfile and the lock are read as text, the launcher runs against a fake pipeline
module or in Beam's dry-run mode.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import importlib.util
import json
import posixpath
import re
import shlex
import sys
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "templates" / "stagewatch" / "Dockerfile"
LOCK = REPO / "templates" / "stagewatch" / "requirements.txt"
SETUP_PY = REPO / "setup.py"
LAUNCHER = REPO / "templates" / "stagewatch" / "main.py"
BEAM_PIN = re.compile(r"apache-beam(\[[^\]]*\])?==([^\s\"',;]+)")
BEAM_SDK_IMAGE = re.compile(r"apache/beam_python(\d+\.\d+)_sdk:(\S+)")
LAUNCHER_BASE = re.compile(r"gcr\.io/dataflow-templates-base/python(\d)(\d+)-template-launcher-base[:@]\S+")
# Where Dataflow looks for the launcher binary on the launcher VM, and Beam's SDK boot, which a custom SDK container
# must run as its entrypoint (Google's docs: "Configure Flex Templates", "Build custom container images").
LAUNCHER_BINARY = "/opt/google/dataflow/python_template_launcher"
BOOT = "/opt/apache/beam/boot"
# Launcher variables that make Beam stage files for every worker to pip-install when it starts.
STAGING_ENV = ("FLEX_TEMPLATE_PYTHON_SETUP_FILE", "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE",
               "FLEX_TEMPLATE_PYTHON_EXTRA_PACKAGES")
# The image's Python and platform (Beam's SDK image for Python 3.11, linux/amd64), for environment markers.
IMAGE_PLATFORM = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
                  "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython"}


# --- reading the Dockerfile ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]  # relative to the build context (the repository root), or to from_stage's root
    dest: str  # absolute in the image
    into_dir: bool  # the sources land inside dest (dest ends with / or there are several sources)
    from_stage: str | None = None  # COPY --from=: another stage or image, not the build context


@dataclass(frozen=True)
class Run:
    command: str
    workdir: str


@dataclass
class Dockerfile:
    """The image, i.e. the last stage, and the FROM lines of every stage."""

    froms: list[tuple[str, str | None]] = field(default_factory=list)  # (image, alias), in order
    env: dict[str, str] = field(default_factory=dict)
    copies: list[Copy] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    entrypoint: list[str] | None = None
    build_args: dict[str, str] = field(default_factory=dict)  # ARG -> the ENV names set from it

    @property
    def base(self) -> str:
        return self.froms[-1][0] if self.froms else ""


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
    """As Docker reads it: ARGs before the first FROM are seen only by FROM lines, until a stage declares them
    again; each FROM starts a new stage, and the image is the last one."""
    df = Dockerfile()
    global_args: dict[str, str] = {}
    variables: dict[str, str] = {}
    declared: set[str] = set()  # the ARGs of the current stage
    workdir = "/"

    def subst(s: str, names: dict[str, str]) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: names.get(m[1] or m[2], m[0]), s)

    for word, rest in _instructions(text):
        if word == "FROM":
            parts = subst(rest, global_args).split()
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            df.froms.append((parts[0], alias))
            df.env, df.copies, df.runs, df.entrypoint, df.build_args = {}, [], [], None, {}
            variables, declared, workdir = {}, set(), "/"
        elif word == "ARG":
            name, eq, default = rest.partition("=")
            name = name.strip()
            if not df.froms:
                global_args[name] = subst(default.strip().strip("\"'"), global_args)
            else:
                variables[name] = subst(default.strip().strip("\"'"), variables) if eq else global_args.get(name, "")
                declared.add(name)
        elif word == "ENV":
            if "=" in rest.split()[0]:
                pairs = [item.split("=", 1) for item in shlex.split(rest)]
            else:
                pairs = [rest.split(None, 1)]
                pairs[0][1] = pairs[0][1].strip().strip("\"'")
            for key, raw in pairs:
                for ref in re.findall(r"\$\{(\w+)\}|\$(\w+)", raw):
                    if (ref[0] or ref[1]) in declared:
                        df.build_args.setdefault(ref[0] or ref[1], key)
                df.env[key] = variables[key] = subst(raw, variables)
        elif word == "WORKDIR":
            workdir = posixpath.join(workdir, subst(rest, variables))
        elif word in ("COPY", "ADD"):
            args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
            args = [subst(a, variables) for a in args if not a.startswith("--")]
            *sources, dest = args
            dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
            into_dir = dest.endswith("/") or dest in (".", "..") or len(sources) > 1
            df.copies.append(Copy(tuple(sources), dest_abs, into_dir, flags.get("from")))
        elif word == "RUN":
            df.runs.append(Run(subst(rest, variables), workdir))
        elif word == "ENTRYPOINT":
            df.entrypoint = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
    return df


def image_file(df: Dockerfile, path: str) -> Path | None:
    """The repository file that the image holds at ``path`` (the last COPY that puts one there wins)."""
    for copy in reversed(df.copies):
        if copy.from_stage is not None:
            continue
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


def pip_installs(df: Dockerfile) -> list[tuple[list[str], str]]:
    """Every ``pip install`` in the RUN lines: (its arguments, the folder it ran in)."""
    found = []
    for run in df.runs:
        lexer = shlex.shlex(run.command, posix=True, punctuation_chars=True)  # quotes kept whole, && ; || apart
        tokens = list(lexer)
        commands: list[list[str]] = [[]]
        for token in tokens:
            if token in ("&&", "||", ";", "|"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            for i in range(len(words) - 1):
                if posixpath.basename(words[i]) in ("pip", "pip3") and words[i + 1] == "install":
                    found.append((words[i + 2 :], run.workdir))
                elif words[i : i + 4] == ["python", "-m", "pip", "install"]:
                    found.append((words[i + 4 :], run.workdir))
    return found


# --- reading setup.py and the lock file ------------------------------------------------------------------------


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


def lock_pins(text: str) -> list[tuple[str, str]]:
    """(normalised name, version) of each line of the lock file, every one of which must be exactly NAME==VERSION:
    under ``pip install --no-deps`` a range would leave the version to the day of the build, an extra would install
    nothing, and a marker would skip the package on the image's own platform without a word."""
    pins: list[tuple[str, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        exact = len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version
        assert exact and not req.extras and not req.marker and not req.url, (
            f"lock line {n}: {line!r} is not NAME==VERSION")
        pins.append((canonicalize_name(req.name), specs[0].version))
    return pins


def _requires(name: str, version: str, extras: frozenset[str]) -> list[Requirement] | None:
    """What ``name`` at ``version`` with ``extras`` needs on the image's platform, read from this environment's
    installed metadata; None when this environment has another version installed (its metadata would not say)."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    env = {**{k: str(v) for k, v in default_environment().items()}, **IMAGE_PLATFORM}
    wanted = []
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
            wanted.append(req)
    return wanted


# --- the checks (functions, so that a test below can show that each one catches a broken file) -----------------


def check_beam_pin(df: Dockerfile, pin: tuple[str, str], lock: str) -> None:
    """The image's base is Beam's SDK image for setup.py's Beam version and Python 3.11, and the lock pins that
    Beam: the launcher builds the job with the Beam its workers run."""
    base = BEAM_SDK_IMAGE.fullmatch(df.base)
    assert base, f"the image starts FROM {df.base!r}, not Beam's SDK image apache/beam_pythonX.Y_sdk:VERSION"
    assert base[1] == "3.11", f"the image's Python is {base[1]}: the job and the lock are for 3.11"
    assert base[2] == pin[1], f"the Dockerfile's Beam is {base[2]}, setup.py pins {pin[1]}"
    beams = [v for name, v in lock_pins(lock) if name == "apache-beam"]
    assert beams == [pin[1]], f"the lock file pins apache-beam {beams}, setup.py {pin[1]}"


def check_lock(lock: str, requirements: list[str]) -> None:
    """One pin per package; each of setup.py's requirements pinned once, inside its range; and for each locked
    package whose metadata this environment has (the same version installed), what it requires is locked too, at a
    version it accepts: what ``pip check`` checks when the image is built, here without Docker."""
    pins = lock_pins(lock)
    twice = sorted(name for name, n in Counter(name for name, _ in pins).items() if n > 1)
    assert not twice, f"the lock file pins {twice} more than once"
    locked = dict(pins)
    todo = [Requirement(r) for r in requirements]
    for req in todo:
        name = canonicalize_name(req.name)
        assert name in locked, f"setup.py requires {req}: the lock file does not pin {name}"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"setup.py requires {req}: the lock file pins {name}=={locked[name]}")
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        for dep in _requires(key[0], locked[key[0]], key[1]) or []:
            dep_name = canonicalize_name(dep.name)
            assert dep_name in locked, (
                f"{key[0]}=={locked[key[0]]} requires {dep}: the lock file does not pin {dep_name}")
            assert dep.specifier.contains(locked[dep_name], prereleases=True), (
                f"{key[0]}=={locked[key[0]]} requires {dep}: the lock file pins {dep_name}=={locked[dep_name]}")
            todo.append(dep)


def check_installs(df: Dockerfile) -> None:
    """The image installs the lock file and then the package, both with --no-deps, and nothing else; pip check
    runs after the last install. Any other pip install would be a version that no test saw."""
    installs = pip_installs(df)
    assert installs, "the Dockerfile runs no pip install"
    lock_installed = package_installed = False
    for args, workdir in installs:
        assert "--no-deps" in args, f"pip install {' '.join(args)}: without --no-deps pip picks versions itself"
        targets = [a for a in args if not a.startswith("-")]
        files = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-r", "--requirement")]
        for f in files:
            assert image_file(df, posixpath.join(workdir, f)) == LOCK, f"pip install -r {f}: not the lock file"
            lock_installed = True
        for t in (t for t in targets if t not in files):
            assert t == ".", f"pip install {t}: only the lock file and the package (.) are installed"
            assert image_file(df, posixpath.join(workdir, "setup.py")) == SETUP_PY, f"{workdir} holds no setup.py"
            assert lock_installed, "the package is installed before the lock file"
            package_installed = True
            check_package_layout(df, workdir)
    assert lock_installed, f"the Dockerfile does not install {LOCK.relative_to(REPO)}"
    assert package_installed, "the Dockerfile does not install the package (pip install --no-deps .)"
    last = max(i for i, run in enumerate(df.runs) if "pip install" in run.command)
    assert any("pip check" in run.command.split("pip install")[-1] for run in df.runs[last:]), (
        "no pip check after the last pip install")


def check_copies_exist(df: Dockerfile) -> None:
    assert df.copies, "the Dockerfile COPYs nothing"
    stages = {alias for _, alias in df.froms[:-1] if alias}
    for copy in df.copies:
        if copy.from_stage is not None:
            assert copy.from_stage in stages, f"COPY --from={copy.from_stage}: no earlier stage of that name"
            continue
        for src in copy.sources:
            assert not src.startswith("/") and ".." not in Path(src).parts, f"COPY {src}: outside the build context"
            assert (REPO / src).exists(), f"COPY {src}: no such file in the repository (the build context)"


def check_flex_env(df: Dockerfile) -> None:
    """The launcher's variables point at files the image holds, and none makes Beam stage anything for the
    workers; the launcher binary is where Dataflow runs it; the entrypoint is Beam's SDK boot."""
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE" in df.env, "the Dockerfile does not set FLEX_TEMPLATE_PYTHON_PY_FILE"
    py_file = df.env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    held = image_file(df, py_file)
    assert held == LAUNCHER, f"FLEX_TEMPLATE_PYTHON_PY_FILE={py_file} is {held} in the image, not the launcher"
    staged = [name for name in STAGING_ENV if name in df.env]
    assert not staged, f"the Dockerfile sets {staged}: the workers would pip-install at every start"
    launcher_stages = {alias for image, alias in df.froms[:-1] if LAUNCHER_BASE.fullmatch(image)}
    binaries = [c for c in df.copies if c.from_stage in launcher_stages and c.sources == (LAUNCHER_BINARY,)]
    assert [c.dest for c in binaries] == [LAUNCHER_BINARY], (
        f"the launcher binary is not copied from Google's launcher base to {LAUNCHER_BINARY}: {binaries}")
    assert df.entrypoint == [BOOT], f"ENTRYPOINT {df.entrypoint}: the workers need Beam's SDK boot, {BOOT}"


def check_image_name(df: Dockerfile, env_name: str) -> None:
    """The variable that the launcher reads the workers' image from is set from a build argument (the image's
    name is known only when it is built)."""
    assert env_name in df.env, f"the Dockerfile does not set {env_name}, which main.py reads the workers' image from"
    assert env_name in df.build_args.values(), f"{env_name} is not set from a build argument"


def check_package_layout(df: Dockerfile, setup_dir: str) -> None:
    """setup.py finds the package by relative paths (package_dir), reads files next to it and copies the SQL into
    the package it builds, so the folder it is installed from keeps the repository's layout around it."""
    for name in setup_reads():
        assert image_file(df, posixpath.join(setup_dir, name)) == REPO / name, f"setup.py reads {name}: COPY it"
    wanted = [*(REPO / "pipelines" / "stagewatch").rglob("*.py"), *(REPO / "templates" / "bigquery").glob("*.sql")]
    for module in sorted(wanted):
        rel = module.relative_to(REPO).as_posix()
        assert image_file(df, posixpath.join(setup_dir, rel)) == module, f"{rel} is not next to setup.py in the image"


# --- the tests -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _image_env() -> str:
    """The variable main.py reads the workers' image from (its IMAGE_ENV), read from its source."""
    tree = ast.parse(LAUNCHER.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "IMAGE_ENV" for t in node.targets):
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            return node.value.value
    raise AssertionError("main.py has no IMAGE_ENV")


def test_the_image_is_beams_sdk_image_of_setup_pys_beam(dockerfile: Dockerfile) -> None:
    extras, version = setup_beam_pin()
    assert extras == "[gcp]" and re.fullmatch(r"\d+\.\d+\.\d+", version)
    check_beam_pin(dockerfile, (extras, version), LOCK.read_text(encoding="utf-8"))


def test_the_lock_file_pins_what_setup_py_names(dockerfile: Dockerfile) -> None:
    requirements = setup_requirements()
    check_lock(LOCK.read_text(encoding="utf-8"), requirements)
    # The closure was walked, not just the first level: Beam's own metadata, at the pinned version, is always here.
    beam = _requires("apache-beam", setup_beam_pin()[1], frozenset({"gcp"}))
    assert beam is not None and any(canonicalize_name(r.name) == "google-cloud-pubsub" for r in beam)


def test_the_image_installs_the_lock_file_and_the_package(dockerfile: Dockerfile) -> None:
    check_installs(dockerfile)


def test_dockerfile_copies_only_files_that_exist(dockerfile: Dockerfile) -> None:
    check_copies_exist(dockerfile)


def test_the_launcher_and_the_workers_run_the_same_image(dockerfile: Dockerfile) -> None:
    check_flex_env(dockerfile)
    check_image_name(dockerfile, _image_env())


@pytest.mark.parametrize(
    ("target", "pattern", "replacement", "says"),
    [
        pytest.param("Dockerfile", r"BEAM_VERSION=2\.", "BEAM_VERSION=1.", "setup.py pins", id="other-beam"),
        pytest.param("Dockerfile", r"beam_python3\.11_sdk", "beam_python3.12_sdk", "the image's Python is 3.12",
                     id="other-python"),
        pytest.param("Dockerfile", r"FROM apache/beam_python3\.11_sdk:\$\{BEAM_VERSION\}", "FROM python:3.11-slim",
                     "not Beam's SDK image", id="not-beams-image"),
        pytest.param("lock", r"apache-beam==\S+", "apache-beam==2.76.0", "the lock file pins apache-beam",
                     id="lock-other-beam"),
        pytest.param("lock", r"\nnumpy==\S+", "\nnumpy==1.25.2", "setup.py requires numpy>=1.26", id="lock-too-old"),
        pytest.param("lock", r"\norjson==\S+", "", "does not pin orjson", id="lock-missing-requirement"),
        pytest.param("lock", r"\nproto-plus==\S+", "", "does not pin proto-plus", id="lock-missing-dependency"),
        pytest.param("lock", r"\nprotobuf==\S+", "\nprotobuf==2.6.1", "lock file pins protobuf==2.6.1",
                     id="lock-dependency-out-of-range"),
        pytest.param("lock", r"\ntqdm==(\S+)", r"\ntqdm==\1\ntqdm==4.66.0", "more than once", id="lock-twice"),
        pytest.param("lock", r"\nscipy==\S+", "\nscipy>=1.11", "is not NAME==VERSION", id="lock-range"),
        pytest.param("Dockerfile", r"--no-deps -r", "-r", "without --no-deps", id="lock-with-deps"),
        pytest.param("Dockerfile", r"--no-deps \.", "--no-deps .[report]", "only the lock file and the package",
                     id="package-with-extras"),
        pytest.param("Dockerfile", r"(\nCOPY templates/stagewatch/main\.py)", r"\nRUN pip install --no-deps requests\1",
                     "only the lock file and the package", id="unpinned-install"),
        pytest.param("Dockerfile", r"-r templates/stagewatch/requirements\.txt", "-r requirements.txt",
                     "not the lock file", id="other-lock"),
        pytest.param("Dockerfile", r"\n +&& pip check \\", "", "no pip check", id="no-pip-check"),
        pytest.param("Dockerfile", r"COPY pipelines/", "COPY pipeline/", "no such file", id="missing-source"),
        pytest.param("Dockerfile", r" README\.md \./", " ./", "setup.py reads README.md", id="no-readme"),
        pytest.param("Dockerfile", r"COPY templates/bigquery/ templates/bigquery/", "", "templates/bigquery",
                     id="no-sql"),
        pytest.param("Dockerfile", r"COPY pipelines/ pipelines/", "COPY pipelines/stagewatch/ pipelines/",
                     "not next to setup.py", id="moved-package"),
        pytest.param("Dockerfile", r"PY_FILE=/template/templates/stagewatch/", "PY_FILE=/template/", "PY_FILE",
                     id="wrong-py-file"),
        pytest.param("Dockerfile", r"(\nENTRYPOINT)", r"\nENV FLEX_TEMPLATE_PYTHON_SETUP_FILE=/template/setup.py\1",
                     "FLEX_TEMPLATE_PYTHON_SETUP_FILE", id="setup-file-staged"),
        pytest.param("Dockerfile", r"(\nENTRYPOINT)", r"\nENV FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE=/r.txt\1",
                     "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE", id="requirements-staged"),
        pytest.param("Dockerfile", r"python_template_launcher /opt/google/dataflow/python_template_launcher",
                     "python_template_launcher /usr/local/bin/", "launcher binary", id="launcher-elsewhere"),
        pytest.param("Dockerfile", r'ENTRYPOINT \["/opt/apache/beam/boot"\]',
                     'ENTRYPOINT ["/opt/google/dataflow/python_template_launcher"]', "SDK boot", id="launcher-entry"),
        pytest.param("Dockerfile", r"ENV STAGEWATCH_SDK_CONTAINER_IMAGE=\$\{SDK_CONTAINER_IMAGE\}",
                     "ENV STAGEWATCH_SDK_CONTAINER_IMAGE=europe-docker.pkg.dev/p/r/i:1", "not set from a build",
                     id="image-name-fixed"),
        pytest.param("Dockerfile", r"COPY --from=launcher", "COPY --from=launchr", "no earlier stage",
                     id="unknown-stage"),
    ],
)
def test_the_checks_catch_a_broken_file(target: str, pattern: str, replacement: str, says: str) -> None:
    dockerfile_text, lock = DOCKERFILE.read_text(encoding="utf-8"), LOCK.read_text(encoding="utf-8")
    text = dockerfile_text if target == "Dockerfile" else lock
    broken = re.sub(pattern, replacement, text, count=1)
    assert broken != text, f"{pattern!r} no longer matches the {target}: update this test"
    if target == "Dockerfile":
        assert parse_dockerfile(broken) != parse_dockerfile(text), f"{pattern!r} changed only a comment"
        dockerfile_text = broken
    else:
        lock = broken
    df = parse_dockerfile(dockerfile_text)
    failures = []
    checks = (
        lambda: check_beam_pin(df, setup_beam_pin(), lock),
        lambda: check_lock(lock, setup_requirements()),
        lambda: check_installs(df),
        lambda: check_copies_exist(df),
        lambda: check_flex_env(df),
        lambda: check_image_name(df, _image_env()),
    )
    for check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    assert any(says in f for f in failures), failures


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


def test_the_workers_install_only_what_the_job_runs() -> None:
    """A worker runs the image, which holds the package without extras: no matplotlib (the report's) or selenium
    (the tests'), neither in install_requires nor in the lock file. (That the package itself is installed without
    extras, check_installs holds.)"""
    requirements = _setup_requirements()
    assert {"apache-beam", "orjson", "msgspec", "numpy"} <= set(requirements["install"])
    assert not {"matplotlib", "selenium", "pytest"} & set(requirements["install"])
    assert "matplotlib" in requirements["report"] and {"matplotlib", "selenium"} <= set(requirements["test"])
    locked = {name for name, _ in lock_pins(LOCK.read_text(encoding="utf-8"))}
    extras_only = ({canonicalize_name(n) for key, names in requirements.items() if key != "install" for n in names}
                   - {canonicalize_name(n) for n in requirements["install"]})
    assert not extras_only & locked


# --- the launcher ----------------------------------------------------------------------------------------------

IMAGE = "europe-west1-docker.pkg.dev/my-proj/stagewatch/stagewatch:0123abc"


def _launch(monkeypatch: pytest.MonkeyPatch, argv: list[str], fake_run: Any, image: str | None = IMAGE) -> Any:
    """Run main.py as Dataflow's launcher does (as __main__, flags in sys.argv, in an image built with
    ``--build-arg SDK_CONTAINER_IMAGE=image``) against a fake ``stagewatch.stream.pipeline``; returns the exit
    status."""
    fake = types.ModuleType("stagewatch.stream.pipeline")
    fake.run = fake_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stagewatch.stream.pipeline", fake)
    monkeypatch.setattr(sys, "argv", [str(LAUNCHER), *argv])
    if image is None:
        monkeypatch.delenv(_image_env(), raising=False)
    else:
        monkeypatch.setenv(_image_env(), image)
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
    assert calls == [([*argv, f"--sdk_container_image={IMAGE}"], False)]
    assert capsys.readouterr() == ("", "")
    # Without a --runner (the launcher does not have to pass one), the job is still built for Dataflow.
    calls.clear()
    assert _launch(monkeypatch, argv[:2], fake_run) == 0
    assert calls == [([*argv[:2], "--runner=DataflowRunner", f"--sdk_container_image={IMAGE}"], False)]


def test_launcher_gives_the_workers_its_own_image_unless_the_caller_named_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], wait: bool = True) -> None:
        calls.append(argv)

    by_digest = "europe-west1-docker.pkg.dev/my-proj/stagewatch/stagewatch@sha256:" + "0" * 64
    for given in ([f"--sdk_container_image={by_digest}"], ["--sdk_container_image", by_digest]):
        assert _launch(monkeypatch, ["--stages=a,b", *given], fake_run) == 0
        assert calls.pop() == ["--stages=a,b", *given, "--runner=DataflowRunner"]
    # A local runner (trying the launcher inside the image) needs no image for workers.
    assert _launch(monkeypatch, ["--runner=DirectRunner"], fake_run, image=None) == 0
    assert calls.pop() == ["--runner=DirectRunner"]
    assert capsys.readouterr() == ("", "")


def test_launcher_without_an_image_for_the_workers_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image built without --build-arg SDK_CONTAINER_IMAGE, launched without the parameter: the workers would
    run Beam's stock container, without stagewatch. The launch fails instead, saying what to do."""
    calls: list[list[str]] = []
    for image in (None, "", "  "):
        assert _launch(monkeypatch, ["--stages=a,b"], lambda argv, wait=True: calls.append(argv), image=image) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("stagewatch: error: no image for the workers")
        assert "sdk_container_image=IMAGE" in err and "--build-arg SDK_CONTAINER_IMAGE=IMAGE" in err
    assert calls == []


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


def test_the_launched_job_runs_on_the_image_and_stages_nothing_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The launcher with the template's parameters as Dataflow passes them (--name=value, no --runner, no
    --setup_file) and Beam's --dry_run: the whole Dataflow job is built offline, with no credentials, and exits 0.
    Its one environment is the image, and nothing is staged that a worker would pip-install when it starts."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    real_run = importlib.import_module("stagewatch.stream.pipeline").run
    results: list[Any] = []

    def spy(argv: list[str], wait: bool = True) -> Any:
        results.append(real_run(argv, wait=wait))
        return results[-1]

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    parameters = ["--input_subscription=projects/my-proj/subscriptions/stagewatch-logs",
                  "--output_topic=projects/my-proj/topics/stagewatch-anomalies",
                  "--bigquery_dataset=my-proj.stagewatch", "--stages=detect,upload,register,analyse?,store_result"]
    dataflow = ["--project=my-proj", "--region=europe-west1", "--temp_location=gs://my-bucket/temp",
                "--staging_location=gs://my-bucket/staging", "--dry_run=true"]
    assert _launch(monkeypatch, [*parameters, *dataflow], spy) == 0
    err = capsys.readouterr().err
    assert "the job was built and nothing run (--dry_run)" in err and "Traceback" not in err, err

    (result,) = results
    environments = result.job.proto_pipeline.components.environments
    images = set()
    for env in environments.values():
        assert env.urn == common_urns.environments.DOCKER.urn
        images.add(beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image)
        for artifact in env.dependencies:
            staged = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
            installs = staged.endswith((".tar.gz", ".whl", ".zip")) or staged in ("requirements.txt",
                                                                                   "extra_packages.txt")
            assert not installs, f"{staged} is staged: the workers would pip-install it at every start"
    assert images == {IMAGE}
