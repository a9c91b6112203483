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
  probe adds is the choice of the reuse form (BENCHMARKS.md, design measurements 13 and 15);
* how the probe chooses the reuse form (``choose_form``). Each reused step adds its error to
  the latent, weighted by its step size, and the errors add up: a plain reuse lags the
  prediction, an extrapolation overshoots where it turns, and one can cancel the other. So the
  probe keeps the running sum of the chosen forms' low-frequency errors and takes the form
  that leaves the sum smallest, not the form closest to this step alone. On the schedule
  prior, over eight prompts, this kept 0.2-4.2 dB more (wan-tiny Euler 44.8 -> 48.9 dB) and
  lost nowhere (BENCHMARKS.md, design measurement 15);
* the steps within ``end_span`` step sizes of t = 0 always compute (presets: 4.5, the last
  three steps of UniPC and the last four of Euler at shift 3). At the same compute (eleven
  reuses of thirty), computing them and reusing an earlier step instead kept 0.3-4.0 dB more
  on five settings of six and 0.2 dB less on wan-tiny UniPC (design measurement 15): the
  last steps are the largest, and UniPC's multistep update carries a reuse's error one step
  further;
* the guidance branches of one step take one decision (``cached_graph.py``), so a reused
  step never pairs a fresh cond with a stale uncond;

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
from pc_compile.runtime.state import END_SPAN


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


def choose_form(error: torch.Tensor | None, spectrum: torch.Tensor, candidates: tuple,
                weight: float) -> tuple[torch.Tensor, tuple]:
    """Which of two reuse forms to take: (extrapolated?, the accumulated error after each).

    ``candidates`` are the low-frequency spectra the two forms would return at this step, seen
    by the probe (the extrapolation, then the last computed output); ``spectrum`` is what the
    probe predicts here; ``error`` is the weighted sum of the reused steps' errors so far (None:
    no reuse yet). The sampler integrates the prediction, so the errors of the reused steps add
    up in the latent; the form that keeps their sum smallest wins: a plain reuse lags, an
    extrapolation overshoots where the prediction turns, and one can cancel the other.
    ``weight`` is the step's share of the integral (its step size)."""
    after = tuple(weight * (c - spectrum) if error is None else error + weight * (c - spectrum)
                  for c in candidates)
    better = torch.linalg.vector_norm(after[0]) < torch.linalg.vector_norm(after[1])
    return better, after


def remember(history: list, t: float | None, value, keep: int = 2) -> None:
    history.append((t, value))
    del history[:-keep]


class LFCache:
    """The step rule. ``decide`` returns whether to reuse."""

    def __init__(self, alpha: float, warmup_steps: int, radius: float, extrapolate: bool,
                 max_reuse: int = 0, reference: str = "previous", end_span: float = END_SPAN):
        self.alpha = alpha
        self.end_span = end_span
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
            # The paper's LFD. Which reuse form, the last output or the extrapolation of the
            # last two, keeps the generation's accumulated low-frequency error smallest? The
            # probe sees it, at no extra read (see ``choose_form``).
            metric = step
            better, chosen = None, False
            if self.extrapolate and len(computed) == 2:
                candidates = (extrapolate(computed, t), computed[-1][1])
                weight = state.step_size() or 1.0  # the next step's size is not known yet
                better, errors = choose_form(cache.get("lf_error"), spectrum, candidates, weight)
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
        reuse = guard(state, graph, bool(reuse_ok_v), self.warmup_steps, self.max_reuse,
                      self.end_span)
        if reuse and better is not None:
            cache["lf_error"] = errors[0] if chosen else errors[1]
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
