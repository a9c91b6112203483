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
blocks diffusers marks ``allow_in_graph`` (Wan's, called with positional arguments): the graph
breaks inside the block loop, Dynamo marks the model's forward (and the decorator wrapping it)
to run eagerly for good, and hands over the pieces it calls (the rotary table, the blocks), in
which no block chain is found. Running eagerly, that first call fills the hooks' cache.
``eager_parallel_forward`` finds, from such a piece's compile, the model whose forward runs
eagerly around it; the backend then has Dynamo translate that forward again at the next call
(``capture.dynamo.retrace``), which now traces cleanly: only the first call runs uncached.
``has_context_parallel_hooks`` tells the fallback's message a piece where that did not work.
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


def forward_functions(module) -> list:
    """The functions a call of ``module.forward`` runs through: the class's ``forward`` and
    what its decorators wrap (``__wrapped__``; diffusers' ``apply_lora_scale`` is one)."""
    functions, function = [], getattr(type(module), "forward", None)
    while callable(function) and function not in functions:
        functions.append(function)
        function = getattr(function, "__wrapped__", None)
    return functions


def eager_parallel_forward():
    """``(model, forward_functions(model))`` for the innermost model under context parallelism
    whose forward is running as a plain Python frame below the caller on this thread while the
    model itself is compiled (``torch.compile(model)`` or ``model.compile()``): the forward
    Dynamo skipped, while it compiles a piece called from it. None if there is none."""
    if "diffusers" not in sys.modules:
        return None
    import torch

    frame, model = sys._getframe(1), None
    while frame is not None:
        code = frame.f_code
        owner = frame.f_locals.get("self") if code.co_argcount else None
        if model is None and isinstance(owner, torch.nn.Module) \
                and context_parallel(owner) is not None:
            functions = forward_functions(owner)
            if any(getattr(f, "__code__", None) is code for f in functions):
                model = owner
                if getattr(model, "_compiled_call_impl", None) is not None:
                    return model, functions  # compiled in place
        elif model is not None and getattr(owner, "_orig_mod", None) is model:
            return model, functions  # called through the module torch.compile returned
        frame = frame.f_back
    return None


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
