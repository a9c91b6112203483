"""A step rule defined outside the package, in one file: reuse every ``toy_period``-th step.

Everything a new rule needs is here: its options (validated), its state, the rule behind the
``StepRule`` protocol, and its registration under a name. It measures on the device (whether
this step is one to reuse, as a tensor) so that its number travels in the engine's host read,
and it counts in its own state the computed steps it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pc_compile.runtime import checks
from pc_compile.runtime.rules import RuleSetup, StepContext, Verdict, register_step_rule


@dataclass(frozen=True)
class ToyOptions:
    """toy_period: every this many steps, one is reused (the last of each period)."""

    toy_period: int = 2

    def __post_init__(self):
        checks.integer("toy_period", self.toy_period, low=2)


@dataclass
class ToyState:
    computed: int = 0


@register_step_rule("toy", options=ToyOptions)
class EveryNthStep:
    needs_probe = False

    def __init__(self, options: ToyOptions, setup: RuleSetup):
        self.period = options.toy_period

    def new_state(self) -> ToyState:
        return ToyState()

    def measure(self, ctx: StepContext, state: ToyState):
        return [torch.tensor((ctx.step + 1) % self.period == 0)]

    def conclude(self, ctx: StepContext, state: ToyState, numbers: list) -> Verdict:
        wish = numbers[0] == 1.0
        return Verdict(reuse=wish, info={"toy_wish": wish, "toy_computed": state.computed})

    def after_full_step(self, ctx: StepContext, state: ToyState, output) -> None:
        state.computed += 1
