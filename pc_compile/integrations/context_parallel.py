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
Dynamo runs the whole forward eagerly, for good. ``unready_split_hooks`` names the hooks that
have not been called yet, for the error message; one call of the model before compiling fills
them (README, "Many GPUs").
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


def unready_split_hooks(module) -> list[str]:
    """The submodules of ``module`` whose context-parallel split hook has not learned its
    forward's parameter positions yet (the model was not called since it was enabled)."""
    if context_parallel(module) is None:
        return []
    try:
        from diffusers.hooks.context_parallel import ContextParallelSplitHook
    except ImportError:
        return []
    names = []
    for name, sub in module.named_modules():
        registry = getattr(sub, "_diffusers_hook", None)
        for hook in getattr(registry, "hooks", {}).values():
            metadata = getattr(hook, "module_forward_metadata", None)
            if (isinstance(hook, ContextParallelSplitHook) and metadata is not None
                    and metadata.cached_parameter_indices is None):
                names.append(name or "<root>")
    return names
