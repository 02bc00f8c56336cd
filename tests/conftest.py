"""Suite-wide pytest wiring: the Pub/Sub and BigQuery emulators behind tests marked ``integration``.

Only integration tests touch the emulators. A function-scoped autouse gate asks for the session-scoped
``emulator_hosts`` fixture when — and only when — the test carries the ``integration`` marker, so a run of
unit and pipeline tests never starts (or waits for, or fails on) an emulator.

``emulator_hosts``:

* ``PUBSUB_EMULATOR_HOST`` / ``BIGQUERY_EMULATOR_HOST`` set (``.ci/run`` does this): uses those emulators
  and checks that they answer.
* either unset (a developer's ``python -m pytest``): starts the missing emulator(s) on free ports, exports
  the variable(s) for the session, and stops the processes by PID when the session ends.

An emulator that will not start fails the integration tests with its log tail; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import emulators


def pytest_configure(config: pytest.Config) -> None:
    # --strict-markers is on; declare `integration` here too in case pyproject.toml does not.
    declared = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    if "integration" not in declared:
        config.addinivalue_line(
            "markers", "integration: needs the Pub/Sub and BigQuery emulators (.ci/run or tests/conftest.py)"
        )


@pytest.fixture(scope="session")
def emulator_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``{"pubsub": "127.0.0.1:PORT", "bigquery": "http://127.0.0.1:PORT"}``, started here if not given."""
    started: list[emulators.EmulatorProcess] = []
    previous = {name: os.environ.get(name) for name in (emulators.PUBSUB_ENV, emulators.BIGQUERY_ENV)}
    try:
        if not previous[emulators.PUBSUB_ENV] or not previous[emulators.BIGQUERY_ENV]:
            log_dir = tmp_path_factory.mktemp("emulator-logs")
            if not previous[emulators.PUBSUB_ENV]:
                started.append(emulators.start_pubsub(emulators.free_port(), log_dir))
            if not previous[emulators.BIGQUERY_ENV]:
                started.append(emulators.start_bigquery(emulators.free_port(), emulators.free_port(), log_dir))
            for emu in started:
                os.environ[emu.env_name] = emu.env_value
        emulators.require_emulators()
        yield {"pubsub": emulators.pubsub_host(), "bigquery": emulators.bigquery_host()}
    finally:
        for emu in reversed(started):
            emulators.stop(emu)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def _emulators_for_integration_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("emulator_hosts")
