"""Rank-consistent decisions under context parallelism: the step's one collective.

Under context parallelism (diffusers' Ulysses or ring attention) every rank runs the same call
of the denoiser on its shard of the sequence, and the collectives inside attention pair up only
while every rank runs the same pieces. A rank that reuses a step while another computes it waits
for ever in the next all-to-all. So every rank must take every decision from the same numbers.

What a rule measures is one of two kinds:

* **replicated**: the same on every rank, because it is computed from what every rank holds
  whole: the model's inputs, its output (gathered before it leaves the model), the probe's
  output (the probe is the same model at a lower resolution, so it is gathered too);
* **sharded**: a rank's part of a sum over the sequence, because it is computed from what lives
  between the split and the gather: the blocks' hidden states. A rule returns such a tensor
  wrapped in ``ShardSum``; the group's value is the sum over the ranks. A mean over a sharded
  tensor is two sums, the values' and the element count's (``shard_mean``): averaging per-rank
  means is wrong when shards differ in size (diffusers' ``ulysses_anything`` splits unevenly).

``agree`` turns a step's packed measurements into the numbers every rank decides on, with ONE
collective: an all-gather of the packed vector over the context-parallel group, after which each
rank sums the sharded entries over the ranks (in rank order, so the sum is the same bits on every
rank) and takes the group's first rank's copy of the replicated ones. Replicated values need no
reduction, but taking one rank's copy costs nothing more in the same collective and keeps the
decisions identical even where a rank's inputs differ (a latent drawn with another seed): a
difference in the numbers then changes the output, never the schedule, and never hangs.
A step that measures nothing (a decision fixed in advance) makes no collective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ShardSum:
    """A measured tensor holding this rank's part of a sum over the sequence: under context
    parallelism the engine reads the sum over the ranks (alone, the tensor as it is)."""

    tensor: torch.Tensor


def shard_mean(x: torch.Tensor) -> tuple[ShardSum, ShardSum]:
    """The sum of ``x`` and its element count, for a mean over the whole sequence: divide the
    two numbers read back."""
    total = x.float().sum()
    return ShardSum(total), ShardSum(torch.full_like(total, float(x.numel())))


def unwrap(measured) -> tuple[torch.Tensor, bool]:
    """``(tensor, sharded)`` of a measured tensor or ``ShardSum``."""
    if isinstance(measured, ShardSum):
        return measured.tensor, True
    return measured, False


def agree(packed: torch.Tensor, sharded: torch.Tensor, group) -> torch.Tensor:
    """The packed measurements every rank of ``group`` decides on: summed over the ranks where
    ``sharded`` (a bool mask of ``packed``'s entries), the group's first rank's elsewhere. One
    all-gather; ``packed`` itself when ``group`` is None."""
    if group is None:
        return packed
    import torch.distributed as dist

    world = dist.get_world_size(group)
    gathered = torch.empty(world * packed.numel(), dtype=packed.dtype, device=packed.device)
    dist.all_gather_into_tensor(gathered, packed.contiguous(), group=group)
    ranks = gathered.view(world, packed.numel())
    total = ranks[0].clone()
    for r in range(1, world):
        total = total + ranks[r]
    return torch.where(sharded, total, ranks[0])
