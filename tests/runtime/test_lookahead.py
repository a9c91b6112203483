"""The engine's lookahead: which steps to come are free, and forced steps measured only when
that pays (``pc_compile/runtime/lookahead.py``)."""

from __future__ import annotations

import pytest
import torch

import pc_compile
from benchmarks.loop import Loop, compiled_wan
from pc_compile.runtime.lookahead import free_steps, look_ahead, max_reuses, upcoming
from pc_compile.runtime.timestep import TimestepReader

TEN = [1000.0 - 100.0 * i for i in range(10)]  # 1000, 900, ..., 100


def test_free_steps_follow_warm_up_and_end_span():
    # From step 0: steps 1-4 warm up, step 5 (t=500) is free, steps 6-9 lie within 4.5 step
    # sizes (100) of zero.
    flags = free_steps(TEN[0], TEN[1:], 0, warmup_steps=5, end_span=4.5)
    assert flags == [False, False, False, False, True, False, False, False, False]
    ahead = look_ahead(TEN[0], TEN[1:], 0, 5, 4.5, max_reuse=1)
    assert (ahead.free, ahead.reuses, ahead.to_last_free) == (1, 1, 6)
    assert not ahead.pays(0.2)  # six probes of 0.2 step for one reuse
    assert ahead.pays(0.1)
    # From the last free step on, nothing is free.
    assert look_ahead(TEN[5], TEN[6:], 5, 5, 4.5, 1).free == 0


def test_max_reuses_under_the_run_cap():
    flags = [True, True, True, False, True]
    assert max_reuses(flags, max_reuse=1) == 3  # reuse, compute, reuse | reuse
    assert max_reuses(flags, max_reuse=2) == 3
    assert max_reuses(flags, max_reuse=0) == 4  # no cap
    assert max_reuses([], 1) == 0


def test_upcoming_from_the_schedule_or_a_fit():
    assert upcoming([3.0, 2.0], [5.0], 0) == [3.0, 2.0]
    assert upcoming(None, TEN[:2], 1) is None  # two points: no fit
    # Three points fit a schedule: an estimate (the shift is not known from three), with the
    # right number of steps to come, decreasing to the end.
    fitted = upcoming(None, TEN[:3], 2)
    assert len(fitted) == 7 and fitted == sorted(fitted, reverse=True)
    assert fitted[0] == pytest.approx(700.0, rel=0.05)


def test_timestep_reader_knows_the_steps_that_follow():
    schedule = torch.tensor([3.0, 2.0, 2.0, 1.0])  # a repeated timestep is one step (Heun)
    reader = TimestepReader()
    assert reader.value(schedule[0].expand(2)) == 3.0 and reader.following == [2.0, 1.0]
    assert reader.value(schedule[1].expand(2)) == 2.0 and reader.following == [1.0]
    assert reader.value(schedule[3].expand(2)) == 1.0 and reader.following == []
    assert reader.reads == 1  # the schedule, once
    assert reader.value(torch.tensor([7.0])) == 7.0 and reader.following is None
    assert reader.value(5) == 5.0 and reader.following is None


def _turbo_trace(steps: int):
    # LFCache's threshold rule with the guards turbo had before it became a compute budget
    # (five warm-up steps, at most one reuse in a row, end_span 4.5): the lookahead serves the
    # rules that decide alone.
    model, inputs, compiled = compiled_wan({"preset": "turbo", "compute_budget": None,
                                            "max_reuse": 1, "piece_compiler": "eager"})
    with torch.no_grad():
        Loop(steps=steps)(compiled, inputs)
    stats = pc_compile.stats(compiled, detail=True)
    return stats, next(iter(stats["per_stream"].values()))


def test_no_probe_on_the_end_steps():
    stats, cond = _turbo_trace(20)
    trace = cond["trace"]
    measured = [e["step"] for e in trace if "lfd" in e]
    end = [e["step"] for e in trace if e["step"] > 5 and e["computed"] and "lfd" not in e]
    assert measured and end, trace
    # The end span computes the last steps without measuring them; every other step after
    # the first measures (the first has nothing to compare with).
    assert max(measured) < min(end)
    assert stats["probe_evals"] == 1 + len(measured)
    assert all(e["computed"] for e in trace if e["step"] >= min(end))


def test_a_schedule_too_short_to_pay_for_its_probes_computes_without_them():
    # 6 steps under turbo: five warm-up steps and the end span leave no free step.
    stats, cond = _turbo_trace(6)
    assert stats["probe_evals"] == 0
    assert stats["compute_fraction"] == 1.0
    assert all(e["computed"] for e in cond["trace"])
