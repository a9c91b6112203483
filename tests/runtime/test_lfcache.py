"""LFCache's decisions on constructed probe outputs with known low-frequency distances.

Each probe output is a constant 5x5 frame of value ``c``: its low-frequency spectrum (radius
1/5) is the DC term alone, ``5c`` with the orthonormal FFT, so the LFD of two steps is
``5 |c_i - c_j|`` and every decision can be worked out by hand.
"""

import pytest
import torch

from pc_compile.runtime.rules import RuleSetup
from pc_compile.runtime.rules.lfcache import LFCache, LFCacheOptions, choose_form
from pc_compile.runtime.state import END_SPAN, StreamState
from tests.runtime.drive import Driver


def lfcache(alpha, warmup_steps, radius, extrapolate, max_reuse=0, reference="previous",
            end_span=END_SPAN):
    rule = LFCache(LFCacheOptions(alpha=alpha, lowpass_radius=radius, lfd_reference=reference),
                   RuleSetup(extrapolates=extrapolate))
    return Driver(rule, extrapolate, warmup_steps, max_reuse, end_span)

# Linear in the timestep up to step 4, then a jump at step 5.
VALUES = [1.0, 1.1, 1.2, 1.3, 1.4, 2.4, 2.5, 2.6]


def run(rule, values):
    state = StreamState("s")
    decisions, infos = [], []
    for i, c in enumerate(values):
        state.step_in_generation = i
        state.previous_timestep = None if i == 0 else 1000.0 - 100.0 * (i - 1)
        state.last_timestep = 1000.0 - 100.0 * i
        inputs = (torch.full((1, 1, 1, 5, 5), c),)
        reuse, info = rule.decide(state, inputs)
        decisions.append(reuse)
        infos.append(info)
        if not reuse:
            rule.computed(state, inputs, inputs[0])
    return decisions, infos


def test_the_distance_to_the_extrapolated_cache_is_accumulated():
    rule = lfcache(alpha=0.5, warmup_steps=2, radius=0.2, extrapolate=True, reference="cache")
    decisions, infos = run(rule, VALUES)
    # Steps 2-4 lie on the line through steps 0 and 1: the extrapolation is exact, distance 0.
    # Step 5 is 0.9 off the line (distance 4.5) against a threshold of 0.5 x its own LFD 5.0.
    # Step 6 is 0.225 off the line through steps 1 and 5 (1.125 <= 2.5); step 7 is 0.45 off
    # (2.25), and the sum 3.375 passes 2.5.
    assert decisions == [False, False, True, True, True, False, True, False]
    assert infos[2]["metric"] == pytest.approx(0.0, abs=1e-5)
    assert infos[5]["metric"] == pytest.approx(4.5, rel=1e-5)
    assert infos[5]["lfd"] == pytest.approx(5.0, rel=1e-5)
    assert infos[5]["threshold"] == pytest.approx(2.5, rel=1e-5)
    assert infos[6]["metric"] == pytest.approx(1.125, rel=1e-4)
    assert infos[7]["accumulated"] == pytest.approx(3.375, rel=1e-4)
    assert all(info["extrapolate"] for info in infos[1:])


def test_the_papers_lfd_accumulates_step_to_step_changes():
    rule = lfcache(alpha=0.5, warmup_steps=2, radius=0.2, extrapolate=True,
                   reference="previous")
    decisions, infos = run(rule, VALUES)
    # Each step moves 0.5 while the largest move is 0.5 (threshold 0.25) until the jump makes
    # it 5.0 (threshold 2.5): steps 6 and 7 (0.5, then 1.0 accumulated) reuse.
    assert decisions == [False, False, False, False, False, False, True, True]
    assert infos[3]["metric"] == pytest.approx(0.5, rel=1e-5) == infos[3]["lfd"]
    assert infos[7]["accumulated"] == pytest.approx(1.0, rel=1e-5)


