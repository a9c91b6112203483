"""BlockCache: in a computed step, run only the pivotal blocks; bypass the rest.

After a step that computed every block, each block's input-output difference
``D_j = F_j - F_(j-1)`` is kept (per state slot: the video tokens, and for two-stream blocks the
text tokens) and its size ``||D_j||`` ranked. For the next ``pivotal_steps`` computed steps only
the top ``pivotal_fraction`` of blocks run; every other block returns ``F_(j-1) + D_j``. Then a
step computes every block again and the ranking is refreshed.

Blocks the partition cannot bypass (no state slots) always run and are not ranked. Under
context parallelism a block's states are a shard of the sequence: each rank hands over its sums
of squares (``ShardSum``), the engine sums them over the ranks, and the norm is taken of the sum.
The ranking's norms stay on the device until the next step's decision read carries them to the
host, so refreshing costs no extra synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pc_compile.runtime import checks
from pc_compile.runtime.distributed import ShardSum
from pc_compile.runtime.ownership import keep
from pc_compile.runtime.plan import BlockRecord
from pc_compile.runtime.rules.base import BlockPlan, RuleSetup, StepContext
from pc_compile.runtime.rules.registry import register_block_rule


@dataclass(frozen=True)
class BlockCacheOptions:
    """BlockCache's options.

    Attributes:
        pivotal_fraction: the fraction of blocks computed (paper flash: 0.4).
        pivotal_steps: computed steps that reuse one ranking before every block runs again
            (paper flash: L = 3).
    """

    pivotal_fraction: float = 0.4
    pivotal_steps: int = 3

    def __post_init__(self):
        checks.number("pivotal_fraction", self.pivotal_fraction, low=0.0, high=1.0,
                      low_open=True)
        checks.integer("pivotal_steps", self.pivotal_steps, low=1)


@dataclass
class BlockCacheState:
    pending: torch.Tensor | None = None  # squared norms of the last refresh, not yet read
    pivotal: list[bool] | None = None  # per block: runs until the next refresh
    norms: list[float] | None = None  # the host copy of the last refresh's norms
    residuals: list | None = None  # per block, its D_j of the last refresh
    steps_since_refresh: int | None = None


@register_block_rule("blockcache", options=BlockCacheOptions)
class BlockCache:
    def __init__(self, options: BlockCacheOptions, setup: RuleSetup):
        self.pivotal_steps = options.pivotal_steps
        self.bypassable = list(setup.bypassable)
        candidates = sum(self.bypassable)
        forced = len(self.bypassable) - candidates
        # Blocks that cannot be bypassed count towards the computed fraction.
        wanted = math.ceil(options.pivotal_fraction * len(self.bypassable) - 1e-9)
        self.pivotal_count = min(candidates, max(0, wanted - forced))

    def new_state(self) -> BlockCacheState:
        return BlockCacheState()

    def measure(self, ctx: StepContext, state: BlockCacheState):
        return None if state.pending is None else [ShardSum(state.pending)]

    def conclude(self, ctx: StepContext, state: BlockCacheState, numbers: list) -> list:
        """Rank the blocks by the host copy of the norms; returns the norms."""
        norms = [math.sqrt(max(s, 0.0)) if s == s else s for s in numbers[0]]
        state.pending = None
        order = sorted(
            (i for i, ok in enumerate(self.bypassable) if ok), key=lambda i: -norms[i]
        )
        pivotal = set(order[: self.pivotal_count])
        state.pivotal = [(not ok) or i in pivotal for i, ok in enumerate(self.bypassable)]
        state.norms = norms
        return norms

    def plan(self, ctx: StepContext, state: BlockCacheState) -> BlockPlan:
        since = state.steps_since_refresh
        if state.pivotal is None or since is None or since >= self.pivotal_steps:
            return BlockPlan(record_blocks=True)
        return BlockPlan(compute_blocks=list(state.pivotal), residuals=state.residuals)

    def after(self, ctx: StepContext, state: BlockCacheState, plan: BlockPlan,
              record: BlockRecord | None) -> None:
        if plan.compute_blocks is not None:
            state.steps_since_refresh += 1
            return
        # A refresh: every block ran.
        residuals = []
        norms = []
        device = next(o.device for outs in record.outputs for o in outs)
        for ins, outs in zip(record.inputs, record.outputs):
            deltas = keep(tuple(o - i for i, o in zip(ins, outs)))
            residuals.append(deltas)
            squares = [d.float().square().sum() for d in deltas]
            norms.append(torch.stack(squares).sum() if squares
                         else torch.zeros((), device=device))
        state.residuals = residuals
        state.pending = torch.stack(norms)
        state.steps_since_refresh = 0
        state.pivotal = None
