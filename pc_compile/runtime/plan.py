"""What the engine tells the graph runner for one step: ``StepPlan``, and what it hands back.

A step either reuses the cache in one of the ``ReuseForm``s, or is computed, possibly with some
blocks bypassed (each bypassed block returns its state inputs plus a cached residual). A computed
step can be asked to record the blocks' state inputs and outputs (``BlockRecord``), which the
block rules measure, and the chain residual, which the residual reuse forms need.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch


class ReuseForm(enum.Enum):
    """How a reused step builds its output; the value is what the trace records."""

    LAST_OUTPUT = "output"  # the last computed output, as it was
    EXTRAPOLATION = "extrapolate"  # linear in the timestep through the last two outputs
    CHAIN_RESIDUAL = "residual"  # the last chain residual through this step's prologue/epilogue
    EXTRAPOLATED_CHAIN_RESIDUAL = "residual_extrapolate"  # the same, residual extrapolated

    @property
    def uses_chain(self) -> bool:
        return self in (ReuseForm.CHAIN_RESIDUAL, ReuseForm.EXTRAPOLATED_CHAIN_RESIDUAL)


@dataclass
class StepPlan:
    reuse: ReuseForm | None = None  # None: compute the step
    compute_blocks: list[bool] | None = None  # None: compute every block
    residuals: list[tuple[torch.Tensor, ...] | None] | None = None  # per bypassed block
    record_blocks: bool = False  # hand the blocks' inputs/outputs to after_full_step
    record_chain: bool = False  # hand the chain residual (last block out - first block in)
    block_plan: object = None  # the block rule's own plan of this step (``rules.BlockPlan``)
    record_tail: int | None = None  # hand the residual from block k's input to the last output
    partial: int | None = None  # a budget's partial step: the first k blocks computed
    followers: int = 0  # guidance branches that followed this plan (the engine counts them)


@dataclass
class BlockRecord:
    """Per block, in order: the state inputs and outputs of a computed step."""

    inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    outputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    chain_residual: tuple[torch.Tensor, ...] | None = None
    tail_residual: tuple[torch.Tensor, ...] | None = None  # last block out - block k's input
