"""How many denoising steps are left, read from the timesteps a pipeline has passed so far.

The denoiser never sees the scheduler, only one timestep per step. Rules that plan ahead (a
compute budget, the probe's skipping of steps whose decision is already forced) need the steps
left; this file estimates them from the timesteps alone, with no step count and no table per
scheduler.

The diffusion schedulers in use space an underlying variable ``s`` evenly over the steps and
map it to the noise level ``sigma = t / scale`` through a shift::

    sigma = shift * s / (1 + (shift - 1) * s)        (flow matching: Wan, Flux, LTX, Hunyuan;
                                                       shift 1: linear spacing, as DDIM trailing)

Flux's exponential shift (``mu``) is the same map with ``shift = exp(mu)``. So ``s`` recovered
from ``sigma`` with the right shift lies on a straight line in the step index, and the schedule
ends where that line reaches zero. ``fit_schedule`` searches the shift that makes the seen
points most nearly collinear (least squares) and extrapolates the line. Schedules outside the
family (Karras sigmas, for example) still give an estimate, refined at every step; callers
must treat it as an estimate.

Repeated timesteps (a second-order scheduler evaluates each step twice) count once: pass the
distinct timesteps of the generation, in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_SHIFTS = tuple(math.exp(x / 16.0) for x in range(-48, 65))  # 0.05 .. 58, log-spaced


@dataclass(frozen=True)
class ScheduleFit:
    """A schedule fitted to the timesteps seen: ``s_i = start - slope * i`` under ``shift``."""

    scale: float  # timestep of pure noise: 1000 (most pipelines) or 1 (those passing sigma)
    shift: float
    start: float
    slope: float
    residual: float  # root mean square distance of the seen points from the line, in steps

    @property
    def end_index(self) -> float:
        """The step index at which the fitted schedule reaches zero noise."""
        return self.start / self.slope

    def total_steps(self) -> int:
        """The estimated number of evaluations (distinct timesteps) in the generation: the
        indices that lie before the end, a last one at (almost) zero noise included."""
        return max(1, math.floor(self.end_index - 0.004) + 1)

    def steps_left(self, index: int) -> int:
        """Estimated evaluations after the one at step ``index`` (0 = first step)."""
        return max(0, self.total_steps() - 1 - index)

    def timestep(self, index: float) -> float:
        """The fitted timestep at step ``index``."""
        s = self.start - self.slope * index
        if s <= 0:
            return 0.0
        return self.scale * self.shift * s / (1 + (self.shift - 1) * s)


@dataclass(frozen=True)
class KnownSchedule:
    """The generation's schedule read from the pipeline's own timesteps tensor
    (``TimestepReader.following``): exact where ``ScheduleFit`` estimates. The interface the
    budget controller uses; a step past the end is at timestep 0."""

    timesteps: tuple  # every distinct timestep of the generation, in order

    @property
    def end_index(self) -> float:
        return float(len(self.timesteps))

    def total_steps(self) -> int:
        return max(1, len(self.timesteps))

    def timestep(self, index: float) -> float:
        i = int(index)
        return float(self.timesteps[i]) if 0 <= i < len(self.timesteps) else 0.0


def timestep_scale(first: float) -> float:
    """The timestep of pure noise: pipelines pass either ``sigma * 1000`` or ``sigma``."""
    return 1.0 if first <= 1.0 + 1e-6 else max(1000.0, first)


def to_sigma(t: float, scale: float) -> float:
    """A timestep as a sigma in (0, 1] (clamped: a rounded timestep can fall just outside)."""
    return min(max(t / scale, 1e-6), 1.0)


def unshift(sigma: float, shift: float) -> float:
    return sigma / (shift - (shift - 1) * sigma)


def _line(points: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line through (i, points[i]): (start, slope as a decrease, rms residual)."""
    n = len(points)
    mean_i = (n - 1) / 2
    mean_s = sum(points) / n
    var = sum((i - mean_i) ** 2 for i in range(n))
    cov = sum((i - mean_i) * (s - mean_s) for i, s in enumerate(points))
    slope = cov / var
    start = mean_s - slope * mean_i
    rms = math.sqrt(sum((start + slope * i - s) ** 2 for i, s in enumerate(points)) / n)
    return start, -slope, rms


def fit_schedule(timesteps: Sequence[float], prior_shift: float = 3.0) -> ScheduleFit | None:
    """The schedule that best explains ``timesteps`` (distinct, decreasing), or None with fewer
    than three of them or when they do not decrease.

    Early in a schedule the points are nearly straight under any shift, and pipelines round
    timesteps to integers (UniPC, DPM-Solver), so several shifts fit within that rounding: among
    those, the one closest to ``prior_shift`` (3, the common flow-matching shift) is taken."""
    if len(timesteps) < 3 or any(b >= a for a, b in zip(timesteps, timesteps[1:])):
        return None
    scale = timestep_scale(timesteps[0])
    sigmas = [to_sigma(t, scale) for t in timesteps]
    rounded = all(abs(t - round(t)) < 1e-6 for t in timesteps)
    fits = []
    for shift in _SHIFTS:
        start, slope, rms = _line([unshift(s, shift) for s in sigmas])
        if slope > 0:
            # The residual in steps: s is compressed by the shift, so raw distances mislead.
            fits.append((rms / slope, shift, start, slope))
    if not fits:
        return None
    least = min(f[0] for f in fits)
    # What rounding to integers alone can explain, in steps: half a unit of the timestep over
    # the timestep's mean step.
    step = (timesteps[0] - timesteps[-1]) / (len(timesteps) - 1)
    tolerance = max(least * 1.05, 0.5 / step if rounded else 0.0)
    good = [f for f in fits if f[0] <= tolerance]
    _, shift, start, slope = min(good, key=lambda f: abs(math.log(f[1] / prior_shift)))
    if not rounded or len(good) == 1:  # determined by the points: refine between neighbours
        shift = _refine(sigmas, shift)
        start, slope, _ = _line([unshift(s, shift) for s in sigmas])
    rms = _line([unshift(s, shift) for s in sigmas])[2] / slope
    return ScheduleFit(scale, shift, start, slope, rms)


def prior_fit(timesteps: Sequence[float], shift: float = 3.0) -> ScheduleFit | None:
    """The schedule through the first two timesteps under the common flow-matching ``shift``,
    or None: two points fit a line under any shift, so ``fit_schedule`` waits for a third.
    Only an estimate, to plan a generation's second step where the pipeline passes no
    schedule; from the third step the fit takes over."""
    if len(timesteps) != 2:
        return None
    scale = timestep_scale(timesteps[0])
    # Pipelines that round the timesteps to integers start at 999 for sigma 1.
    sigmas = [1.0 if i == 0 and t / scale >= 0.99 else to_sigma(t, scale)
              for i, t in enumerate(timesteps)]
    s0, s1 = (unshift(sigma, shift) for sigma in sigmas)
    if s0 <= s1:
        return None
    return ScheduleFit(scale, shift, s0, s0 - s1, 0.0)


def _refine(sigmas: list[float], shift: float) -> float:
    """Golden-section search of the shift around a grid point (log scale)."""
    lo, hi = math.log(shift) - 1 / 16, math.log(shift) + 1 / 16
    ratio = (math.sqrt(5) - 1) / 2

    def cost(x: float) -> float:
        _, slope, rms = _line([unshift(s, math.exp(x)) for s in sigmas])
        return rms / slope if slope > 0 else math.inf

    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if cost(a) < cost(b):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)
