"""Which compiled graphs belong to which model, so that ``stats``/``reset`` can find them.

Dynamo may hand the backend several graphs for one model (a recompilation for a new shape or
dtype, a graph break); each becomes a ``CachedGraph`` with state of its own. They are listed
under the model they came from: the ``nn.Module`` (held weakly) or, for a compiled function,
its code object. Two models never share an entry, so never share state.
"""

from __future__ import annotations

import weakref

_by_module: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_by_code: dict = {}


def register(owner, graph) -> None:
    table = _by_code if owner is None or not _weakrefable(owner) else _by_module
    table.setdefault(owner, []).append(graph)


def graphs_of(owner) -> list:
    if owner is None:
        return []
    table = _by_module if _weakrefable(owner) else _by_code
    return list(table.get(owner, []))


def _weakrefable(obj) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True
