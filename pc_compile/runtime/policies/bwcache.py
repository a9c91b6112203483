"""BWCache: reuse a block while its features barely change between steps (arXiv 2509.13789).

After each computed step, every block that ran is measured: the relative L1 change of its
output since the last time it ran,

    r_j = || h_j(now) - h_j(before) ||_1 / || h_j(before) ||_1

(over all its state outputs: video tokens, and text tokens for two-stream blocks). A block with
``r_j < threshold`` is bypassed for the next ``reuse_steps`` computed steps, returning its input
plus the residual ``D_j`` it had when it last ran (BlockCache's bypass), then runs again and is
measured again. Over a generation ``r_j`` traces the paper's U: large at the start and at the end
of sampling, small in between; ``stats(detail=True)`` lists it per step (``block_metric``).

``scope`` says what is compared with the threshold:

``"block"``  each block's own ``r_j``: blocks that settle early are reused longer (what the
             issue asks of this policy);
``"mean"``   the mean of ``r_j`` over the blocks measured, deciding for every block at once
             (the paper's indicator, Eq. 7: one decision per step).

Where we differ from the paper, and why: a bypassed block returns its input plus its cached
residual rather than its cached output, so that what the blocks before it computed afresh is
kept (with ``scope="mean"`` and every block bypassed the two are the same). The paper limits
reuse to the first half of the steps left after it triggers; we use the guards every policy
shares instead (``warmup_steps``, and the steps near the end of the schedule always compute).

Measured on the reference models (BENCHMARKS.md), the 12-block one included: BWCache loses to
uniform step skipping at equal compute, ``"mean"`` beats ``"block"`` by 1-3 dB in most settings,
and BWCache blocks under a step rule cost 8-17 dB against the step rule alone. Why: a block's
output is dominated by the residual stream (the block's own contribution is 5-18% of it), so a
2-5% change of the output hides a 4-15% change of the contribution that a bypass reuses.

Blocks the partition cannot bypass always run and are not measured. The measurements stay on
the device until the next step's decision read carries them to the host.
"""

from __future__ import annotations

import torch

from pc_compile.runtime.policies.base import StepPlan
from pc_compile.runtime.state import END_SPAN


class BWCache:
    def __init__(self, threshold: float, reuse_steps: int, scope: str, bypassable: list[bool],
                 warmup_steps: int, end_span: float = END_SPAN):
        self.threshold = threshold
        self.end_span = end_span
        self.reuse_steps = reuse_steps
        self.scope = scope
        self.bypassable = bypassable
        self.warmup_steps = warmup_steps

    def pending(self, state) -> torch.Tensor | None:
        """The measurements of the last computed step, not yet read by the host."""
        return state.cache.get("bw_pending")

    def absorb(self, state, values: list | None) -> list | None:
        """Turn the host copy of the measurements into reuse decisions; returns them."""
        if values is None:
            return None
        cache = state.cache
        cache.pop("bw_pending", None)
        left = cache.setdefault("bw_left", [0] * len(self.bypassable))
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

    def plan(self, state) -> StepPlan:
        cache = state.cache
        left = cache.setdefault("bw_left", [0] * len(self.bypassable))
        if (
            state.step_in_generation < self.warmup_steps
            or state.near_end(self.end_span)
            or "bw_residuals" not in cache
        ):
            left[:] = [0] * len(left)
            return StepPlan(record_blocks=True)
        compute = [n == 0 for n in left]
        for j, n in enumerate(left):
            if n:
                left[j] = n - 1
        if all(compute):
            return StepPlan(record_blocks=True)
        return StepPlan(compute_blocks=compute, residuals=cache["bw_residuals"],
                        record_blocks=True)

    def after(self, state, plan: StepPlan, record) -> None:
        cache = state.cache
        n = len(self.bypassable)
        residuals = cache.setdefault("bw_residuals", [None] * n)
        outputs = cache.setdefault("bw_outputs", [None] * n)
        device = next(o.device for outs in record.outputs for o in outs)
        values = []
        for j, (ins, outs) in enumerate(zip(record.inputs, record.outputs)):
            ran = plan.compute_blocks is None or plan.compute_blocks[j]
            before = outputs[j]
            if not ran or not self.bypassable[j] or before is None:
                values.append(torch.full((), float("nan"), device=device))
            else:
                change = sum(float_l1(o - b) for o, b in zip(outs, before))
                size = sum(float_l1(b) for b in before)
                values.append(change / size.clamp_min(torch.finfo(torch.float32).tiny))
            if ran:
                residuals[j] = tuple(o - i for i, o in zip(ins, outs))
                outputs[j] = tuple(o.detach() for o in outs)
        cache["bw_pending"] = torch.stack(values)


def float_l1(x: torch.Tensor) -> torch.Tensor:
    return x.float().abs().sum()
