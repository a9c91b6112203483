"""A step rule that sees a different number on each rank: the test hook for rank consistency.

``skewed`` measures ``rank`` (0 on the first rank, 1 on the second, ...) as a tensor and reuses
the step when the number it reads is under ``skew_threshold`` (0.5). Read as it is, rank 0 would
reuse and rank 1 compute, and rank 1 would wait in the next all-to-all for a rank that never
comes. ``skew_sharded=False`` hands the number over as replicated (every rank decides on the
first rank's copy: 0, reuse); ``True`` as a rank's part of a sum (every rank decides on
0 + 1 = 1, compute). Either way the ranks must agree, and the trace records the number read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from pc_compile.runtime.distributed import ShardSum
from pc_compile.runtime.rules import RuleSetup, StepContext, Verdict, register_step_rule


@dataclass(frozen=True)
class SkewedOptions:
    """skew_threshold: reuse while the number read is under it; skew_sharded: hand the rank
    over as a sharded sum (True) or as a replicated value (False)."""

    skew_threshold: float = 0.5
    skew_sharded: bool = False


@register_step_rule("skewed", options=SkewedOptions)
class Skewed:
    needs_probe = False

    def __init__(self, options: SkewedOptions, setup: RuleSetup):
        self.options = options

    def new_state(self):
        return None

    def measure(self, ctx: StepContext, state):
        mine = torch.tensor(float(dist.get_rank()) if dist.is_initialized() else 0.0)
        return [ShardSum(mine) if self.options.skew_sharded else mine]

    def conclude(self, ctx: StepContext, state, numbers: list) -> Verdict:
        (seen,) = numbers
        return Verdict(reuse=seen < self.options.skew_threshold, info={"skew_seen": seen})

    def after_full_step(self, ctx: StepContext, state, output) -> None:
        pass
