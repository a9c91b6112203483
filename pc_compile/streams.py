"""Naming a model's guidance streams after its pipeline's calls (front wiring).

A diffusers pipeline wraps each guidance branch in ``transformer.cache_context("cond")``; the
runtime keys streams by that name when it can hear it (``pc_compile.integrations``), so that
``stats()["per_stream"]`` says "cond" and "uncond". A pipeline's return also ends the
generation of every stream of the model, so a generation cut short is followed by a clean one.
Elsewhere streams fall back to the identity of the conditioning tensor.

Dynamo serves every instance of a model class from the graph compiled for the first (Wan 2.2's
``transformer_2``): when a graph meets new weights, the module that holds them is found among
the callers, its streams are named, and the probe is told to run that module for those weights.
"""

from __future__ import annotations

import functools
import sys

import torch

from pc_compile.integrations.diffusers import listen
from pc_compile.runtime import registry


def name_streams(owner, graph) -> None:
    """Wire ``graph`` (just compiled for ``owner``) to the names ``owner``'s pipeline gives."""
    if not isinstance(owner, torch.nn.Module):
        return
    name_streams_from_pipeline(owner, graph)
    graph.on_new_weights = functools.partial(_name_streams_of_caller, graph)


def _name_streams_of_caller(graph, key: tuple) -> None:
    """Another instance of the model (Wan 2.2's transformer_2) met by a graph compiled for the
    first: find it among the callers (its ``Module.__call__`` frame is on the stack), name its
    streams too and let the probe run it. Runs once per set of weights."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_locals.get("self")
        module = getattr(module, "_orig_mod", module)  # a torch.compile wrapper: its model
        if isinstance(module, torch.nn.Module) and graph.weights_key_of(module) == key:
            if graph.probe is not None:
                graph.probe.serve(key, module)
            name_streams_from_pipeline(module, graph)
            return
        frame = frame.f_back


def name_streams_from_pipeline(owner: torch.nn.Module, graph) -> None:
    """Streams take the names a diffusers pipeline gives its calls (``cache_context``), and a
    pipeline's return ends the generation of every stream of ``owner``."""

    def end_generation():
        for _, table in registry.tables_of(owner):
            table.end_generation()

    listener = listen(owner, on_end=end_generation)
    key = graph.weights_key_of(owner)
    if listener is not None and key is not None:
        graph.stream_names[key] = lambda: listener.name
