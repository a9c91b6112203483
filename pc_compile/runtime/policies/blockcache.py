"""BlockCache: in a computed step, run only the pivotal blocks; bypass the rest.

After a step that computed every block, each block's input-output difference
``D_j = F_j - F_(j-1)`` is kept (per state slot: the video tokens, and for two-stream blocks the
text tokens) and its size ``||D_j||`` ranked. For the next ``pivotal_steps`` computed steps only
the top ``pivotal_fraction`` of blocks run; every other block returns ``F_(j-1) + D_j``. Then a
step computes every block again and the ranking is refreshed.

Blocks the partition cannot bypass (no state slots) always run and are not ranked. The
ranking's norms stay on the device until the next step's decision read carries them to the
host, so refreshing costs no extra synchronisation.
"""

from __future__ import annotations

import math

import torch

from pc_compile.runtime.policies.base import StepPlan


class BlockCache:
    def __init__(self, pivotal_fraction: float, pivotal_steps: int, bypassable: list[bool]):
        self.pivotal_fraction = pivotal_fraction
        self.pivotal_steps = pivotal_steps
        self.bypassable = bypassable
        candidates = sum(bypassable)
        forced = len(bypassable) - candidates
        # Blocks that cannot be bypassed count towards the computed fraction.
        wanted = math.ceil(pivotal_fraction * len(bypassable) - 1e-9)
        self.pivotal_count = min(candidates, max(0, wanted - forced))

    def pending(self, state) -> torch.Tensor | None:
        """Norms measured on the last refresh, not yet read by the host."""
        return state.cache.get("block_norms_pending")

    def absorb(self, state, norms: list | None) -> list | None:
        """Rank the blocks by the host copy of the norms; returns the norms."""
        if norms is None:
            return None
        state.cache.pop("block_norms_pending", None)
        order = sorted(
            (i for i, ok in enumerate(self.bypassable) if ok), key=lambda i: -norms[i]
        )
        pivotal = set(order[: self.pivotal_count])
        state.cache["pivotal"] = [
            (not ok) or i in pivotal for i, ok in enumerate(self.bypassable)
        ]
        state.cache["block_norms"] = norms
        return norms

    def plan(self, state) -> StepPlan:
        cache = state.cache
        since = cache.get("steps_since_refresh")
        if "pivotal" not in cache or since is None or since >= self.pivotal_steps:
            return StepPlan(record_blocks=True)
        return StepPlan(compute_blocks=list(cache["pivotal"]), residuals=cache["residuals"])

    def after(self, state, plan: StepPlan, record) -> None:
        cache = state.cache
        if plan.compute_blocks is None:  # a refresh: every block ran
            residuals = []
            norms = []
            device = next(o.device for outs in record.outputs for o in outs)
            for ins, outs in zip(record.inputs, record.outputs):
                deltas = tuple(o - i for i, o in zip(ins, outs))
                residuals.append(deltas)
                squares = [d.float().square().sum() for d in deltas]
                norms.append(torch.stack(squares).sum().sqrt() if squares
                             else torch.zeros((), device=device))
            cache["residuals"] = residuals
            cache["block_norms_pending"] = torch.stack(norms)
            cache["steps_since_refresh"] = 0
            cache.pop("pivotal", None)
        else:
            cache["steps_since_refresh"] += 1
