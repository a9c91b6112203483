"""The ``precisecache`` torch.compile backend: wiring only.

``precisecache(gm, example_inputs, options=None)`` is what ``torch.compile(model,
backend="precisecache", options={...})`` calls (through the ``torch_dynamo_backends`` entry
point, so no import of ``pc_compile`` is needed). It reads the options into a config, runs the
passes, and hands the pieces to the runtime. A graph the passes cannot partition is compiled as
plain Inductor with one warning naming the reason (``on_unsupported="error"`` raises instead).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings

import torch

from pc_compile.config import PRESETS, PreciseCacheConfig, config_from_options
from pc_compile.inputs import compiled_owner, find_roles, input_names, weights_input
from pc_compile.integrations.diffusers import listen
from pc_compile.passes import run_passes
from pc_compile.passes.partition_blocks import UnsupportedGraph
from pc_compile.probe_inputs import ProbeUnsupported, build_probe, compiled_call
from pc_compile.runtime import registry
from pc_compile.runtime.cached_graph import CachedGraph, chain_pairs
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


def compile_denoiser(gm, example_inputs, config: PreciseCacheConfig, mode=None,
                     register: bool = True):
    owner = compiled_owner()
    call = compiled_call() if config.step_rule == "lfcache" else None
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
    names = input_names(gm, owner)
    roles = find_roles(names, weights_input(gm, example_inputs))
    pieces = [getattr(split, piece.name) for piece in spec.pieces]
    compiler = PieceCompiler(config.piece_compiler, None if mode == "default" else mode)
    pairs = chain_pairs(spec)
    policy = make_policy(config, spec, pairs, roles)
    graph = CachedGraph(
        spec=spec,
        executor=Executor(spec, pieces, compiler),
        roles=roles,
        policy=policy,
        max_streams=config.max_streams,
        config=config,
    )
    if config.step_rule == "lfcache":
        if call is None or roles.hidden is None:
            raise ProbeUnsupported(
                "step_rule='lfcache' runs a low-resolution probe of the model, which needs the "
                "nn.Module's forward and its latent argument; compile the module itself"
            )
        module, arguments = call
        probe_config = dataclasses.replace(PRESETS["off"], piece_compiler=config.piece_compiler)

        def probe_backend(probe_gm, probe_inputs, options=None, mode=None):
            return compile_denoiser(probe_gm, probe_inputs, probe_config, mode, register=False)

        graph.probe = build_probe(module, arguments, names, roles.hidden, config, probe_backend)
        policy.probe_cost = spec.num_blocks * graph.probe.token_ratio
        if graph.probe.token_ratio > 0.5:
            warnings.warn(
                f"precisecache: the probe costs {graph.probe.token_ratio:.0%} of a step on this "
                f"latent ({graph.probe.full_grid.tokens_per_frame} tokens per frame; the probe "
                f"keeps at least probe_min_tokens={config.probe_min_tokens}); LFCache cannot "
                "save much here",
                stacklevel=2,
            )
    if register:
        registry.register(owner, graph)
        if isinstance(owner, torch.nn.Module):
            name_streams_from_pipeline(owner, graph)
            graph.on_new_weights = functools.partial(_name_streams_of_caller, graph)
    return graph


def _name_streams_of_caller(graph: CachedGraph, key: tuple) -> None:
    """Another instance of the model (Wan 2.2's transformer_2) met by a graph compiled for the
    first: find it among the callers (its ``Module.__call__`` frame is on the stack) and name
    its streams too. Runs once per set of weights."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_locals.get("self")
        module = getattr(module, "_orig_mod", module)  # a torch.compile wrapper: its model
        if isinstance(module, torch.nn.Module) and graph.weights_key_of(module) == key:
            name_streams_from_pipeline(module, graph)
            return
        frame = frame.f_back


def name_streams_from_pipeline(owner: torch.nn.Module, graph: CachedGraph) -> None:
    """Streams take the names a diffusers pipeline gives its calls (``cache_context``), and a
    pipeline's return ends the generation of every stream of ``owner``."""

    def end_generation():
        for _, table in registry.tables_of(owner):
            table.end_generation()

    listener = listen(owner, on_end=end_generation)
    key = graph.weights_key_of(owner)
    if listener is not None and key is not None:
        graph.stream_names[key] = lambda: listener.name
