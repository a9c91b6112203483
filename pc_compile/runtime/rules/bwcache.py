"""BWCache: reuse a block while its features barely change between steps (arXiv 2509.13789).

After each computed step, every block that ran is measured: the relative L1 change of its
output since the last time it ran,

    r_j = || h_j(now) - h_j(before) ||_1 / || h_j(before) ||_1

(over all its state outputs: video tokens, and text tokens for two-stream blocks). A block with
``r_j < threshold`` is bypassed for the next ``bw_reuse_steps`` computed steps, returning its
input plus the residual ``D_j`` it had when it last ran (BlockCache's bypass), then runs again
and is measured again. Over a generation ``r_j`` traces the paper's U: large at the start and at
the end of sampling, small in between; ``stats(detail=True)`` lists it per step
(``block_metric``).

``bw_scope`` says what is compared with the threshold:

``"block"``  each block's own ``r_j``: blocks that settle early are reused longer;
``"mean"``   the mean of ``r_j`` over the blocks measured, deciding for every block at once
             (the paper's indicator, Eq. 7: one decision per step).

Where we differ from the paper, and why: a bypassed block returns its input plus its cached
residual rather than its cached output, so that what the blocks before it computed afresh is
kept (with ``scope="mean"`` and every block bypassed the two are the same). The paper limits
reuse to the first half of the steps left after it triggers; we use the guards every rule
shares instead (the warm-up, and the steps near the end of the schedule always compute all
blocks).

Measured on the reference models, BWCache loses to uniform step skipping at equal compute,
``"mean"`` beats ``"block"`` by 1-3 dB in most settings, and BWCache blocks under a step rule
cost 8-17 dB against the step rule alone. Why: a block's output is dominated by the residual
stream (the block's own contribution is 5-18% of it), so a 2-5% change of the output hides a
4-15% change of the contribution that a bypass reuses.

Blocks the partition cannot bypass always run and are not measured. The measurements stay on
the device until the next step's decision read carries them to the host. Under context
parallelism a block's states are a shard of the sequence: each rank hands over the two L1 sums
of ``r_j`` (``ShardSum``), the engine sums them over the ranks, and the ratio is taken of the
sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pc_compile.runtime import checks
from pc_compile.runtime.distributed import ShardSum
from pc_compile.runtime.ownership import keep
from pc_compile.runtime.plan import BlockRecord
from pc_compile.runtime.rules.base import BlockPlan, Later, RuleSetup, StepContext
from pc_compile.runtime.rules.registry import register_block_rule

BW_SCOPES = ("block", "mean")


@dataclass(frozen=True)
class BWCacheOptions:
    """BWCache's options.

    Attributes:
        bw_threshold: the threshold on the relative L1 change of a block's output (paper:
            0.15 / 0.20 / 0.25 for slow / mid / fast).
        bw_reuse_steps: computed steps a block stays bypassed once it is found calm.
        bw_scope: ``"block"``, each block decides by its own change; ``"mean"``, the mean
            change over the blocks decides for all of them (the paper's indicator).
    """

    bw_threshold: float = 0.15
    bw_reuse_steps: int = 2
    bw_scope: str = "block"

    def __post_init__(self):
        checks.number("bw_threshold", self.bw_threshold, low=0.0, high=10.0, low_open=True)
        checks.integer("bw_reuse_steps", self.bw_reuse_steps, low=1)
        checks.choice("bw_scope", self.bw_scope, BW_SCOPES)


@dataclass
class BWCacheState:
    pending: tuple | None = None  # the last computed step's L1 sums of r_j, not yet read
    left: list[int] | None = None  # per block: computed steps it stays bypassed
    residuals: list | None = None  # per block, its D_j when it last ran
    outputs: list | None = None  # per block, its state outputs when it last ran


def float_l1(x: torch.Tensor) -> torch.Tensor:
    return x.float().abs().sum()


def ratios(numbers: list) -> list[float]:
    """``r_j`` from the host copy of the two sums per block (NaN: not measured)."""
    tiny = torch.finfo(torch.float32).tiny
    return [c / max(s, tiny) if c == c else c for c, s in zip(*numbers)]


@register_block_rule("bwcache", options=BWCacheOptions)
class BWCache:
    def __init__(self, options: BWCacheOptions, setup: RuleSetup):
        self.threshold = options.bw_threshold
        self.reuse_steps = options.bw_reuse_steps
        self.scope = options.bw_scope
        self.bypassable = list(setup.bypassable)

    def new_state(self) -> BWCacheState:
        return BWCacheState()

    def _left(self, state: BWCacheState) -> list[int]:
        if state.left is None:
            state.left = [0] * len(self.bypassable)
        return state.left

    def measure(self, ctx: StepContext, state: BWCacheState):
        if state.pending is None:
            return None
        if ctx.warmup or ctx.near_end:  # every block computes: the values go to the trace only
            pending, state.pending = state.pending, None
            return Later([ShardSum(t) for t in pending],
                         lambda numbers: [v if v == v else None for v in ratios(numbers)])
        return [ShardSum(t) for t in state.pending]

    def conclude(self, ctx: StepContext, state: BWCacheState, numbers: list) -> list:
        """Turn the host copy of the measurements into reuse decisions; returns them."""
        values = ratios(numbers)
        state.pending = None
        left = self._left(state)
        measured = [j for j, v in enumerate(values) if self.bypassable[j] and v == v]
        if self.scope == "mean":
            mean = sum(values[j] for j in measured) / len(measured) if measured else float("nan")
            calm = {j for j in measured if mean < self.threshold}
        else:
            calm = {j for j in measured if values[j] < self.threshold}
        for j in calm:
            if left[j] == 0:
                left[j] = self.reuse_steps
        return [v if v == v else None for v in values]

    def plan(self, ctx: StepContext, state: BWCacheState) -> BlockPlan:
        left = self._left(state)
        if ctx.warmup or ctx.near_end or state.residuals is None:
            left[:] = [0] * len(left)
            return BlockPlan(record_blocks=True)
        compute = [n == 0 for n in left]
        for j, n in enumerate(left):
            if n:
                left[j] = n - 1
        if all(compute):
            return BlockPlan(record_blocks=True)
        return BlockPlan(compute_blocks=compute, residuals=state.residuals, record_blocks=True)

    def after(self, ctx: StepContext, state: BWCacheState, plan: BlockPlan,
              record: BlockRecord | None) -> None:
        n = len(self.bypassable)
        if state.residuals is None:
            state.residuals = [None] * n
        if state.outputs is None:
            state.outputs = [None] * n
        residuals, outputs = state.residuals, state.outputs
        device = next(o.device for outs in record.outputs for o in outs)
        changes, sizes = [], []
        for j, (ins, outs) in enumerate(zip(record.inputs, record.outputs)):
            ran = plan.compute_blocks is None or plan.compute_blocks[j]
            before = outputs[j]
            if not ran or not self.bypassable[j] or before is None:
                changes.append(torch.full((), float("nan"), device=device))
                sizes.append(torch.ones((), device=device))
            else:
                changes.append(sum(float_l1(o - b) for o, b in zip(outs, before)))
                sizes.append(sum(float_l1(b) for b in before))
            if ran:
                residuals[j] = keep(tuple(o - i for i, o in zip(ins, outs)))
                outputs[j] = keep(tuple(outs))
        state.pending = (torch.stack(changes), torch.stack(sizes))
