"""The ``precisecache`` torch.compile backend: wiring only.

``precisecache(gm, example_inputs, options=None)`` is what ``torch.compile(model,
backend="precisecache", options={...})`` calls (through the ``torch_dynamo_backends`` entry
point, so no import of ``pc_compile`` is needed). It reads the options into a config, runs the
passes, and hands the pieces to the runtime. A graph the passes cannot partition is compiled as
plain Inductor with one warning naming the reason (``on_unsupported="error"`` raises instead).
"""

from __future__ import annotations

import warnings

import torch

from pc_compile.config import PreciseCacheConfig, config_from_options
from pc_compile.inputs import compiled_owner, find_roles, input_names
from pc_compile.passes import run_passes
from pc_compile.passes.partition_blocks import UnsupportedGraph
from pc_compile.runtime import registry
from pc_compile.runtime.cached_graph import CachedGraph
from pc_compile.runtime.executor import Executor, PieceCompiler
from pc_compile.runtime.policies import make_policy


class UnsupportedGraphWarning(UserWarning):
    """The graph was compiled as plain Inductor, without caching."""


def precisecache(gm: torch.fx.GraphModule, example_inputs, options=None, mode=None):
    """The backend registered as ``"precisecache"``."""
    return compile_denoiser(gm, example_inputs, config_from_options(options), mode)


def backend(config: PreciseCacheConfig | None = None, **options):
    """A backend callable for ``torch.compile(model, backend=...)``.

    ``backend(PreciseCacheConfig(...))`` or ``backend(preset="turbo", alpha=0.6)``.
    """
    if config is not None and options:
        raise ValueError("pass either a PreciseCacheConfig or options, not both")
    if config is None:
        config = config_from_options(options)
    elif not isinstance(config, PreciseCacheConfig):
        raise TypeError(f"config must be a PreciseCacheConfig, got {type(config).__name__}")

    def precisecache_backend(gm, example_inputs, options=None, mode=None):
        if options:
            raise ValueError(
                "options were given both to pc_compile.backend() and to torch.compile(); "
                "give them in one place"
            )
        return compile_denoiser(gm, example_inputs, config, mode)

    return precisecache_backend


def compile_denoiser(gm, example_inputs, config: PreciseCacheConfig, mode=None):
    owner = compiled_owner()
    try:
        split, spec = run_passes(gm, config)
    except UnsupportedGraph as reason:
        if config.on_unsupported == "error":
            raise
        warnings.warn(
            f"precisecache: compiling this graph as plain Inductor without caching: {reason}",
            UnsupportedGraphWarning,
            stacklevel=2,
        )
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend("inductor")(gm, example_inputs)
    roles = find_roles(input_names(gm, owner))
    pieces = [getattr(split, piece.name) for piece in spec.pieces]
    compiler = PieceCompiler(config.piece_compiler, None if mode == "default" else mode)
    graph = CachedGraph(
        spec=spec,
        executor=Executor(spec, pieces, compiler),
        roles=roles,
        policy=make_policy(config, spec),
        max_streams=config.max_streams,
    )
    registry.register(owner, graph)
    return graph
