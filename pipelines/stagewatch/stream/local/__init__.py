"""The in-process runner of local runs (``runner.LocalRunner``) and what it changes in Beam's (``patches``)."""

from stagewatch.stream.local.runner import NAME, LocalRunner, applied

__all__ = ["NAME", "LocalRunner", "applied"]
