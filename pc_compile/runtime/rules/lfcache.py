"""LFCache: the step rule of PreciseCache, driven by the low-resolution probe.

Each step, the probe (``runtime/probe.py``) predicts at low resolution and its low-frequency
spectrum is taken (``runtime/lfd.py``). A low-frequency distance is accumulated over the steps
since the last computed one; the step reuses the cache while the sum stays under
``delta = alpha x`` the largest step-to-step LFD seen in this generation, as in the paper.
Otherwise the full network runs and the sum restarts.

What is accumulated (``lfd_reference``):

* ``"previous"``: the paper's LFD, ``|| LF_i - LF_(i-1) ||``, how fast the prediction moves.
  The probe then also chooses the form of the first reuse of each run (``choose_form``): the
  extrapolation of the last two computed outputs or the last output, whichever keeps the
  reuses' accumulated low-frequency error smallest. Each reused step adds its error to the
  latent, weighted by its step size; a plain reuse lags the prediction, an extrapolation
  overshoots where it turns, and one can cancel the other (on eight prompts of the reference
  models this kept 0.2-4.2 dB more than taking the form closest to the step alone). The later
  reuses of a run always extrapolate: the last output would lag them by two steps or more,
  which the probe's low-frequency error understates (taking it there cost up to 10 dB at 20
  steps under a compute budget; design measurement 26).
* ``"cache"``: the distance to what the reuse would return, seen at low resolution,
  ``|| LF_i - extrapolation of LF at the last two computed steps ||``, and always extrapolate.
  Neither reference wins everywhere on the reference models: ``"cache"`` is ahead at equal
  compute on most settings, behind where long runs of reuses compound errors the
  low-resolution probe does not see.

Under a cap of one reuse in a row ``alpha >= 1`` never vetoes (one step's LFD cannot exceed the
largest seen), so what the probe adds there is the choice of the form. Under a compute budget (the
presets) the controller decides which steps compute; the probe chooses the forms and, with
``budget_placement="score"`` (base), its score places the computed steps. A probe output that is
not finite forces a full step and is counted (``nonfinite_probes``). All arithmetic stays on the
device; the engine reads a few numbers per step. The trace records ``metric`` (this step's
distance), ``lfd`` (the step-to-step LFD), ``accumulated`` and ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pc_compile.runtime import checks
from pc_compile.runtime.history import extrapolate, remember
from pc_compile.runtime.lfd import lfd, low_frequencies
from pc_compile.runtime.rules.base import RuleSetup, StepContext, Verdict
from pc_compile.runtime.rules.registry import register_step_rule

LFD_REFERENCES = ("cache", "previous")


@dataclass(frozen=True)
class LFCacheOptions:
    """LFCache's options.

    Attributes:
        alpha: the relative threshold: reuse while the accumulated measure stays under
            ``alpha x`` the largest single-step measure of the generation (paper: 0.5 base,
            0.7 turbo; presets here 1.0). Larger reuses more.
        lowpass_radius: radius of the LFD's circular low-pass, as a fraction of the smaller
            spatial size of the probe (paper: 1/5).
        lfd_reference: what each step's probe is compared with: ``"previous"``, the probe
            output of the step before (the paper's LFD; the presets), or ``"cache"``, what a
            reuse would return as the probe sees it. The threshold is ``alpha x`` the largest
            step-to-step LFD of the generation either way.
        probe_downsample: (time, height, width) factors of the probe (paper: 2, 4, 4).
        probe_min_tokens: the probe keeps at least this many tokens per frame (the spatial
            factor is lowered for small latents).
    """

    alpha: float = 0.7
    lowpass_radius: float = 0.2
    lfd_reference: str = "previous"
    probe_downsample: tuple[int, int, int] = (2, 4, 4)
    probe_min_tokens: int = 4

    def __post_init__(self):
        checks.choice("lfd_reference", self.lfd_reference, LFD_REFERENCES)
        checks.number("alpha", self.alpha, low=0.0, high=100.0, low_open=True)
        checks.number("lowpass_radius", self.lowpass_radius, low=0.0, high=1.0, low_open=True)
        checks.integer("probe_min_tokens", self.probe_min_tokens, low=1)
        factors = self.probe_downsample
        if (
            not isinstance(factors, (tuple, list))
            or len(factors) != 3
            or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in factors)
        ):
            raise ValueError(
                "probe_downsample must be three integers >= 1 (time, height, width), "
                f"got {factors!r}"
            )
        object.__setattr__(self, "probe_downsample", tuple(factors))


@dataclass
class Measured:
    """What ``measure`` leaves for ``conclude`` (device tensors)."""

    t: float | None
    spectrum: torch.Tensor
    zero: torch.Tensor
    largest: torch.Tensor
    accumulated: torch.Tensor
    chosen: bool  # the form when the probe does not choose
    errors: tuple | None  # the accumulated errors after each form, when the probe chooses
    extrapolated: bool = False  # the form concluded (set by ``conclude``)


@dataclass
class LFCacheState:
    previous: torch.Tensor | None = None  # the probe's spectrum at the step before
    computed: list = field(default_factory=list)  # (t, spectrum) of the last computed steps
    largest: torch.Tensor | None = None  # the largest step-to-step LFD of the generation
    accumulated: torch.Tensor | None = None  # the distance summed since the last computed step
    error: torch.Tensor | None = None  # the reuses' weighted low-frequency errors, summed
    run: int = 0  # the reuses since the last computed step
    measured: Measured | None = None


def choose_form(error: torch.Tensor | None, spectrum: torch.Tensor, candidates: tuple,
                weight: float) -> tuple[torch.Tensor, tuple]:
    """Which of two reuse forms to take: (extrapolated?, the accumulated error after each).

    ``candidates`` are the low-frequency spectra the two forms would return at this step, seen
    by the probe (the extrapolation, then the last computed output); ``spectrum`` is what the
    probe predicts here; ``error`` is the weighted sum of the reused steps' errors so far (None:
    no reuse yet). The sampler integrates the prediction, so the errors of the reused steps add
    up in the latent; the form that keeps their sum smallest wins. ``weight`` is the step's
    share of the integral (its step size). (LFCache takes the choice for the first reuse of a
    run only: ``LFCache.conclude``.)"""
    after = tuple(weight * (c - spectrum) if error is None else error + weight * (c - spectrum)
                  for c in candidates)
    better = torch.linalg.vector_norm(after[0]) < torch.linalg.vector_norm(after[1])
    return better, after


@register_step_rule("lfcache", options=LFCacheOptions)
class LFCache:
    """The step rule: the probe's accumulated low-frequency distance under a threshold."""

    needs_probe = True

    def __init__(self, options: LFCacheOptions, setup: RuleSetup):
        self.options = options
        self.extrapolate = setup.extrapolates

    def new_state(self) -> LFCacheState:
        return LFCacheState()

    def measure(self, ctx: StepContext, state: LFCacheState):
        options = self.options
        spectrum = low_frequencies(ctx.probe(), options.lowpass_radius)
        t = ctx.timestep
        previous, state.previous = state.previous, spectrum
        computed = state.computed
        if previous is None:  # the first step of a generation: nothing to compare with
            remember(computed, t, spectrum)
            return None
        step = lfd(spectrum, previous)
        finite = torch.isfinite(step)
        zero = torch.zeros_like(step)
        before = zero if state.largest is None else state.largest
        largest = torch.maximum(before, torch.where(finite, step, zero))
        better = errors = gaps = None
        if options.lfd_reference == "cache":
            # The distance to what reusing would return: the probe outputs of the last two
            # computed steps extrapolated to this timestep (or the last one alone).
            target = extrapolate(computed, t) if self.extrapolate else computed[-1][1]
            metric = lfd(spectrum, target)
            chosen = self.extrapolate
        else:
            metric = step
            # Without two computed spectra (only under a compute budget, whose forced steps
            # do not probe) the probe cannot choose: extrapolate, as the reuse allows.
            chosen = self.extrapolate and len(computed) < 2
            if self.extrapolate and len(computed) == 2:
                candidates = (extrapolate(computed, t), computed[-1][1])
                weight = ctx.step_size or 1.0  # the next step's size is not known yet
                better, errors = choose_form(state.error, spectrum, candidates, weight)
                gaps = [torch.linalg.vector_norm(c - spectrum) for c in candidates]
        finite = finite & torch.isfinite(metric)
        accumulated = (zero if state.accumulated is None else state.accumulated) + torch.where(
            finite, metric, zero)
        threshold = options.alpha * largest
        reuse_ok = (accumulated <= threshold) & finite
        if not ctx.may_reuse:  # the step computes whatever the probe says: nothing to read
            state.largest = largest
            state.accumulated = zero
            state.run = 0
            remember(computed, t, spectrum)
            info = {"metric": metric, "lfd": step, "accumulated": accumulated,
                    "threshold": threshold}
            return Verdict(reuse=False, extrapolate=chosen, info=info, nonfinite=~finite)
        state.measured = Measured(t, spectrum, zero, largest, accumulated, chosen, errors)
        values = [reuse_ok, finite, step, metric, accumulated, threshold]
        return values if better is None else [*values, better, *gaps]

    def conclude(self, ctx: StepContext, state: LFCacheState, numbers: list) -> Verdict:
        m = state.measured
        reuse_ok, finite, step, metric, accumulated, threshold = numbers[:6]
        preferred = bool(numbers[6]) if m.errors is not None else m.chosen
        # Only the first reuse of a run may take the last output; a later one extrapolates. The
        # last output lags the prediction by every step since it was computed, and the lag the
        # probe sees at low resolution understates what it costs the latent: a second reuse
        # that took it cost up to 10 dB at 20 steps (design measurement 26).
        chosen = preferred or (state.run > 0 and m.errors is not None)
        m.extrapolated = chosen
        # The score: the probe's distance from the form the errors prefer, else this step's
        # distance. At a later reuse of a run that is still the last output's distance where
        # they prefer it (how far the prediction moved since the computed step), not the
        # extrapolation's taken instead: scored by that, base's placement moved its runs of two
        # to the start of the schedule and lost 5 dB at 20 steps (design measurement 26).
        score = (numbers[7] if preferred else numbers[8]) if m.errors is not None else metric
        info = {"metric": metric, "lfd": step, "accumulated": accumulated,
                "threshold": threshold}
        return Verdict(reuse=bool(reuse_ok), extrapolate=chosen, info=info,
                       nonfinite=not finite, score=score if finite else None)

    def settle(self, ctx: StepContext, state: LFCacheState, reused: bool) -> None:
        """What the measured step did: a reuse adds to the sums, a computed step restarts
        them and keeps its spectrum."""
        m, state.measured = state.measured, None
        if reused and m.errors is not None:
            state.error = m.errors[0] if m.extrapolated else m.errors[1]
        state.largest = m.largest
        state.accumulated = m.accumulated if reused else m.zero
        state.run = state.run + 1 if reused else 0
        if not reused:
            remember(state.computed, m.t, m.spectrum)

    def skip(self, ctx: StepContext, state: LFCacheState, computed: bool) -> None:
        """A step decided without the probe: a computed one leaves no spectrum, so the
        spectra kept no longer bracket what a reuse extrapolates (dropped), and restarts the
        accumulated distance."""
        state.measured = None
        state.run = 0 if computed else state.run + 1
        if computed:
            state.computed.clear()
            state.accumulated = None

    def after_full_step(self, ctx: StepContext, state: LFCacheState, output) -> None:
        """LFCache keeps what it needs while deciding."""
