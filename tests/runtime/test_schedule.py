"""The steps left, estimated from the timesteps alone, on diffusers' own schedulers."""

import math
import warnings

import pytest

from pc_compile.runtime.schedule import fit_schedule, prior_fit, timestep_scale


def _schedulers():
    from diffusers import (
        CogVideoXDDIMScheduler,
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    flow = dict(prediction_type="flow_prediction", use_flow_sigmas=True)
    return {
        "euler-shift3": (lambda: FlowMatchEulerDiscreteScheduler(shift=3.0), {}),
        "euler-shift5": (lambda: FlowMatchEulerDiscreteScheduler(shift=5.0), {}),
        "flux-mu": (lambda: FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
                    {"mu": 1.1}),
        "unipc-flow3": (lambda: UniPCMultistepScheduler(flow_shift=3.0, **flow), {}),
        "unipc-flow5": (lambda: UniPCMultistepScheduler(flow_shift=5.0, **flow), {}),
        "dpm-flow3": (lambda: DPMSolverMultistepScheduler(flow_shift=3.0, **flow), {}),
        "cogvideox-ddim": (lambda: CogVideoXDDIMScheduler(timestep_spacing="trailing"), {}),
    }


def _timesteps(name: str, steps: int) -> list[float]:
    make, kwargs = _schedulers()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = make()
    scheduler.set_timesteps(steps, **kwargs)
    return [float(t) for t in scheduler.timesteps]


@pytest.mark.parametrize("name", sorted(_schedulers()))
@pytest.mark.parametrize("steps", [10, 20, 30, 50, 100])
def test_steps_left_from_half_the_schedule(name, steps):
    timesteps = _timesteps(name, steps)
    half = steps // 2
    fit = fit_schedule(timesteps[: half + 1])
    # Within 5% of the step count (one step at least) once half the schedule is seen, and
    # the next timestep predicted within a step.
    assert abs(fit.total_steps() - steps) <= max(1, math.ceil(0.05 * steps))
    assert fit.steps_left(half) == pytest.approx(steps - 1 - half, abs=max(1, 0.05 * steps))
    size = timesteps[half] - timesteps[half + 1]
    assert abs(fit.timestep(half + 1) - timesteps[half + 1]) < 0.5 * size


@pytest.mark.parametrize("name", ["euler-shift3", "euler-shift5", "unipc-flow3", "dpm-flow3"])
def test_unrounded_or_common_shift_schedules_are_known_early(name):
    for steps in (10, 20, 30, 50):
        fit = fit_schedule(_timesteps(name, steps)[:4])
        assert abs(fit.total_steps() - steps) <= max(1, math.ceil(0.05 * steps)), steps


def test_too_few_or_rising_timesteps_give_no_fit():
    assert fit_schedule([1000.0, 990.0]) is None
    assert fit_schedule([1000.0, 990.0, 995.0]) is None


def test_the_prior_fit_of_two_timesteps():
    # At the common shift, exact; where the timesteps are rounded to integers, as close as a
    # unit of rounding allows (at 50 steps a step is 7 units: 43 for DPM-Solver++'s 50); a
    # first guess for the others (shift 5 here); nothing from one timestep or a rising pair.
    for name, error in (("euler-shift3", 0.0), ("unipc-flow3", 0.15), ("dpm-flow3", 0.15)):
        for steps in (10, 20, 50):
            total = prior_fit(_timesteps(name, steps)[:2]).total_steps()
            assert abs(total - steps) <= error * steps, (name, steps, total)
    guess = prior_fit(_timesteps("euler-shift5", 30)[:2]).total_steps()
    assert 30 < guess < 60
    assert prior_fit([1000.0]) is None and prior_fit([990.0, 1000.0]) is None


def test_sigma_timesteps_use_scale_one():
    assert timestep_scale(1.0) == 1.0 and timestep_scale(999.0) == 1000.0
    sigmas = [t / 1000 for t in _timesteps("euler-shift3", 30)]
    fit = fit_schedule(sigmas[:10])
    assert fit.scale == 1.0 and fit.total_steps() == 30
