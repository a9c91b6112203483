"""SenCache: reuse while the output's sensitivity predicts a small change (arXiv 2602.24208).

SenCache bounds the error of reusing the output computed at ``(x_a, t_a)`` at a later step
``(x, t)`` to first order by the model's sensitivity to its inputs::

    || f(x, t) - f(x_a, t_a) ||  <~  ||J_x|| ||x - x_a|| + ||J_t|| |t - t_a|

and reuses while that bound stays under ``epsilon``, at most ``max_reuse`` steps in a row. The
latent and the timestep are inputs of every call, so the bound costs no network evaluation:
only the sensitivities must be estimated.

How we estimate them: from the last two computed steps ``b`` and ``a`` of this sample, as a
finite difference along the sampling trajectory,

    s = rms(v_a - v_b) / rms(x_a - x_b),    predicted change = s * rms(x - x_a) / rms(v_a).

The sampler moves the latent along its trajectory by an amount that grows with the timestep
gap, so one directional sensitivity carries both of the paper's terms. It is measured on this
sample at full resolution, which makes the rule adapt per sample, and costs two reductions per
computed step. ``examples/sensitivity_design.py`` compared it with forward-mode JVPs
(``torch.func.jvp``) of the paper's two norms, on the low-resolution probe and on the full
network, over 150 (anchor, step) pairs per reference model and scheduler (BENCHMARKS.md):

* accuracy: Spearman's correlation with the true change 0.82-0.87 for the finite difference,
  0.69 for the probe JVPs, 0.61-0.65 for full JVPs; the finite difference is also the best
  calibrated (median prediction / truth 1.25-1.44, against 10-37 for the JVP bounds: along the
  trajectory the latent's and the timestep's effects largely cancel, which a sum of norms
  cannot see);
* cost: none, against 0.5-3.3 full forward passes per computed step for the probe JVPs (on
  these tiny models, on the CPU) and 16-27 for full JVPs; JVPs also need the math attention
  kernel, since fused attention has no forward-mode derivative.

The official code instead calibrates ``||J_x||`` and ``||J_t||`` offline per timestep, which
needs data and a calibration run per model.

The prediction is relative (the change over ``rms(v_a)``), so one ``epsilon`` carries across
models and resolutions; the official code divides an absolute norm by ``sqrt(numel)`` instead.
The first ``warmup_steps`` and the steps near the end of the schedule always compute
(``base.guard``). A prediction that is not finite computes (also when the latent did not move
between the two computed steps: then nothing is known). One packed host read per step.

A reused step returns the linear extrapolation of the last two computed outputs (``step_reuse``
``"extrapolate"``, the preset's): on cogvideox-tiny, Euler, ``epsilon`` 0.05, 48.2 dB at 0.47
compute against 41.4 dB with the last output as it was (two prompts).
"""

from __future__ import annotations

import torch

from pc_compile.runtime.policies.base import guard, read_host
from pc_compile.runtime.state import END_SPAN


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


class SenCache:
    """The step rule. ``decide`` returns whether to reuse; ``after_full_step`` re-anchors."""

    def __init__(self, epsilon: float, warmup_steps: int, max_reuse: int, extrapolate: bool,
                 end_span: float = END_SPAN):
        self.epsilon = epsilon
        self.end_span = end_span
        self.warmup_steps = warmup_steps
        self.max_reuse = max_reuse
        self.extrapolate = extrapolate

    def decide(self, state, inputs, graph, extra: torch.Tensor | None = None):
        """(reuse?, trace info, host copy of ``extra``): one device-to-host read in all."""
        anchor = state.cache.get("sen_anchor")
        if anchor is None or anchor[3] is None:  # no sensitivity measured yet: compute
            return False, {}, read_host([], extra)[1]
        x_a, _, scale, sensitivity = anchor
        x = inputs[graph.roles.hidden]
        predicted = sensitivity * rms(x - x_a) / scale
        (predicted_v, sensitivity_v), host = read_host([predicted, sensitivity], extra)
        verdict = predicted_v <= self.epsilon  # False for NaN
        reuse = guard(state, graph, verdict, self.warmup_steps, self.max_reuse, self.end_span)
        info = {"metric": predicted_v, "threshold": self.epsilon, "sensitivity": sensitivity_v,
                "extrapolate": self.extrapolate}
        return reuse, info, host

    def after_full_step(self, state, inputs, output, graph) -> None:
        """Measure the sensitivity between this computed step and the one before it."""
        x = inputs[graph.roles.hidden].detach().clone()
        v = first_tensor(output).detach()
        before = state.cache.get("sen_anchor")
        sensitivity = None
        if before is not None:
            x_b, v_b = before[:2]
            moved = rms(x - x_b)
            sensitivity = torch.where(moved > 0, rms(v - v_b) / moved,
                                      torch.full_like(moved, float("inf")))
        scale = rms(v).clamp_min(torch.finfo(torch.float32).tiny)
        state.cache["sen_anchor"] = (x, v, scale, sensitivity)
