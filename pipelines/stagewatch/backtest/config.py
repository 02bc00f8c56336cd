"""Settings from a TOML file and the command line, validated into the core's config objects.

A config file (``--config stagewatch.toml``) may hold::

    [stages]
    order = ["detect", "upload", "register", "done"]   # optional; inferred from the data when absent
    optional = ["register"]

    [fields]                  # dotted paths into each log line; a list is tried in order
    uid = ["jsonPayload.file_id", "labels.uid"]

    [detector]                # DetectorConfig: allowed_lateness_s, dedup_horizon_s, hold_s, stall_factor, ttl_s,
                              # max_ahead_s, max_age_s
    allowed_lateness_s = 120

    [baseline]                # BaselineConfig: line ("body" or "tail"), interval_s, half_life_s, warmup_n, ...
    half_life_s = 7200

Command-line flags override the file.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from stagewatch.backtest.engine import DetectorConfig
from stagewatch.core.baselines import BaselineConfig
from stagewatch.core.events import FieldMapping
from stagewatch.core.stages import StageOrder

__all__ = ["Settings", "load_settings"]


class Settings:
    def __init__(self, order: StageOrder | None, mapping: FieldMapping, detector: DetectorConfig) -> None:
        self.order = order
        self.mapping = mapping
        self.detector = detector


def _only_known(table: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """The table's keys, each a field of ``cls`` and of the type of its default (a number for a number, not
    a quoted one): a wrong one is said with what to write, not left to fail inside."""
    defaults = {f.name: getattr(cls(), f.name) for f in fields(cls)}
    unknown = set(table) - set(defaults)
    if unknown:
        raise ValueError(f"[{where}] has unknown keys {sorted(unknown)}; known: {sorted(defaults)}")
    for key, value in table.items():
        want = defaults[key]
        if isinstance(want, bool) or want is None:
            ok = isinstance(value, bool) or want is None
        elif isinstance(want, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, type(want))
        if not ok:
            example = "a finite number, e.g. " + repr(want) if isinstance(want, int | float) and not isinstance(
                want, bool) else f"like {want!r}"
            raise ValueError(f"[{where}] {key} = {value!r} must be {example} (no quotes around a number)")
    return table


def _config_order(table: Any) -> StageOrder:
    """``[stages]``: ``order`` a list of names, ``optional`` a list of some of them."""
    if not isinstance(table, dict):
        raise ValueError('[stages] must be a table: order = ["upload", "register", "done"]')
    order, optional = table.get("order", []), table.get("optional", [])
    for key, value in (("order", order), ("optional", optional)):
        if not isinstance(value, list) or not all(isinstance(n, str) and n.strip() for n in value):
            raise ValueError(f'[stages] {key} must be a list of stage names, e.g. ["upload", "register", "done"]; '
                             f"got {value!r}")
    return StageOrder(tuple(n.strip() for n in order), frozenset(n.strip() for n in optional))


def load_settings(
    config_path: str | None,
    stages: str | None = None,
    detector_overrides: dict[str, Any] | None = None,
    baseline_overrides: dict[str, Any] | None = None,
) -> Settings:
    raw: dict[str, Any] = {}
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise ValueError(f"config file {config_path} does not exist")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {config_path} is not valid TOML: {exc}") from exc
    unknown = set(raw) - {"stages", "fields", "detector", "baseline"}
    if unknown:
        raise ValueError(f"config file has unknown sections {sorted(unknown)}")
    for section, value in raw.items():
        if not isinstance(value, dict):
            raise ValueError(f"config file: {section} must be a table ([{section}] and its keys below it), got "
                             f"{value!r}")
    for key, value in raw.get("fields", {}).items():
        if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise ValueError(f'config file: [fields] {key} must be a dotted path or a list of them, e.g. '
                             f'"jsonPayload.{key}"; got {value!r}')
    order: StageOrder | None = None
    if stages:
        order = StageOrder.parse(stages)
    elif "stages" in raw:
        order = _config_order(raw["stages"])
    mapping = FieldMapping.from_dict(raw.get("fields", {}))
    base_table = _only_known(dict(raw.get("baseline", {})), BaselineConfig, "baseline")
    base_table.update({k: v for k, v in (baseline_overrides or {}).items() if v is not None})
    det_table = _only_known(dict(raw.get("detector", {})), DetectorConfig, "detector")
    det_table.pop("baseline", None)
    det_table.update({k: v for k, v in (detector_overrides or {}).items() if v is not None})
    try:
        detector = replace(DetectorConfig(), baseline=BaselineConfig(**base_table), **det_table)
    except (TypeError, ValueError, OverflowError) as exc:  # a range the settings' own checks refuse
        raise ValueError(f"config file or flags: {exc}") from None
    for key, least in (("hold_s", 0.0), ("stall_factor", 1.0), ("min_stall_s", 0.0), ("ttl_s", 1.0)):
        if getattr(detector, key) < least:  # said now, before any output is opened (the traces' own check)
            raise ValueError(f"[detector] {key} must be at least {least:g}, got {getattr(detector, key)!r}")
    return Settings(order, mapping, detector)
