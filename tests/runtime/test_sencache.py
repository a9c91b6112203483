"""SenCache's decisions on constructed trajectories with known sensitivities."""

import torch

from pc_compile.runtime.rules import RuleSetup
from pc_compile.runtime.rules.sencache import SenCache, SenCacheOptions
from pc_compile.runtime.state import StreamState
from tests.runtime.drive import Driver


def sencache(epsilon, warmup_steps, max_reuse, extrapolate):
    rule = SenCache(SenCacheOptions(sen_epsilon=epsilon), RuleSetup(extrapolates=extrapolate))
    return Driver(rule, extrapolate, warmup_steps, max_reuse)


def at_step(state, i):
    state.step_in_generation = i
    state.previous_timestep = None if i == 0 else 1000.0 - 50.0 * (i - 1)
    state.last_timestep = 1000.0 - 50.0 * i


def run(rule, latents, outputs):
    """Feed the rule a trajectory; a reused step keeps the last output. Returns decisions."""
    state = StreamState("s")
    decisions, infos = [], []
    for i, (x, v) in enumerate(zip(latents, outputs)):
        at_step(state, i)
        reuse, info = rule.decide(state, (x,))
        decisions.append(reuse)
        infos.append(info)
        if not reuse:
            rule.computed(state, (x,), v)
    return decisions, infos


def test_predicted_change_is_sensitivity_times_latent_move():
    rule = sencache(epsilon=0.05, warmup_steps=2, max_reuse=0, extrapolate=False)
    ones = torch.ones(2, 8)
    # Steps 0 and 1 compute (nothing measured yet); their outputs move 0.1 per unit of latent:
    # s = 0.1, scale = rms(v_1) = 1.1.
    latents = [0.0 * ones, 1.0 * ones, 1.5 * ones, 2.2 * ones]
    outputs = [1.0 * ones, 1.1 * ones, None, 1.32 * ones]
    decisions, infos = run(rule, latents, outputs)
    assert decisions == [False, False, True, False]
    assert abs(infos[2]["metric"] - 0.1 * 0.5 / 1.1) < 1e-6  # 0.045 <= 0.05: reuse
    assert abs(infos[3]["metric"] - 0.1 * 1.2 / 1.1) < 1e-6  # 0.109 > 0.05: compute
    assert abs(infos[2]["sensitivity"] - 0.1) < 1e-6 and infos[2]["threshold"] == 0.05


def test_at_most_max_reuse_steps_in_a_row_and_warm_up():
    rule = sencache(epsilon=10.0, warmup_steps=3, max_reuse=2, extrapolate=True)
    ones = torch.ones(4)
    latents = [i * ones for i in range(9)]
    outputs = [(1 + 0.01 * i) * ones for i in range(9)]
    decisions, infos = run(rule, latents, outputs)
    assert decisions == [False, False, False, True, True, False, True, True, False]
    assert all(info.get("extrapolate") for info in infos[3:])


def test_a_latent_that_is_not_finite_computes():
    rule = sencache(epsilon=10.0, warmup_steps=2, max_reuse=0, extrapolate=False)
    ones = torch.ones(4)
    latents = [0 * ones, 1 * ones, ones * float("nan"), 2 * ones, 3 * ones, 3.1 * ones]
    outputs = [ones, 1.1 * ones, ones, 1.2 * ones, 1.3 * ones, 1.31 * ones]
    decisions, _ = run(rule, latents, outputs)
    # The NaN step computes, and so do the two after it (their anchor and sensitivity are NaN).
    assert decisions == [False, False, False, False, False, True]


def test_the_last_step_of_the_schedule_always_computes():
    rule = sencache(epsilon=10.0, warmup_steps=0, max_reuse=0, extrapolate=False)
    state = StreamState("s")
    ones = torch.ones(4)
    timesteps = [900.0, 800.0, 700.0, 100.0]  # 100 < 1.5 x (700 - 100): near the end
    decisions = []
    for i, t in enumerate(timesteps):
        state.step_in_generation, state.last_timestep = i, t
        state.previous_timestep = timesteps[i - 1] if i else None
        reuse, _ = rule.decide(state, (i * ones,))
        decisions.append(reuse)
        if not reuse:
            rule.computed(state, (i * ones,), (1 + 0.01 * i) * ones)
    assert decisions == [False, False, True, False]
