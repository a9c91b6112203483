"""The guards every step rule shares, and the ``StepContext`` a rule sees.

No rule may reuse a step in the first ``warmup_steps`` of a generation, in the steps within
``end_span`` step sizes of t = 0 (the last steps are the largest, and a multistep sampler carries
a reuse's error one step further), when nothing is cached yet, or after ``max_reuse`` (> 0)
reused steps in a row. The engine applies them, so that every rule, a new one included, obeys
the same schedule limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pc_compile.runtime.rules.base import StepContext
from pc_compile.runtime.state import END_SPAN, StreamState


@dataclass(frozen=True)
class Guards:
    warmup_steps: int = 0
    max_reuse: int = 0  # 0: no limit
    end_span: float = END_SPAN

    def may_reuse(self, state: StreamState, run: int, has_cache: bool) -> bool:
        """Whether the guards let this step of ``state`` reuse, after ``run`` reuses in a row
        (``has_cache``: a computed result to reuse exists)."""
        return (
            state.step_in_generation >= self.warmup_steps
            and not state.near_end(self.end_span)
            and has_cache
            and not self.capped(run)
        )

    def capped(self, run: int) -> bool:
        """Whether ``run`` reuses in a row reach the cap (``max_reuse``; 0: none)."""
        return bool(self.max_reuse and run >= self.max_reuse)

    def context(self, state: StreamState, *, run: int = 0, has_cache: bool = True,
                follows: bool = False, latent: torch.Tensor | None = None,
                probe: Callable[[], torch.Tensor] | None = None) -> StepContext:
        """The ``StepContext`` of the step ``state`` has just entered."""
        return StepContext(
            step=state.step_in_generation,
            timestep=state.last_timestep,
            previous_timestep=state.previous_timestep,
            step_size=state.step_size(),
            warmup=state.step_in_generation < self.warmup_steps,
            near_end=state.near_end(self.end_span),
            may_reuse=self.may_reuse(state, run, has_cache),
            follows=follows,
            latent=latent,
            probe=probe,
        )
