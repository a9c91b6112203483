"""Trajectory: the predicted error of an extrapolated reuse, from the computed outputs alone.

A reused step returns the line through the last two computed outputs ``(t_b, v_b)``,
``(t_a, v_a)`` evaluated at its timestep ``t``. Where the prediction ``v(t)`` is smooth the
line's error is, to second order,

    v(t) - line(t)  ~=  v''/2 x (t - t_a)(t - t_b),

and the sampler adds that error to the latent times the step size it takes. ``v''`` is
estimated without any network evaluation from the last three computed outputs (their second
divided difference in the timestep), relative to the size of the output, at each computed step:
one reduction on the device, read with the next step's measurement. So the predicted error
grows with the curvature of the output's trajectory and with the square of the distance from
the last computed steps, which is what the probe's low-frequency distance does not see (it
measures how fast the prediction moves, and a fast but straight move extrapolates well).

Under ``compute_budget`` the rule only scores the steps (``Verdict.score``); alone it reuses
while the predicted relative error stays under ``traj_epsilon``. Until three steps have been
computed it has no estimate and the step computes (or, under a budget, is placed blindly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pc_compile.runtime import checks
from pc_compile.runtime.ownership import keep
from pc_compile.runtime.rules.base import RuleSetup, StepContext, Verdict
from pc_compile.runtime.rules.registry import register_step_rule
from pc_compile.runtime.rules.sencache import first_tensor, rms


@dataclass(frozen=True)
class TrajectoryOptions:
    """Trajectory's options.

    Attributes:
        traj_epsilon: without a budget, reuse while the predicted error of the extrapolated
            output, relative to the output's size, stays under it.
    """

    traj_epsilon: float = 0.02

    def __post_init__(self):
        checks.number("traj_epsilon", self.traj_epsilon, low=0.0, high=10.0, low_open=True)


@dataclass
class TrajectoryState:
    computed: list = field(default_factory=list)  # (t, output) of the last three computed
    curvature: torch.Tensor | None = None  # rms(v'') / rms(v) at the last computed step


@register_step_rule("trajectory", options=TrajectoryOptions)
class Trajectory:
    """The step rule: the extrapolation's second-order error under ``traj_epsilon``."""

    needs_probe = False

    def __init__(self, options: TrajectoryOptions, setup: RuleSetup):
        self.epsilon = options.traj_epsilon
        self.extrapolate = setup.extrapolates

    def new_state(self) -> TrajectoryState:
        return TrajectoryState()

    def measure(self, ctx: StepContext, state: TrajectoryState):
        if state.curvature is None or ctx.timestep is None:
            return None
        return [state.curvature]

    def conclude(self, ctx: StepContext, state: TrajectoryState, numbers: list) -> Verdict:
        (curvature,) = numbers
        t = ctx.timestep
        (t_b, _), (t_a, _) = state.computed[-2:]
        predicted = 0.5 * curvature * abs((t - t_a) * (t - t_b))
        info = {"metric": predicted, "threshold": self.epsilon, "curvature": curvature}
        return Verdict(reuse=predicted <= self.epsilon, extrapolate=self.extrapolate,
                       info=info, score=predicted)

    def after_full_step(self, ctx: StepContext, state: TrajectoryState, output) -> None:
        """Keep the output; with three, the relative second divided difference."""
        t = ctx.timestep
        if t is None:
            return
        v = keep(first_tensor(output))
        computed = state.computed
        computed.append((t, v))
        del computed[:-3]
        if len(computed) < 3:
            state.curvature = None
            return
        (t2, v2), (t1, v1), (t0, v0) = computed
        if not (t2 > t1 > t0):
            state.curvature = None
            return
        slope_new = (v0 - v1) / (t0 - t1)
        slope_old = (v1 - v2) / (t1 - t2)
        second = 2 * (slope_new - slope_old) / (t0 - t2)
        scale = rms(v0).clamp_min(torch.finfo(torch.float32).tiny)
        state.curvature = rms(second) / scale
