"""LFCache: the step guard of PreciseCache, driven by the low-resolution probe.

Each step, the probe (``runtime/probe.py``) predicts at low resolution; its low-frequency
spectrum (``runtime/lfd.py``) is compared with the previous step's (the LFD). The step reuses
the cache while the accumulated measure since the last computed step stays under
``delta = alpha x`` (the largest single-step measure seen in this generation); otherwise the
full network runs and the accumulator restarts.

What is accumulated (``accumulate``):

``"lfd"``        the paper's rule: the sum of consecutive probe LFDs.
``"lfd_step"``   each LFD weighted by the step's size, ``t_(i-1) - t_i``. A reused output
                 enters the sampler as ``x += (sigma_next - sigma) v``: its error in the
                 latent is proportional to the step size, and shifted flow-matching schedules
                 take steps several times larger at the end than in the middle, where the raw
                 LFD is smallest. The weighted sum follows the error the reuse actually makes.

Warm-up steps (the first ``warmup_steps`` of a generation) always compute. A probe output
that is not finite forces a full step and is counted (``nonfinite_probes``). All arithmetic
stays on the device; one boolean per step is read by the host.
"""

from __future__ import annotations

import torch

from pc_compile.runtime.lfd import lfd, low_frequencies


class LFCache:
    """The step rule. ``decide`` returns True to reuse; ``computed`` records a full step."""

    def __init__(self, alpha: float, warmup_steps: int, radius: float, accumulate: str):
        self.alpha = alpha
        self.warmup_steps = warmup_steps
        self.radius = radius
        self.accumulate = accumulate

    def decide(self, state, inputs, graph, extra: torch.Tensor | None = None):
        """(reuse?, trace info, host copy of ``extra``): one device-to-host read in all."""
        cache = state.cache
        probe_video = graph.probe(inputs)
        state.counters.probe_evals += 1
        spectrum = low_frequencies(probe_video, self.radius)
        previous = cache.get("lf_previous")
        cache["lf_previous"] = spectrum
        t, previous_t = state.last_timestep, cache.get("t_previous")
        cache["t_previous"] = t
        if previous is None:  # the first step of a generation: nothing to compare with
            return False, {}, _host(extra)
        step = lfd(spectrum, previous)
        if self.accumulate == "lfd_step" and t is not None and previous_t is not None:
            step = step * (abs(previous_t - t) / 1000.0)
        finite = torch.isfinite(step)
        safe = torch.where(finite, step, torch.zeros_like(step))
        largest = torch.maximum(cache.get("largest", safe), safe)
        accumulated = cache.get("accumulated", torch.zeros_like(step)) + safe
        threshold = self.alpha * largest
        reuse_t = (accumulated <= threshold) & finite
        values = [reuse_t.float(), finite.float(), step, accumulated, threshold]
        if extra is not None:
            values.append(extra.reshape(-1).float())
        packed = torch.cat([v.reshape(-1).float() for v in values]).tolist()
        reuse_ok, is_finite, step_v, accumulated_v, threshold_v = packed[:5]
        if not is_finite:
            state.counters.nonfinite_probes += 1
        warm = state.step_in_generation < self.warmup_steps or "output" not in cache
        reuse = bool(reuse_ok) and not warm
        cache["largest"] = largest
        cache["accumulated"] = accumulated if reuse else torch.zeros_like(step)
        info = {"metric": step_v, "accumulated": accumulated_v, "threshold": threshold_v}
        return reuse, info, (packed[5:] if extra is not None else None)


def _host(extra: torch.Tensor | None) -> list | None:
    return None if extra is None else extra.reshape(-1).float().tolist()
