"""Packaging for stagewatch: the importable package ``stagewatch`` lives in ``pipelines/stagewatch``."""

from setuptools import find_packages, setup

# One exact Beam version everywhere: setup.py, the flex-template Dockerfile and the docs.
BEAM_VERSION = "2.77.0"  # must match templates/stagewatch/Dockerfile

setup(
    name="stagewatch",
    version="0.1.0",
    description="Per-file latency anomaly detection for multi-service pipelines on Google Cloud",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir={"": "pipelines"},
    packages=find_packages(where="pipelines"),
    include_package_data=True,
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "google-cloud-pubsub>=2.20",
        "google-cloud-bigquery>=3.20",
        "numpy>=1.26",
        "scipy>=1.11",
        # orjson: the hot path of a backtest is JSON parsing; orjson is ~5x the stdlib parser.
        "orjson>=3.9",
        # tqdm: the progress bar on stderr for long replays.
        "tqdm>=4.66",
        # matplotlib: the charts of `stagewatch report`, drawn as inline SVG so the page needs no network.
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
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
)
