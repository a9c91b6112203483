"""LFCache: the step guard of PreciseCache, driven by the low-resolution probe.

Each step, the probe (``runtime/probe.py``) predicts at low resolution and its low-frequency
spectrum is taken (``runtime/lfd.py``). A low-frequency distance is accumulated over the steps
since the last computed one; the step reuses the cache while the sum stays under
``delta = alpha x`` the largest step-to-step LFD seen in this generation, as in the paper.
Otherwise the full network runs and the sum restarts.

What we keep and what we changed, from measurements on the reference models (BENCHMARKS.md,
"Design measurements"):

* the probe, the low-frequency view, the accumulation and the threshold are the paper's;
* a reused step returns the linear extrapolation (in the timestep) of the last two computed
  outputs (``step_reuse="extrapolate"``), not the last output: the prediction of a
  flow-matching model moves smoothly with the timestep, and on fixed schedules this keeps
  3-6 dB more PSNR;
* what is accumulated (``lfd_reference``). The paper's LFD, ``|| LF_i - LF_(i-1) ||``
  (``"previous"``, the presets), measures how fast the prediction moves, which is
  what a *plain* reuse gets wrong; the probe, its outputs extrapolated like the full outputs,
  then chooses per reused step between the extrapolation and the last output. An
  extrapolated reuse gets a steady movement right and only a change of direction wrong, so
  ``"cache"`` accumulates the distance to what the reuse would return, seen at
  low resolution: ``|| LF_i - extrapolation of LF at the last two computed steps ||``, and
  always extrapolates. Measured on the three reference models and two schedulers
  (BENCHMARKS.md, five prompts), neither wins everywhere: at alpha 0.7 ``"cache"`` is ahead
  at equal compute on five settings of six (by 0.5-1.3 dB), while at 37-47% compute it is
  behind on cogvideox-deep (by 0.9-2.5 dB), where long runs of reuses compound errors the
  low-resolution probe does not see;
* a schedule prior (presets base and turbo: ``warmup_steps=7`` or ``5``, ``max_reuse=1``).
  On five prompts, the accumulated-LFD rule spent its compute on worse steps than a plain
  prior: a few warm-up steps, then never two reuses in a row. Under a cap of one,
  ``alpha >= 1`` never vetoes (one step's LFD cannot exceed the largest seen), and what the
  probe adds is the choice of the reuse form, worth +3 to +5 dB on cogvideox-tiny and -1 to
  -4 dB on wan-tiny and cogvideox-deep against always extrapolating (BENCHMARKS.md, design
  measurement 13);
* the guidance branches of one step take one decision (``cached_graph.py``), so a reused
  step never pairs a fresh cond with a stale uncond;
* the last steps of a schedule, where the remaining timestep is within 1.5 steps of zero
  (the final step of Euler and UniPC schedules, and Euler's one before it), always compute:
  reusing them were the costliest single reuses measured.

The first ``warmup_steps`` of a generation always compute; ``max_reuse`` (0: no limit) caps the
reused steps in a row. A probe output that is not finite forces a full step and is counted
(``nonfinite_probes``). All arithmetic stays on the device; one tensor of a few numbers is read
by the host per step. The trace records, per step, ``metric`` (the accumulated distance of
this step), ``lfd`` (the step-to-step LFD), ``accumulated`` and ``threshold``.
"""

from __future__ import annotations

import torch

from pc_compile.runtime.lfd import lfd, low_frequencies
from pc_compile.runtime.policies.base import guard, read_host


def extrapolate(history: list, t: float | None):
    """The value at ``t`` predicted from ``history`` = [(t_b, v_b), (t_a, v_a)] (oldest first):
    linear in the timestep through the last two, or the last one alone. A value may be a
    tensor or a tuple (each tensor in it is extrapolated, anything else kept)."""
    t_a, v_a = history[-1]
    if len(history) < 2 or t is None:
        return v_a
    t_b, v_b = history[-2]
    if t_a == t_b:
        return v_a
    scale = (t - t_a) / (t_a - t_b)
    if isinstance(v_a, tuple):
        return tuple(a + (a - b) * scale if isinstance(a, torch.Tensor) else a
                     for a, b in zip(v_a, v_b))
    return v_a + (v_a - v_b) * scale


def remember(history: list, t: float | None, value, keep: int = 2) -> None:
    history.append((t, value))
    del history[:-keep]


class LFCache:
    """The step rule. ``decide`` returns whether to reuse."""

    def __init__(self, alpha: float, warmup_steps: int, radius: float, extrapolate: bool,
                 max_reuse: int = 0, reference: str = "previous"):
        self.alpha = alpha
        self.reference = reference
        self.max_reuse = max_reuse
        self.warmup_steps = warmup_steps
        self.radius = radius
        self.extrapolate = extrapolate

    def decide(self, state, inputs, graph, extra: torch.Tensor | None = None):
        """(reuse?, trace info, host copy of ``extra``): one device-to-host read in all."""
        cache = state.cache
        spectrum = low_frequencies(graph.probe(inputs), self.radius)
        state.counters.probe_evals += 1
        t = state.last_timestep
        previous = cache.get("lf_previous")
        cache["lf_previous"] = spectrum
        computed = cache.setdefault("lf_computed", [])  # (t, spectrum) of computed steps
        if previous is None:  # the first step of a generation: nothing to compare with
            remember(computed, t, spectrum)
            return False, {}, read_host([], extra)[1]

        step = lfd(spectrum, previous)
        finite = torch.isfinite(step)
        zero = torch.zeros_like(step)
        largest = torch.maximum(cache.get("largest", zero), torch.where(finite, step, zero))
        if self.reference == "cache":
            # How far this step is, at low frequency, from what reusing would return: the
            # probe outputs of the last two computed steps extrapolated to this timestep (or
            # the last one alone), as the reused output is built from the full outputs.
            target = extrapolate(computed, t) if self.extrapolate else computed[-1][1]
            metric = lfd(spectrum, target)
            better, chosen = None, self.extrapolate  # the reuse is what was measured against
        else:
            # The paper's LFD. Which reuse is closer to this step at low frequency, the last
            # output or the extrapolation of the last two? The probe sees it, at no extra read.
            metric = step
            better, chosen = None, False
            if self.extrapolate and len(computed) == 2:
                better = lfd(spectrum, extrapolate(computed, t)) < lfd(spectrum, computed[-1][1])
        finite = finite & torch.isfinite(metric)
        accumulated = cache.get("accumulated", zero) + torch.where(finite, metric, zero)
        threshold = self.alpha * largest
        reuse_ok = (accumulated <= threshold) & finite
        values = [reuse_ok, finite, step, metric, accumulated, threshold]
        numbers, host = read_host(values if better is None else [*values, better], extra)
        reuse_ok_v, finite_v, step_v, metric_v, accumulated_v, threshold_v = numbers[:6]
        if better is not None:
            chosen = bool(numbers[6])

        if not finite_v:
            state.counters.nonfinite_probes += 1
        reuse = guard(state, graph, bool(reuse_ok_v), self.warmup_steps, self.max_reuse)
        cache["largest"] = largest
        cache["accumulated"] = accumulated if reuse else zero
        info = {"metric": metric_v, "lfd": step_v, "accumulated": accumulated_v,
                "threshold": threshold_v}
        if not reuse:
            remember(computed, t, spectrum)
        info["extrapolate"] = chosen
        return reuse, info, host

    def after_full_step(self, state, inputs, output, graph) -> None:
        """LFCache keeps what it needs in ``decide``."""
