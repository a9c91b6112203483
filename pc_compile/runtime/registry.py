"""Which compiled graphs can hold state for which model, so ``stats``/``reset`` find it.

Dynamo may hand the backend several graphs for one model (a recompilation for a new shape or
dtype, a graph break), and it serves every instance of a model class from the same graph
(parameters are graph inputs). So graphs are listed under the model's class (or, for a
compiled function, its code object), and each graph keeps state per set of weights
(``CachedGraph.tables``). ``tables_of(model)`` returns the model's own state in every graph.
"""

from __future__ import annotations

import weakref

import torch

# Held weakly: a graph lives as long as Dynamo's cache keeps it (torch._dynamo.reset() ends it).
_graphs: dict[object, list[weakref.ref]] = {}


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
    refs.append(weakref.ref(graph))


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
