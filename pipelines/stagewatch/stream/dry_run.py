"""A dry run (Beam's ``--dry_run true``): the whole job built -- for Dataflow, translated too -- and nothing
touched: no table created, no folder written, nothing submitted. What a team checks before a deployment, offline;
``summary`` says what was built."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["is_dry_run", "summary"]


def is_dry_run(options: PipelineOptions) -> bool:
    return str(options.get_all_options().get("dry_run") or "").lower() in ("true", "1")


def summary(p: beam.Pipeline) -> str:
    """One line: the graph's steps (leaf transforms), its stateful steps (DoFns that keep state or timers), and
    its side inputs."""
    from apache_beam.transforms.userstate import get_dofn_specs

    steps, stateful, side_inputs = [], [], 0

    class _Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node: Any) -> None:
            nonlocal side_inputs
            steps.append(node.full_label)
            side_inputs += len(node.side_inputs or ())
            fn = getattr(node.transform, "fn", None)
            if fn is not None and any(get_dofn_specs(fn)):
                stateful.append(node.full_label)

    p.visit(_Visitor())
    return (f"the job was built and nothing run (--dry_run): {len(steps)} steps, {len(stateful)} of them stateful "
            f"({', '.join(sorted({s.split('/')[0] for s in stateful}))}), {side_inputs} side inputs")
