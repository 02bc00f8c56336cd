"""Start the BigQuery emulator (``bqemulator`` from PyPI) for tests and ``.ci/run``, with no network.

Why a launcher and not ``bqemulator start``: bqemulator's DuckDB engine runs ``INSTALL spatial; LOAD
spatial`` at start-up (``bqemulator.storage.engine.DuckDBEngine._load_spatial``) and refuses to start when
the extension cannot be downloaded from extensions.duckdb.org — always the case on CI and on these machines.
stagewatch has no GEOGRAPHY columns, so this launcher swaps that step for one that loads the extension only
if a copy is already installed locally and otherwise carries on without it (``ST_*`` functions then fail at
query time; nothing else changes). It also turns off the best-effort Avro extension download (a ~3 s
network timeout at every start).

Usage (all flags optional)::

    python tests/bq_emulator_launcher.py --host 127.0.0.1 --rest-port 9050 --grpc-port 9060 \
        --project test-proj

Point google-cloud-bigquery at it with ``BIGQUERY_EMULATOR_HOST=http://127.0.0.1:9050`` (the client takes
the value as the full API endpoint, scheme included) or with
``client_options={"api_endpoint": "http://127.0.0.1:9050"}``.

Prints :data:`READY_MARKER` and the endpoints on stdout once both REST and gRPC listen, then serves until
SIGTERM or SIGINT. The emulator is ephemeral (in-memory DuckDB): every start is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

READY_MARKER = "BQEMULATOR READY"


def _load_spatial_if_present(self: Any) -> None:
    """Replacement for ``DuckDBEngine._load_spatial``: never downloads, never fails start-up."""
    conn = self._connection
    if conn is None:
        return
    try:
        conn.execute("LOAD spatial")  # only succeeds when the extension is already installed locally
    except Exception as exc:  # duckdb raises IOException; any failure here just means "no GEOGRAPHY"
        print(
            f"bq_emulator_launcher: DuckDB spatial extension not loaded ({exc.__class__.__name__}); "
            "GEOGRAPHY / ST_* queries will fail, everything else works",
            file=sys.stderr,
            flush=True,
        )


def _patch_bqemulator() -> None:
    from bqemulator.storage import engine

    if not hasattr(engine.DuckDBEngine, "_load_spatial"):
        raise SystemExit(
            "bq_emulator_launcher: bqemulator.storage.engine.DuckDBEngine._load_spatial no longer exists "
            "in this bqemulator version; update tests/bq_emulator_launcher.py (it must keep the emulator "
            "from downloading DuckDB's spatial extension)"
        )
    engine.DuckDBEngine._load_spatial = _load_spatial_if_present  # type: ignore[method-assign]


async def _serve(host: str, rest_port: int, grpc_port: int, project: str, log_level: str) -> None:
    from bqemulator import __version__
    from bqemulator.config import LogLevel, PersistenceMode, Settings
    from bqemulator.server import EmulatorServer

    settings = Settings(
        rest_host=host,
        rest_port=rest_port,
        grpc_host=host,
        grpc_port=grpc_port,
        default_project_id=project,
        persistence_mode=PersistenceMode.EPHEMERAL,
        enable_format_extensions=False,
        log_level=LogLevel(log_level),
    )
    server = EmulatorServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"{READY_MARKER} bqemulator={__version__} rest={server.rest_url} grpc={server.grpc_endpoint} project={project}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rest-port", type=int, default=9050)
    parser.add_argument("--grpc-port", type=int, default=9060)
    parser.add_argument("--project", default="test-proj")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    _patch_bqemulator()
    asyncio.run(_serve(args.host, args.rest_port, args.grpc_port, args.project, args.log_level))


if __name__ == "__main__":
    main()
