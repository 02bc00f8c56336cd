"""Pub/Sub and BigQuery emulators for the integration tier: where they are, whether they answer, how to start.

Two emulators, both real services on these machines (``/work/shared/design.md``, "Real services"):

* Pub/Sub — Google's emulator from the Cloud CLI, ``gcloud beta emulators pubsub start``. Clients find it
  through ``PUBSUB_EMULATOR_HOST=host:port`` (no scheme). gcloud puts itself in its own process group and
  runs the emulator as a ``java`` child; stopping gcloud alone leaves java running, so :func:`stop` signals
  the whole group and every recorded child by PID.
* BigQuery — ``bqemulator`` (PyPI), started through ``tests/bq_emulator_launcher.py`` (which keeps it from
  downloading DuckDB's spatial extension). google-cloud-bigquery reads ``BIGQUERY_EMULATOR_HOST`` as the
  full API endpoint, so the value carries the scheme: ``http://127.0.0.1:9050``.

``.ci/run`` starts both (fixed ports 8085 and 9050/9060) and exports the two variables; without them,
``tests/conftest.py`` starts them itself on free ports for the session, with the functions below.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BIGQUERY_ENV",
    "PROJECT",
    "PUBSUB_ENV",
    "EmulatorProcess",
    "EmulatorStartError",
    "bigquery_host",
    "free_port",
    "pubsub_host",
    "require_emulators",
    "start_bigquery",
    "start_pubsub",
    "stop",
]

PUBSUB_ENV = "PUBSUB_EMULATOR_HOST"
BIGQUERY_ENV = "BIGQUERY_EMULATOR_HOST"
#: The project id both emulators are started with; clients must use the same one.
PROJECT = "test-proj"

PUBSUB_READY_LINE = "Server started"  # gcloud's log line once the java emulator listens
BQ_READY_LINE = "BQEMULATOR READY"  # == bq_emulator_launcher.READY_MARKER, printed once REST and gRPC listen
STARTUP_TIMEOUT_S = 60.0
_BIND_FAILURE = "Address already in use"
_ERROR_LINE = re.compile(r"Exception|Error|error:|FATAL|Traceback")
_LAUNCHER = Path(__file__).resolve().parent / "bq_emulator_launcher.py"


def _banner(lines: list[str]) -> str:
    rule = "!" * 100
    return "\n".join(["", rule, *(f"!!! {line}" for line in lines), rule, ""])


class EmulatorStartError(RuntimeError):
    """An emulator did not start; the message names it and carries the tail of its log."""


def _env_or_raise(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            _banner(
                [
                    f"{name} is not set: no {what} emulator for this test.",
                    "Run the suite with .ci/run, or through pytest so tests/conftest.py starts the emulators",
                    "(only for tests marked 'integration').",
                ]
            )
        )
    return value


def pubsub_host() -> str:
    """``host:port`` of the Pub/Sub emulator (``PUBSUB_EMULATOR_HOST``); raises if unset."""
    return _env_or_raise(PUBSUB_ENV, "Pub/Sub")


def bigquery_host() -> str:
    """Endpoint URL of the BigQuery emulator (``BIGQUERY_EMULATOR_HOST``, e.g. ``http://127.0.0.1:9050``)."""
    return _env_or_raise(BIGQUERY_ENV, "BigQuery")


def bigquery_client() -> Any:
    """A google-cloud-bigquery client on the emulator: anonymous, at the emulator's endpoint."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=bigquery_host()),
    )


def _http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # a local emulator URL
        return resp.status, resp.read(2000).decode("utf-8", "replace")


def _pubsub_problem(host: str) -> str | None:
    # The Pub/Sub emulator answers plain HTTP GET / with "Ok" on its gRPC port.
    try:
        status, _ = _http_get(f"http://{host}/")
    except (OSError, urllib.error.URLError) as exc:
        return f"Pub/Sub emulator at {PUBSUB_ENV}={host} does not answer: {exc}"
    return None if status == 200 else f"Pub/Sub emulator at {host} answered HTTP {status}"


def _bigquery_problem(endpoint: str) -> str | None:
    url = f"{endpoint.rstrip('/')}/bigquery/v2/projects/{PROJECT}/datasets"
    try:
        status, _ = _http_get(url)
    except (OSError, urllib.error.URLError) as exc:
        return f"BigQuery emulator at {BIGQUERY_ENV}={endpoint} does not answer GET {url}: {exc}"
    return None if status == 200 else f"BigQuery emulator answered HTTP {status} to GET {url}"


def require_emulators() -> None:
    """Raise :class:`RuntimeError` (loudly) unless both emulators are configured and answer."""
    problems = []
    for env, check in ((PUBSUB_ENV, _pubsub_problem), (BIGQUERY_ENV, _bigquery_problem)):
        value = os.environ.get(env)
        problem = f"{env} is not set" if not value else check(value)
        if problem:
            problems.append(problem)
    if problems:
        raise RuntimeError(_banner(["EMULATORS NOT AVAILABLE — integration tests cannot run:", *problems]))


# ------------------------------------------------------------------------------------------------------------
# Starting and stopping (used by tests/conftest.py; .ci/run does the same in bash)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class EmulatorProcess:
    """One started emulator: its process (a process-group leader), log file, env var and value."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    env_name: str
    env_value: str
    #: (pid, start time) of the children seen when it became ready — gcloud's java, for one.
    children: list[tuple[int, str]] = field(default_factory=list)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ..., start time at [19])."""
    try:
        # The command name (field 2) may contain spaces and parens, so split after its last ")".
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[tuple[int, str]]:
    """Direct children of ``pid`` as (pid, start time) — the start time tells a reused PID apart.

    Linux /proc; elsewhere ``pgrep -P`` with an empty start time.
    """
    if Path("/proc").is_dir():
        kids = []
        for entry in Path("/proc").glob("[0-9]*"):
            fields = _stat(entry.name)
            if fields and int(fields[1]) == pid:
                kids.append((int(entry.name), fields[19]))
        return kids
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [(int(p), "") for p in out.split()]


def _same_process(pid: int, start_time: str) -> bool:
    if not start_time:
        return True
    fields = _stat(pid)
    return fields is not None and fields[19] == start_time


def _spawn(name: str, cmd: list[str], log_path: Path, env_name: str, env_value: str) -> EmulatorProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        # start_new_session: the emulator leads its own process group, so stop() can signal the group
        # (gcloud skips its own setpgid when it is already a session leader).
        popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return EmulatorProcess(name, popen, log_path, env_name, env_value)


def _wait_ready(emu: EmulatorProcess, marker: str, extra_check: str | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_problem = "no readiness line in the log yet"
    while time.monotonic() < deadline:
        if emu.popen.poll() is not None:
            last_problem = f"process exited with code {emu.popen.returncode}"
            break
        if _BIND_FAILURE in emu.log_tail(200):
            # gcloud's java emulator keeps running after its port bind fails; don't wait out the timeout.
            last_problem = f"its port is taken ({_BIND_FAILURE})"
            break
        if marker in emu.log_tail(200):
            check = _pubsub_problem if extra_check == "pubsub" else _bigquery_problem
            problem = check(emu.env_value)
            if problem is None:
                emu.children = _children(emu.popen.pid)
                return
            last_problem = problem
        time.sleep(0.25)
    else:
        last_problem = f"not ready after {timeout:.0f} s ({last_problem})"
    tail = emu.log_tail()
    first_error = next((line for line in emu.log_tail(10_000).splitlines() if _ERROR_LINE.search(line)), "")
    stop(emu)
    raise EmulatorStartError(
        _banner(
            [
                f"{emu.name.upper()} EMULATOR FAILED TO START: {last_problem}",
                f"command: {' '.join(map(str, emu.popen.args))}",
                *([f"first error in the log: {first_error.strip()}"] if first_error else []),
                f"log: {emu.log_path} — last lines:",
                *tail.splitlines(),
            ]
        )
    )


def start_pubsub(port: int, log_dir: Path, timeout: float = STARTUP_TIMEOUT_S) -> EmulatorProcess:
    """Start the Pub/Sub emulator on 127.0.0.1:``port``; returns once its log says "Server started"."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorStartError(
            _banner(["PUB/SUB EMULATOR FAILED TO START: gcloud (Google Cloud CLI) is not on PATH"])
        )
    host = f"127.0.0.1:{port}"
    cmd = [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={host}", f"--project={PROJECT}"]
    emu = _spawn("Pub/Sub", cmd, log_dir / "pubsub-emulator.log", PUBSUB_ENV, host)
    _wait_ready(emu, PUBSUB_READY_LINE, "pubsub", timeout)
    return emu


def start_bigquery(
    rest_port: int, grpc_port: int, log_dir: Path, timeout: float = STARTUP_TIMEOUT_S
) -> EmulatorProcess:
    """Start bqemulator through ``bq_emulator_launcher.py``; returns once it lists datasets over REST."""
    if importlib.util.find_spec("bqemulator") is None:
        raise EmulatorStartError(
            _banner(
                [
                    f"BIGQUERY EMULATOR FAILED TO START: bqemulator is not installed in {sys.prefix}",
                    "pip install 'bqemulator==1.4.0'  (.ci/run installs it; setup.py's [test] extra does not)",
                ]
            )
        )
    cmd = [
        sys.executable,
        str(_LAUNCHER),
        "--host=127.0.0.1",
        f"--rest-port={rest_port}",
        f"--grpc-port={grpc_port}",
        f"--project={PROJECT}",
    ]
    emu = _spawn("BigQuery", cmd, log_dir / "bigquery-emulator.log", BIGQUERY_ENV, f"http://127.0.0.1:{rest_port}")
    _wait_ready(emu, BQ_READY_LINE, "bigquery", timeout)
    return emu


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # already gone (or not ours any more)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    return fields is None or fields[0] != "Z"  # a zombie has exited already


def _wait_gone(pids: list[int], popen: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        popen.poll()  # reaps our direct child so it does not linger as a zombie
        if not any(_alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop(emu: EmulatorProcess, grace: float = 10.0) -> None:
    """Stop an emulator by PID: children first, then its process group; SIGKILL after ``grace`` s."""
    pid = emu.popen.pid
    children = dict(emu.children)
    if emu.popen.poll() is None:
        children.update(_children(pid))
    # Only processes still recognisably ours: same start time as when recorded (not a reused PID).
    kids = [child for child, started in children.items() if _same_process(child, started)]
    # Children first: gcloud exits by itself once its java child is gone, so nothing is left orphaned.
    for child in kids:
        _signal(child, signal.SIGTERM, group=False)
    _wait_gone(kids, emu.popen, min(grace, 5.0))
    # The group is ours (start_new_session), so pgid == pid.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        _signal(pid, sig, group=True)
        for child in kids:
            if _same_process(child, children[child]):
                _signal(child, sig, group=False)
        if _wait_gone([pid, *kids], emu.popen, grace):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        emu.popen.wait(timeout=5)