def test_without_extrapolation_the_cache_is_the_last_computed_probe_output():
    rule = lfcache(alpha=0.5, warmup_steps=2, radius=0.2, extrapolate=False, reference="cache")
    decisions, infos = run(rule, VALUES)
    # Distance to the last computed step (1.1, then each computed value); threshold 0.25
    # before the jump: 0.5 at step 2 computes, and so on; after it 2.5: step 6 (0.5) and
    # step 7 (1.0, summed 1.5) reuse.
    assert decisions == [False, False, False, False, False, False, True, True]
    assert infos[7]["metric"] == pytest.approx(1.0, rel=1e-5)
    assert infos[7]["accumulated"] == pytest.approx(1.5, rel=1e-5)
    assert not any(info["extrapolate"] for info in infos[2:])


def test_choose_form_keeps_the_sum_of_the_reuse_errors_smallest():
    spectrum = torch.tensor([0.0])
    extrapolated, last = torch.tensor([-0.8]), torch.tensor([0.5])
    # Alone, the last output is closer (0.5 against 0.8)...
    better, _ = choose_form(None, spectrum, (extrapolated, last), weight=1.0)
    assert not bool(better)
    # ...but after a reuse that overshot by +1 the extrapolation cancels it (0.2 against 1.5).
    better, after = choose_form(torch.tensor([1.0]), spectrum, (extrapolated, last), weight=1.0)
    assert bool(better)
    assert [float(a) for a in after] == pytest.approx([0.2, 1.5])
    # Each error counts by its step size.
    _, after = choose_form(torch.tensor([1.0]), spectrum, (extrapolated, last), weight=2.0)
    assert [float(a) for a in after] == pytest.approx([-0.6, 2.0])


def test_the_probe_chooses_the_form_against_the_errors_of_earlier_reuses():
    rule = lfcache(alpha=100.0, warmup_steps=2, radius=0.2, extrapolate=True, max_reuse=1,
                   reference="previous")
    decisions, infos = run(rule, [0.0, 1.0, 1.7, 3.0, 3.6, 4.0])
    assert decisions == [False, False, True, False, True, False]
    # Step 2: the line through steps 0 and 1 gives 2 (error +0.3), the last output 1 (-0.7).
    assert infos[2]["extrapolate"]
    # Step 4: the line through steps 1 and 3 gives 4 (+0.4), the last output 3 (-0.6). Alone
    # the line is closer, but with step 2's +0.3 the last output leaves the smaller sum.
    assert not infos[4]["extrapolate"]


@pytest.mark.parametrize("end_span, last_reused", [(1.5, 7), (4.5, 5)])
def test_steps_within_end_span_step_sizes_of_zero_always_compute(end_span, last_reused):
    # Timesteps 1000, 900, ...: step i lies 10 - i step sizes from zero, so a span of 4.5
    # keeps steps 6 and 7 (4 and 3 step sizes away) computed, a span of 1.5 neither.
    rule = lfcache(alpha=100.0, warmup_steps=2, radius=0.2, extrapolate=True,
                   end_span=end_span)
    decisions, _ = run(rule, [1.0 + 0.1 * i for i in range(8)])
    assert decisions == [False, False] + [i <= last_reused for i in range(2, 8)]


def test_only_the_first_reuse_of_a_run_may_take_the_last_output():
    rule = lfcache(alpha=100.0, warmup_steps=2, radius=0.2, extrapolate=True, max_reuse=2,
                   reference="previous")
    decisions, infos = run(rule, [0.0, 1.0, 1.7, 2.2, 2.5])
    assert decisions == [False, False, True, True, False]
    # Step 2: the line through steps 0 and 1 gives 2 (error +0.3), the last output 1 (-0.7).
    assert infos[2]["extrapolate"]
    # Step 3, the run's second reuse: the line gives 3 (+0.8, +1.1 summed) and the last output
    # 1 (-1.2, -0.9 summed), the smaller sum; but the last output is two steps old here, and
    # a later reuse of a run extrapolates.
    assert infos[3]["extrapolate"]
    # Its score is still the distance of the form the errors prefer, the last output's
    # (1.2 x 5), not the extrapolation's (0.8 x 5).
    assert float(infos[3]["score"]) == pytest.approx(6.0, rel=1e-4)
