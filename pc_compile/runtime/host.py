"""The step's one device-to-host read.

Every rule hands the engine the device tensors it needs on the host; the engine packs them all
into one tensor and reads it with a single ``.tolist()``, so a step costs at most one
synchronisation however many rules measured something, and none when nothing was measured.

Under context parallelism (``group``: the process group the sequence is split over) the values
that decide the step (the first ``shared`` groups) first go through ``distributed.agree``, one
collective, so that every rank reads the same numbers: the sum over the ranks of what a rule
handed over as ``ShardSum``, the first rank's copy of the rest. The other groups (values only
the trace needs, carried along) are read as this rank has them: their number can differ
between ranks (``stats`` reads what is left of them on the rank it is called on), and a
collective must have the same size on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pc_compile.runtime.distributed import agree, unwrap


def read_host(*groups: Sequence | None, group=None, shared: int | None = None
              ) -> list[list | None]:
    """The host copy of each group of tensors (None stays None), in one read.

    Within a group, each tensor (or ``ShardSum``) comes back as a float when it has no
    dimensions, and as the flat list of its values (as floats) otherwise. ``group``: the
    context-parallel process group over which the first ``shared`` groups (all by default) are
    agreed, or None."""
    groups = [None if g is None else [unwrap(m) for m in g] for g in groups]
    flat = [t.reshape(-1).float() for g in groups if g for t, _ in g]
    if not flat:
        return [None if g is None else [] for g in groups]
    packed = torch.cat(flat)
    agreed = [g for g in groups[:len(groups) if shared is None else shared] if g]
    if group is not None and agreed:
        sharded = torch.cat([torch.full((t.numel(),), s, dtype=torch.bool, device=packed.device)
                             for g in agreed for t, s in g])
        n = sharded.numel()
        packed = torch.cat([agree(packed[:n], sharded, group), packed[n:]])
    packed = packed.tolist()
    values: list[list | None] = []
    start = 0
    for g in groups:
        if g is None:
            values.append(None)
            continue
        numbers = []
        for t, _ in g:
            n = t.numel()
            numbers.append(packed[start] if t.dim() == 0 else packed[start:start + n])
            start += n
        values.append(numbers)
    return values
