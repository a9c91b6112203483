"""The step's one device-to-host read.

Every rule hands the engine the device tensors it needs on the host; the engine packs them all
into one tensor and reads it with a single ``.tolist()``, so a step costs at most one
synchronisation however many rules measured something, and none when nothing was measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def read_host(*groups: Sequence[torch.Tensor] | None) -> list[list | None]:
    """The host copy of each group of tensors (None stays None), in one read.

    Within a group, each tensor comes back as a float when it has no dimensions, and as the
    flat list of its values (as floats) otherwise."""
    flat = [t.reshape(-1).float() for group in groups if group for t in group]
    if not flat:
        return [None if group is None else [] for group in groups]
    packed = torch.cat(flat).tolist()
    values: list[list | None] = []
    start = 0
    for group in groups:
        if group is None:
            values.append(None)
            continue
        numbers = []
        for t in group:
            n = t.numel()
            numbers.append(packed[start] if t.dim() == 0 else packed[start:start + n])
            start += n
        values.append(numbers)
    return values
