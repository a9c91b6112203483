"""What a stream keeps across steps, in bytes: its reuse history and its rules' states.

``kept_bytes`` walks the tensors held by an object (dataclasses, lists, tuples, dicts) and
sums their storages, each storage once: a view and its base count once, as they share memory.
``stats()`` reports it per stream (``per_stream[name]["kept_bytes"]``, split by owner in
``per_stream[name]["kept"]``) and in total.
"""

from __future__ import annotations

import dataclasses

import torch


def kept_tensors(obj):
    """Every tensor reachable from ``obj`` through dataclasses, lists, tuples and dicts."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))


def kept_bytes(obj, seen: set | None = None) -> int:
    """Bytes of the tensor storages reachable from ``obj``, not counting those in ``seen``
    (which is updated)."""
    seen = set() if seen is None else seen
    total = 0
    for t in kept_tensors(obj):
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr())
        if key not in seen and storage.nbytes():
            seen.add(key)
            total += storage.nbytes()
    return total
