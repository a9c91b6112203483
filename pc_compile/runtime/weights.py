"""Whose weights a call runs: one key per parameter object, stable while the weights move.

Dynamo serves every instance of a model class from one graph, the parameters being graph
inputs, so the runtime tells the models apart by one parameter input (``InputRoles.weights``).
The key is that Parameter object's identity, not its storage: ``module.to(device)`` keeps each
Parameter and gives it new storage (``param.data``), and accelerate's offload hooks
(``pipe.enable_model_cpu_offload()``) move the model at every generation (on a GPU) or at every
call (with a CPU execution device). Keyed by ``data_ptr``, each move made a new cache and hid
the model's state from ``stats``. The key is a serial number per live object, not ``id``, which
Python reuses once an object is freed.
"""

from __future__ import annotations

import itertools
import weakref

import torch

_serials = itertools.count()
_keys: dict[int, tuple[weakref.ref, tuple]] = {}


def weights_identity(parameter: torch.Tensor) -> tuple:
    """The key of the weights ``parameter`` belongs to: equal for the same object, wherever
    its storage lives."""
    address = id(parameter)
    entry = _keys.get(address)
    if entry is None or entry[0]() is not parameter:
        key = ("weights", next(_serials))
        entry = _keys[address] = (weakref.ref(parameter, _forget(address, key)), key)
    return entry[1]


def _forget(address: int, key: tuple):
    def forget(_ref) -> None:
        entry = _keys.get(address)
        if entry is not None and entry[1] == key:
            del _keys[address]

    return forget
