"""SenCache: reuse while the output's sensitivity predicts a small change (arXiv 2602.24208).

SenCache bounds the error of reusing the output computed at ``(x_a, t_a)`` at a later step
``(x, t)`` to first order by the model's sensitivity to its inputs::

    || f(x, t) - f(x_a, t_a) ||  <~  ||J_x|| ||x - x_a|| + ||J_t|| |t - t_a|

and reuses while that bound stays under ``epsilon`` (at most ``max_reuse`` steps in a row, the
engine's run cap). The latent and the timestep are inputs of every call, so the bound costs no
network evaluation: only the sensitivities must be estimated.

How we estimate them: from the last two computed steps ``b`` and ``a`` of this sample, as a
finite difference along the sampling trajectory,

    s = rms(v_a - v_b) / rms(x_a - x_b),    predicted change = s * rms(x - x_a) / rms(v_a).

The sampler moves the latent along its trajectory by an amount that grows with the timestep
gap, so one directional sensitivity carries both of the paper's terms. It is measured on this
sample at full resolution, which makes the rule adapt per sample, and costs two reductions per
computed step. Why not the paper's norms from forward-mode JVPs (``torch.func.jvp``)? Compared
on the reference models over 150 (anchor, step) pairs each (``examples/sensitivity_design.py``):

* accuracy: Spearman's correlation with the true change 0.82-0.87 for the finite difference,
  0.69 for the probe JVPs, 0.61-0.65 for full JVPs; the finite difference is also the best
  calibrated (median prediction / truth 1.25-1.44, against 10-37 for the JVP bounds: along the
  trajectory the latent's and the timestep's effects largely cancel, which a sum of norms
  cannot see);
* cost: none, against 0.5-3.3 full forward passes per computed step for the probe JVPs and
  16-27 for full JVPs; JVPs also need the math attention kernel, since fused attention has no
  forward-mode derivative.

The official code instead calibrates ``||J_x||`` and ``||J_t||`` offline per timestep, which
needs data and a calibration run per model. The prediction is relative (the change over
``rms(v_a)``), so one ``epsilon`` carries across models and resolutions. A prediction that is
not finite computes (also when the latent did not move between the two computed steps: then
nothing is known).

A reused step extrapolates the last two computed outputs (``step_reuse="extrapolate"``): on
cogvideox-tiny, Euler, ``epsilon`` 0.05, 48.2 dB at 0.47 compute against 41.4 dB with the last
output as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pc_compile.runtime import checks
from pc_compile.runtime.ownership import keep
from pc_compile.runtime.rules.base import RuleSetup, RuleUnsupported, StepContext, Verdict
from pc_compile.runtime.rules.registry import register_step_rule


@dataclass(frozen=True)
class SenCacheOptions:
    """SenCache's options.

    Attributes:
        sen_epsilon: the threshold: reuse while the predicted relative change of the output
            since the last computed step stays under it.
    """

    sen_epsilon: float = 0.05

    def __post_init__(self):
        checks.number("sen_epsilon", self.sen_epsilon, low=0.0, high=10.0, low_open=True)


@dataclass
class Anchor:
    """The last computed step: its latent, output, output size and measured sensitivity."""

    x: torch.Tensor
    v: torch.Tensor
    scale: torch.Tensor
    sensitivity: torch.Tensor | None  # None until two steps were computed


@dataclass
class SenCacheState:
    anchor: Anchor | None = None


def rms(x: torch.Tensor) -> torch.Tensor:
    return x.float().square().mean().sqrt()


def first_tensor(output) -> torch.Tensor:
    """The prediction among a model's outputs: the output itself, or its first tensor."""
    if isinstance(output, torch.Tensor):
        return output
    for item in output:
        if isinstance(item, torch.Tensor):
            return item
    raise TypeError("the model returned no tensor; SenCache needs its prediction")


@register_step_rule("sencache", options=SenCacheOptions)
class SenCache:
    """The step rule: the predicted change under ``sen_epsilon``."""

    needs_probe = False

    def __init__(self, options: SenCacheOptions, setup: RuleSetup):
        if not setup.has_latent:
            raise RuleUnsupported(
                "step_rule='sencache' measures how far the latent moved since the last "
                "computed step, but no input of this graph was recognised as the latent "
                "(hidden_states, x, latents, latent, sample, img)"
            )
        self.epsilon = options.sen_epsilon
        self.extrapolate = setup.extrapolates

    def new_state(self) -> SenCacheState:
        return SenCacheState()

    def measure(self, ctx: StepContext, state: SenCacheState):
        anchor = state.anchor
        if anchor is None or anchor.sensitivity is None:  # nothing measured yet: compute
            return None
        predicted = anchor.sensitivity * rms(ctx.latent - anchor.x) / anchor.scale
        if not ctx.may_reuse:  # the step computes: the prediction only goes to the trace
            info = {"metric": predicted, "threshold": self.epsilon,
                    "sensitivity": anchor.sensitivity}
            return Verdict(reuse=False, extrapolate=self.extrapolate, info=info)
        return [predicted, anchor.sensitivity]

    def conclude(self, ctx: StepContext, state: SenCacheState, numbers: list) -> Verdict:
        predicted, sensitivity = numbers
        info = {"metric": predicted, "threshold": self.epsilon, "sensitivity": sensitivity}
        return Verdict(reuse=predicted <= self.epsilon,  # False for NaN
                       extrapolate=self.extrapolate, info=info, score=predicted)

    def after_full_step(self, ctx: StepContext, state: SenCacheState, output) -> None:
        """Measure the sensitivity between this computed step and the one before it."""
        x = ctx.latent.detach().clone()
        v = keep(first_tensor(output))
        before = state.anchor
        sensitivity = None
        if before is not None:
            moved = rms(x - before.x)
            sensitivity = torch.where(moved > 0, rms(v - before.v) / moved,
                                      torch.full_like(moved, float("inf")))
        scale = rms(v).clamp_min(torch.finfo(torch.float32).tiny)
        state.anchor = Anchor(x, v, scale, sensitivity)
