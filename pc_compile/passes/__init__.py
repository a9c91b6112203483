"""Pure FX transforms: GraphModule in, GraphModule out; no state, never run the model.

``run_passes`` is the one driver: it runs the passes in order and names the pass that failed.
"""

from __future__ import annotations

import torch.fx

from pc_compile.passes.partition_blocks import UnsupportedGraph, partition_blocks
from pc_compile.passes.partition_spec import PartitionSpec, describe_partition


def run_passes(gm: torch.fx.GraphModule, config,
               split_degree: int = 1) -> tuple[torch.fx.GraphModule, PartitionSpec]:
    """Partition ``gm`` (a copy of it) and describe the result for the runtime;
    ``split_degree``: the model's context-parallel degree (``partition_blocks``)."""
    done: list[str] = []
    steps = [("partition_blocks", lambda g: partition_blocks(g, split_degree))]
    for name, fn in steps:
        try:
            gm = fn(gm)
        except UnsupportedGraph:
            raise
        except Exception as error:
            ran = ", ".join(done) or "none"
            raise RuntimeError(f"pass {name} failed (passes run before it: {ran})") from error
        done.append(name)
    spec = describe_partition(gm)
    if spec.num_blocks < 2:
        raise UnsupportedGraph("fewer than two blocks after partitioning")
    return gm, spec
