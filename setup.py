"""Packaging for stagewatch: the importable package ``stagewatch`` lives in ``pipelines/stagewatch``."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# The BigQuery views and queries live at the top of the repository (templates/bigquery/, the project's layout), outside
# the package; they are copied into it when it is built, so an installed stagewatch finds them
# (stagewatch.store.views.sql_dir). MANIFEST.in puts them in the sdist, which Beam builds for the workers.
SQL_SOURCE = Path("templates") / "bigquery"
SQL_IN_PACKAGE = Path("stagewatch") / "store" / "bigquery_sql"

# One exact Beam version everywhere: setup.py, the flex-template Dockerfile and the docs.
BEAM_VERSION = "2.77.0"  # must match templates/stagewatch/Dockerfile
REPORT = ["matplotlib>=3.8"]


class BuildPyWithSql(build_py):
    def run(self) -> None:
        super().run()
        files = sorted(SQL_SOURCE.glob("*.sql"))
        if not files:
            raise SystemExit(f"setup.py: no {SQL_SOURCE}/*.sql here: build from a checkout (or an sdist) that has them")
        target = Path(self.build_lib) / SQL_IN_PACKAGE
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, target / f.name)


setup(
    name="stagewatch",
    version="0.1.0",
    description="Per-file latency anomaly detection for multi-service pipelines on Google Cloud",
    long_description=open("README.md", encoding="utf-8").read(),  # noqa: SIM115 - read once at build time
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir={"": "pipelines"},
    packages=find_packages(where="pipelines"),
    include_package_data=True,
    # What the streaming job and the command line run -- and all a Dataflow worker installs. The report's charts
    # (matplotlib) and the tests' browser (selenium) are extras: no worker needs them.
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "google-cloud-pubsub>=2.20",
        "google-cloud-bigquery>=3.20",
        "numpy>=1.26",
        "scipy>=1.11",
        # orjson: the hot path of a backtest is JSON parsing; orjson is ~5x the stdlib parser.
        "orjson>=3.9",
        # msgspec: decodes only the fields a log line is read for (typed), skipping the rest unbuilt.
        "msgspec>=0.18",
        # tqdm: the progress bar on stderr for long replays.
        "tqdm>=4.66",
    ],
    extras_require={
        # matplotlib: the charts of `stagewatch report`, drawn as inline SVG so the page needs no network.
        "report": REPORT,
        "test": [
            *REPORT,
            "pytest>=8",
            "pytest-timeout>=2.3",
            # Two test processes at once: the Beam and emulator tests mostly wait (pyproject.toml's addopts).
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "mypy>=1.10",
            # The BigQuery emulator (DuckDB-backed) for integration tests; started by .ci/run or the fixtures.
            "bqemulator==1.4.0",  # pinned: tests/bq_emulator_launcher.py patches one of its private methods
            # Drives Debian's headless Chromium (chromium, chromium-driver) in the report's browser test.
            "selenium>=4.20",
        ],
    },
    entry_points={"console_scripts": ["stagewatch=stagewatch.cli:main"]},
    cmdclass={"build_py": BuildPyWithSql},
)
