"""diffusers' context parallelism: the group a model's sequence is split over, and its hooks.

How diffusers 0.42.1 does it: ``model.enable_parallelism(config=ContextParallelConfig(...))``
(or ``parallel_config=`` at load) records a ``ParallelConfig`` on ``model._parallel_config``;
its ``context_parallel_config._flattened_mesh`` is the (ring x ulysses) device mesh the sequence
is split over. Hooks from the model's ``_cp_plan`` (``hooks/context_parallel.py``) split inputs
at the planned modules (Wan: the latent tokens at ``blocks.0``, the rotary tables at ``rope``;
Flux: the latent and text tokens at the root) and gather the output at ``proj_out``, and the
attention processors exchange the shards (Ulysses all-to-all, ring send/receive). So between
the split and the gather the blocks hold a shard of the sequence, and what comes out of the
model is whole and the same on every rank.

``context_parallel(module)`` hands the runtime the process group and degree; it knows nothing
of diffusers.

A split hook learns the positions of its module's forward parameters on its first call
(``ModuleForwardMetadata``, through ``inspect.signature``). Dynamo cannot trace that lookup on
blocks diffusers marks ``allow_in_graph`` (Wan's): the graph breaks inside the block loop and
Dynamo runs the whole forward eagerly, for good, and hands over the pieces it calls (the blocks,
the rotary table), in which no block chain is found. ``has_context_parallel_hooks`` tells the
fallback's message such a piece; one call of the model before compiling fills the hooks' cache
(README, "Many GPUs").
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class ContextParallel:
    """A model's context parallelism: ``group`` (a ``torch.distributed`` process group) over
    which its sequence is split, in ``degree`` shards."""

    group: object
    degree: int


def context_parallel(module) -> ContextParallel | None:
    """The context parallelism enabled on ``module`` by diffusers, or None (none, or a layout
    of the config other than 0.42.1's)."""
    if "diffusers" not in sys.modules or module is None:
        return None
    config = getattr(getattr(module, "_parallel_config", None), "context_parallel_config", None)
    mesh = getattr(config, "_flattened_mesh", None)
    if mesh is None:
        return None
    try:
        degree = int(mesh.size())
        group = mesh.get_group()
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None
    return ContextParallel(group, degree) if degree > 1 else None


def has_context_parallel_hooks(module) -> bool:
    """Whether ``module`` or one of its submodules carries a context-parallel split or gather
    hook: a model under context parallelism, or a part of one (a block, the rotary table)."""
    if "diffusers" not in sys.modules or module is None:
        return False
    try:
        from diffusers.hooks.context_parallel import (
            ContextParallelGatherHook,
            ContextParallelSplitHook,
        )
    except ImportError:
        return False
    kinds = (ContextParallelSplitHook, ContextParallelGatherHook)
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        hooks = getattr(registry, "hooks", None)
        if isinstance(hooks, dict) and any(isinstance(h, kinds) for h in hooks.values()):
            return True
    return False
