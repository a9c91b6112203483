"""The one place that decides what runs when the model cannot do what was asked.

Tiers, from the best down:

1. the requested caching (the configured rules, with the probe where a rule needs it);
2. the partitioned graph without caching (preset ``off``: every step and block computed);
3. plain Inductor, with the user's ``mode``.

Anything the capture, the passes or the runtime cannot do raises a ``PreciseCacheUnsupported``
subclass (``pc_compile.errors``); here it becomes one step down, warned once per model and
kind of reason (``UnsupportedGraphWarning``; Dynamo may hand over many graphs of one model:
graph breaks, recompilations), logged at DEBUG on the logger ``pc_compile``, and recorded so that
``stats`` says the model fell back and why. Under ``on_unsupported="error"`` it is raised
instead, and an ``OptionUnsupported`` (an option the user chose that the model cannot honour)
is always raised.
"""

from __future__ import annotations

import logging
import warnings
import weakref

import torch

from pc_compile import assemble
from pc_compile.capture import capture
from pc_compile.capture.dynamo import retrace
from pc_compile.errors import (
    OptionUnsupported,
    PreciseCacheUnsupported,
    UnsupportedGraph,
    UnsupportedGraphWarning,
)
from pc_compile.integrations.accelerate import warn_if_hooks_undo_compile
from pc_compile.integrations.context_parallel import (
    context_parallel,
    eager_parallel_forward,
    has_context_parallel_hooks,
)
from pc_compile.runtime import registry
from pc_compile.runtime.inductor import mode_options
from pc_compile.streams import name_streams

log = logging.getLogger("pc_compile")

UNCACHED = "partitioned without caching"
PLAIN = "plain inductor"

_warned_modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_warned_other: dict[object, set] = {}
# Models under context parallelism whose skipped forward Dynamo was asked to translate again.
_retraced: weakref.WeakSet = weakref.WeakSet()


def compile_in_tiers(gm: torch.fx.GraphModule, example_inputs, config, mode=None,
                     register: bool = True):
    """The callable that runs ``gm``: the best tier the model supports under ``config``."""
    seen = capture(gm)
    parallel = context_parallel(seen.module)
    if register and seen.module is not None:
        warn_if_hooks_undo_compile(seen.module)

    def step_down(ran: str, reason: PreciseCacheUnsupported) -> None:
        if config.on_unsupported == "error" or isinstance(reason, OptionUnsupported):
            raise reason
        _warn_once(seen.owner, ran, reason, mode)
        if register:
            registry.record_fallback(seen.owner, ran, str(reason), config)

    def build(tier_config, requested=None):
        graph = assemble.build_graph(gm, example_inputs, split, spec, tier_config, mode, seen,
                                     _probe_backend, requested, parallel)
        if register:
            registry.register(seen.owner, graph)
            name_streams(seen.owner, graph)
        else:  # the probe's network: its calls are not steps of a generation
            graph.counts_steps = False
        return graph

    try:
        split, spec = assemble.partition(gm, config,
                                         parallel.degree if parallel is not None else 1)
    except PreciseCacheUnsupported as reason:
        if _retrace_parallel_model(reason):
            # Runs this once, until the next call compiles the forward whole.
            return gm if config.piece_compiler == "eager" else plain_inductor(
                gm, example_inputs, mode)
        step_down(PLAIN, _with_parallel_hint(reason, seen.module))
        return plain_inductor(gm, example_inputs, mode)
    if config.caches:
        try:
            return build(config)
        except PreciseCacheUnsupported as reason:
            step_down(UNCACHED, reason)
    try:
        return build(assemble.uncached(config), requested=config)
    except PreciseCacheUnsupported as reason:
        step_down(PLAIN, reason)
        return plain_inductor(gm, example_inputs, mode)


def _retrace_parallel_model(reason: PreciseCacheUnsupported) -> bool:
    """Whether a graph without blocks is a piece of a model under context parallelism whose
    forward Dynamo skipped on its first call (``integrations/context_parallel.py``): then, at
    the first such piece, Dynamo is asked to translate that forward again at the next call,
    whole, and this call's pieces run without a warning, as plain Inductor (as uncompiled
    graphs under ``piece_compiler="eager"``)."""
    if not isinstance(reason, UnsupportedGraph):
        return False
    found = eager_parallel_forward()
    if found is None:
        return False
    model, functions = found
    if model in _retraced:
        log.debug("a piece of %s's first call under context parallelism: %s",
                  type(model).__name__, reason)
        return True
    if not retrace(functions):
        return False
    _retraced.add(model)
    log.info("precisecache: %s's forward runs eagerly on this first call under context "
             "parallelism (diffusers' split hooks learn the blocks' signature, which Dynamo "
             "cannot trace); it is compiled whole at the next call", type(model).__name__)
    return True


def _with_parallel_hint(reason: PreciseCacheUnsupported, module) -> PreciseCacheUnsupported:
    """``reason``, saying why when the graph lost its blocks to context parallelism's hooks."""
    if not isinstance(reason, UnsupportedGraph) or not has_context_parallel_hooks(module):
        return reason
    return UnsupportedGraph(
        f"{reason}; this graph is part of a model under context parallelism: its split hooks "
        "look up the forward's parameters on their first call, which Dynamo cannot trace "
        "inside the block loop, so Dynamo runs the forward eagerly and compiles its parts, "
        "and asking Dynamo to translate the forward again did not work here. Call the model "
        "once (eagerly) after enable_parallelism and before compiling it"
    )


def _probe_backend(gm, example_inputs, config, mode):
    return compile_in_tiers(gm, example_inputs, config, mode, register=False)


def plain_inductor(gm: torch.fx.GraphModule, example_inputs, mode=None):
    """What ``torch.compile(model, mode=mode)`` would run for this graph."""
    return torch._inductor.compile(gm, list(example_inputs), options=mode_options(mode))


def _warn_once(owner, ran: str, reason: PreciseCacheUnsupported, mode) -> None:
    if ran == PLAIN:
        what = (f"compiling this graph as plain Inductor (mode={mode or 'default'!r}), "
                "without caching")
    else:
        what = "caching is off for this model (its partitioned graph computes every step and block)"
    message = f"precisecache: {what}: {reason}"
    log.debug("fallback to %s (%s): %s", ran, type(reason).__name__, reason)
    if isinstance(owner, torch.nn.Module):
        warned = _warned_modules.setdefault(owner, set())
    elif owner is not None:
        warned = _warned_other.setdefault(owner, set())
    else:
        warned = set()  # whose graph this is is unknown: nothing to say it once for
    key = (ran, type(reason))  # not the message: it may name a shape, one per graph
    if key in warned:
        return
    warned.add(key)
    warnings.warn(message, UnsupportedGraphWarning, stacklevel=3)
