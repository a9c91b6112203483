"""Building what runs a partitioned denoiser: the partition, the roles, the engine, the probe.

``partition`` runs the passes and logs the partition's summary at DEBUG; ``build_graph`` puts a
``CachedGraph`` together for one configuration. Each raises a ``PreciseCacheUnsupported``
subclass when the model cannot do what the configuration asks; deciding what to do then is
``fallback.py``'s business, not this file's.

The probe is the same module compiled a second time, at the probe's shape: the graph Dynamo
hands over is specialised to the traced call's shapes, so the low-resolution network cannot be
cut out of it. It is a graph of its own, partitioned and compiled like the first, never caching.
Dynamo traces it through a function with a code object of its own per compiled graph
(``probe_function``), so its cache entries never count against the recompile limit of the
user's forward: a model compiled with precisecache takes as many shapes as plain torch.compile.
It is compiled with the user's ``dynamic`` setting, read while Dynamo compiles the model. Each
call's probe runs the module whose weights that call runs (``ProbeNetwork.serve``): the module
compiled here, and the others the front finds served by the same graph (``streams.py``).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import types
import warnings

import torch

from pc_compile.capture import (
    Capture,
    find_roles,
    input_names,
    input_paths,
    layout_for,
    weights_input,
)
from pc_compile.config import PRESETS
from pc_compile.errors import ProbeUnsupported
from pc_compile.integrations.accelerate import inner_forward
from pc_compile.passes import run_passes
from pc_compile.runtime.cached_graph import CachedGraph, chain_pairs
from pc_compile.runtime.engine import build_engine, needs_probe
from pc_compile.runtime.executor import Executor, PieceCompiler
from pc_compile.runtime.probe import ProbeNetwork

log = logging.getLogger("pc_compile")


def partition(gm: torch.fx.GraphModule, config, split_degree: int = 1):
    """``(split, spec)``: the passes' rewrite of ``gm`` (``UnsupportedGraph`` if impossible);
    ``split_degree``: the model's context-parallel degree, 1 without."""
    split, spec = run_passes(gm, config, split_degree)
    log.debug(
        "partition: %d pieces, %d blocks in %d list(s) (%s), %d kernel groups",
        len(spec.pieces), spec.num_blocks, len(spec.block_lists), ", ".join(spec.block_lists),
        len({p.kernel_group for p in spec.pieces}),
    )
    return split, spec


def uncached(config):
    """``config`` with caching off: the partitioned graph, every step and block computed."""
    return dataclasses.replace(PRESETS["off"], piece_compiler=config.piece_compiler,
                               max_streams=config.max_streams,
                               on_unsupported=config.on_unsupported)


def build_graph(gm, example_inputs, split, spec, config, mode, capture: Capture,
                probe_backend, requested=None, parallel=None) -> CachedGraph:
    """A ``CachedGraph`` running ``spec``'s pieces under ``config``'s rules. ``requested``:
    the configuration the user asked for, when ``config`` is a lower tier of it; ``parallel``:
    the model's context parallelism (``integrations.context_parallel``), or None."""
    names = input_names(gm, capture.owner, capture.sources)
    roles = find_roles(names, weights_input(gm, example_inputs, capture.sources))
    pieces = [getattr(split, piece.name) for piece in spec.pieces]
    compiler = PieceCompiler(config.piece_compiler, None if mode == "default" else mode,
                             config.cuda_graphs)
    engine = build_engine(config, spec, chain_pairs(spec), roles)
    engine.group = parallel.group if parallel is not None else None
    graph = CachedGraph(
        spec=spec,
        executor=Executor(spec, pieces, compiler),
        roles=roles,
        engine=engine,
        max_streams=config.max_streams,
        config=requested if requested is not None else config,
    )
    if needs_probe(config.step_rule):
        graph.probe = build_probe(capture, input_paths(gm, capture.owner, capture.sources),
                                  names, roles, config, mode, probe_backend,
                                  parallel.degree if parallel is not None else 1)
        graph.probe.serve(graph.weights_key_of(capture.module), capture.module)
        engine.probe_cost = spec.num_blocks * graph.probe.token_ratio
        if graph.probe.token_ratio > 0.5:
            warnings.warn(
                f"precisecache: the probe costs {graph.probe.token_ratio:.0%} of a step on this "
                f"latent ({graph.probe.full_grid.tokens_per_frame} tokens per frame; the probe "
                f"keeps at least probe_min_tokens={config.probe_min_tokens}); LFCache cannot "
                "save much here",
                stacklevel=2,
            )
    return graph


def build_probe(capture: Capture, paths: list, names: list, roles, config, mode,
                probe_backend, multiple: int = 1):
    """A ``ProbeNetwork`` for the compiled module; ``paths[i]`` is where graph input i lies in
    the call (``roles.input_paths``), ``names[i]`` its argument. Its pieces are compiled in the
    user's ``mode``, like the model's. Under context parallelism the probe is the model with
    its parallelism (sharded), and ``multiple`` (the degree) divides its token count."""
    if capture.module is None or capture.call is None or roles.hidden is None:
        raise ProbeUnsupported(
            f"step_rule={config.step_rule!r} runs a low-resolution probe of the model, which "
            "needs the nn.Module, the arguments of its forward and its latent among them; "
            "Dynamo handed over a graph of another frame (a compiled function, or a wrapper of "
            "the module's forward that is not of the form (module, *args, **kwargs)): compile "
            "the module itself"
        )
    call = capture.call
    layout = layout_for(capture.module, call, names[roles.hidden])
    bind = {i: p for i, p in enumerate(paths) if p is not None and p[0] in call}
    probe_config = dataclasses.replace(PRESETS["off"], piece_compiler=config.piece_compiler,
                                       cuda_graphs=config.cuda_graphs)
    compiles = [0]

    def backend(probe_gm, probe_inputs, options=None, mode=None, user_mode=mode):
        compiles[0] += 1
        if compiles[0] == torch._dynamo.config.recompile_limit:
            warnings.warn(
                f"precisecache: the probe of {type(capture.module).__name__} was compiled for "
                f"{compiles[0]} shapes by one graph of the model, Dynamo's recompile_limit; "
                "past it the probe runs uncompiled (the model's own graph is not affected)",
                stacklevel=2,
            )
        return probe_backend(probe_gm, probe_inputs, probe_config, user_mode)

    compiled = torch.compile(probe_function(), backend=backend, dynamic=user_dynamic())

    def network(module, probe_call):
        return compiled(inner_forward(module), probe_call)

    weights = roles.weights if roles.weights_path is not None else None
    return ProbeNetwork(network, call, bind, layout, config.probe_downsample,
                        config.probe_min_tokens, weights, multiple)


def user_dynamic() -> bool | None:
    """The ``dynamic`` the model is being compiled with (``torch.compile`` sets Dynamo's config
    for the duration of the compile): True, False, or None (automatic)."""
    settings = torch._dynamo.config
    if not settings.assume_static_by_default:
        return True
    if not settings.automatic_dynamic_shapes:
        return False
    return None


_probes = itertools.count()


def _run_module(forward, kwargs):
    return forward(**kwargs)


def probe_function():
    """A function that calls ``forward(**kwargs)`` (a module, or its forward inside a hook) with
    a code object of its own: Dynamo keeps its compiled entries (and counts its recompiles) per
    code object."""
    code = _run_module.__code__.replace(co_name=f"precisecache_probe_{next(_probes)}")
    return types.FunctionType(code, _run_module.__globals__, code.co_name)
