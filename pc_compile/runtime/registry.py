"""Which compiled graphs can hold state for which model, so ``stats``/``reset`` find it.

Dynamo may hand the backend several graphs for one model (a recompilation for a new shape or
dtype, a graph break), and it serves every instance of a model class from the same graph
(parameters are graph inputs). So graphs are listed under the model's class (or, for a
compiled function, its code object), and each graph keeps state per set of weights
(``CachedGraph.tables``). ``tables_of(model)`` returns the model's own state in every graph.

A graph that runs a lower tier than asked (without caching, or as plain Inductor) is recorded
too, under the model's class as its graphs are: ``fallbacks_of(model)`` lets ``stats`` say that
the model fell back and why.
"""

from __future__ import annotations

import weakref

import torch

# Held weakly: a graph lives as long as Dynamo's cache keeps it (torch._dynamo.reset() ends it).
_graphs: dict[object, list[weakref.ref]] = {}
# Per model kind, like the graphs (a graph serves every instance of a class): the fallbacks.
_fallbacks: dict[object, list[dict]] = {}


def register(owner, graph) -> None:
    """List ``graph`` for ``owner``'s kind. Graphs compiled earlier for this very model with
    another configuration are forgotten: a new ``torch.compile`` of the model replaces them,
    and ``stats`` must describe what runs now."""
    refs = _graphs.setdefault(_kind(owner), [])
    if isinstance(owner, torch.nn.Module):
        kept = []
        for ref in refs:
            old = ref()
            if old is None:
                continue
            key = old.weights_key_of(owner)
            if old.config != graph.config and key is not None and key in old.tables:
                continue
            kept.append(ref)
        refs[:] = kept
        # What ran before under another configuration no longer describes this model.
        old = _fallbacks.get(_kind(owner), [])
        old[:] = [f for f in old if f.get("config") == graph.config]
    refs.append(weakref.ref(graph))


def record_fallback(owner, ran: str, reason: str, config=None) -> None:
    """Note that a graph of ``owner`` runs ``ran`` (a lower tier than asked) because of
    ``reason``; repeated records of one tier and reason are kept once."""
    if owner is None:
        return
    entry = {"ran": ran, "reason": reason, "config": config}
    found = _fallbacks.setdefault(_kind(owner), [])
    if entry not in found:
        found.append(entry)


def fallbacks_of(owner) -> list[dict]:
    """``{"ran", "reason"}`` for each fallback recorded for ``owner``, oldest first."""
    if owner is None:
        return []
    found = _fallbacks.get(_kind(owner))
    return [{"ran": f["ran"], "reason": f["reason"]} for f in found or []]


def tables_of(owner) -> list:
    """``(graph, table)`` for every graph that has run ``owner``, in compilation order."""
    found = []
    for ref in _graphs.get(_kind(owner), []):
        graph = ref()
        if graph is None:
            continue
        key = graph.weights_key_of(owner) if isinstance(owner, torch.nn.Module) else ("any",)
        table = graph.tables.get(key) if key is not None else None
        if table is not None:
            found.append((graph, table))
    return found


def _kind(owner):
    return type(owner) if isinstance(owner, torch.nn.Module) else owner
