"""``compute_budget``: the controller lands each generation on its budget, for any step count
and scheduler, probes no step whose decision is forced, and reports what it spent."""

import math

import pytest
import torch

import pc_compile
from pc_compile.config import PreciseCacheConfig
from pc_compile.runtime.budget import BudgetController, BudgetState
from pc_compile.runtime.schedule import KnownSchedule
from tests.tiny_models import build

STEPS = (10, 20, 30, 50, 100)
SCHEDULERS = ("euler", "unipc", "dpmsolver++")


def timesteps(kind: str, steps: int) -> list[float]:
    """The timesteps a flow-matching pipeline (shift 3) passes with scheduler ``kind``."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    flow = dict(num_train_timesteps=1000, prediction_type="flow_prediction",
                use_flow_sigmas=True, flow_shift=3.0, final_sigmas_type="zero")
    if kind == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    elif kind == "unipc":
        scheduler = UniPCMultistepScheduler(**flow)
    else:
        scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **flow)
    scheduler.set_timesteps(steps)
    return [float(t) for t in scheduler.timesteps.tolist()]  # one dtype: no recompile


@pytest.fixture(scope="module")
def tiny():
    return build("wan", num_layers=4)


def compile_with(tiny, **options):
    torch._dynamo.reset()
    options = {"preset": "off", "piece_compiler": "eager", "probe_min_tokens": 1, **options}
    return torch.compile(tiny.model, backend="precisecache", options=options)


def generate(compiled, tiny, ts, conditions=(1, 2)):
    """One generation: per step, one call per guidance condition (cond, then uncond), the
    latent moving as a sampler's does."""
    with torch.no_grad():
        for t in ts:
            latent = None
            for c in conditions:
                inputs = tiny.make_inputs(t, c)
                if latent is None:
                    latent = inputs["hidden_states"] * (0.5 + t / 2000)
                inputs["hidden_states"] = latent
                compiled(**inputs)


# Every step count with the cheapest rule; the probe's and SenCache's at the two ends of the
# range (they share the controller, and each call costs a probe or a measurement).
@pytest.mark.parametrize("rule,budgets,counts", [("none", (0.38, 0.63), STEPS),
                                                 ("lfcache", (0.465,), (10, 50)),
                                                 ("sencache", (0.5,), (10, 30))])
def test_every_generation_lands_within_002_of_its_budget(tiny, rule, budgets, counts):
    for budget in budgets:
        compiled = compile_with(tiny, step_rule=rule, compute_budget=budget)
        for kind in SCHEDULERS:
            for steps in counts:
                generate(compiled, tiny, timesteps(kind, steps))
                stats = pc_compile.stats(compiled)
                spent = stats["compute_fraction"]
                assert abs(spent - budget) <= 0.02 + 1e-9, (rule, budget, kind, steps, spent)
                assert stats["budget"] == {"asked": budget, "generations": [spent]}
                pc_compile.reset(compiled)



def test_a_known_schedule_is_planned_from_its_first_step(tiny):
    """Timesteps that are views of the pipeline's schedule tensor give the controller every
    step to come: the step count is exact from step 0 (no step computed for want of an
    estimate) and every generation still lands on its budget."""
    for budget in (0.38, 0.63):
        compiled = compile_with(tiny, compute_budget=budget, warmup_steps=1, end_span=0.0)
        for kind in SCHEDULERS:
            for steps in (10, 30):
                schedule = torch.tensor(timesteps(kind, steps))
                with torch.no_grad():
                    for i in range(steps):
                        for c in (1, 2):
                            inputs = tiny.make_inputs(0.0, c)
                            inputs["timestep"] = schedule[i].expand(1)  # a view, as pipelines
                            compiled(**inputs)
                stats = pc_compile.stats(compiled, detail=True)
                spent = stats["compute_fraction"]
                assert abs(spent - budget) <= 0.02 + 1e-9, (budget, kind, steps, spent)
                trace = next(iter(stats["per_stream"].values()))["trace"]
                assert trace[1]["estimated_steps"] == steps, (kind, steps, trace[1])
                assert all("no schedule estimate" not in e["budget_call"] for e in trace)
                pc_compile.reset(compiled)


def trace_pattern(trace) -> str:
    """A stream's trace as a string, ``#`` computed and ``.`` reused."""
    return "".join("#" if e["computed"] else "." for e in trace)


def reuse_runs(pattern: str) -> list[int]:
    """The lengths of the runs of reuses in a ``#``/``.`` pattern."""
    return [len(run) for run in pattern.split("#") if run]


def _longest_reuse_run(trace) -> int:
    return max(reuse_runs(trace_pattern(trace)), default=0)


@pytest.mark.parametrize("kind", ["euler", "unipc"])
def test_guards_the_budget_cannot_afford_are_shortened(tiny, kind):
    """Five warm-up steps and the end steps of ``end_span=4.5`` would lengthen the runs of
    reuses that the 3.8 steps a budget of 0.38 computes of 10 leave when evenly spaced: both
    are shortened, so the middle of the schedule keeps computed steps (before, the guards
    took the whole budget and left six reuses in a row between them). At 50 steps and 0.63
    the budget has room for them (31.5 computed steps for 18.5 reuses): they are kept
    whole."""
    compiled = compile_with(tiny, compute_budget=0.38, warmup_steps=5, end_span=4.5)
    ts = timesteps(kind, 10)
    generate(compiled, tiny, ts)
    trace = next(iter(pc_compile.stats(compiled, detail=True)["per_stream"].values()))["trace"]
    assert _longest_reuse_run(trace) <= 3, [e["computed"] for e in trace]
    assert trace[0]["computed"] and trace[-1]["computed"]
    assert not all(e["computed"] for e in trace[:5])  # the warm-up was shortened
    assert abs(pc_compile.stats(compiled)["compute_fraction"] - 0.38) <= 0.02 + 1e-9
    compiled = compile_with(tiny, compute_budget=0.63, warmup_steps=5, end_span=4.5)
    generate(compiled, tiny, timesteps(kind, 50))
    trace = next(iter(pc_compile.stats(compiled, detail=True)["per_stream"].values()))["trace"]
    assert all(e["computed"] for e in trace[:5]) and all(e["computed"] for e in trace[-3:])
    assert abs(pc_compile.stats(compiled)["compute_fraction"] - 0.63) <= 0.02 + 1e-9

def test_the_probe_runs_on_free_steps_and_the_computed_steps_before_them(tiny):
    compiled = compile_with(tiny, step_rule="lfcache", compute_budget=0.465)
    generate(compiled, tiny, timesteps("euler", 30))
    stats = pc_compile.stats(compiled, detail=True)
    trace = stats["per_stream"]["stream0"]["trace"]
    probed = [e["step"] for e in trace if e["probed"]]
    free = [e["step"] for e in trace if e["budget_call"] == "free"]
    assert stats["probe_evals"] == len(probed)
    assert set(free) <= set(probed)
    # The first step is probed (the spectra LFCache chooses the reuse forms by), and the
    # second is free (planned from the first two timesteps); the last step is not probed.
    # (Warm-up and end guard are shortened to the first and the last step: at 0.465 the
    # budget has no room for more, ``BudgetController.trimmed``.)
    assert 0 in probed and 1 in free and 29 not in probed
    assert all(e["computed"] for e in trace if e["step"] in (0, 29))
    # A forced step that is probed is a computed one (never an exhausted budget's reuse).
    assert all(e["computed"] for e in trace
               if e["probed"] and e["budget_call"] != "free")
    # The follower never probes and takes the leader's decisions.
    follower = stats["per_stream"]["stream1"]
    assert follower["probe_evals"] == 0
    assert [e["computed"] for e in follower["trace"]] == [e["computed"] for e in trace]


def test_a_partial_step_lands_a_budget_finer_than_a_step(tiny):
    # 10 steps at 0.38: two warm-up steps and the last one leave 0.8 of a step.
    compiled = compile_with(tiny, compute_budget=0.38)
    generate(compiled, tiny, timesteps("unipc", 10))
    stats = pc_compile.stats(compiled, detail=True)
    trace = stats["per_stream"]["stream0"]["trace"]
    partial = [e for e in trace if e["computed"] and not all(e["blocks"])]
    assert len(partial) == 1 and partial[0]["blocks"] == [True] * 3 + [False]
    assert stats["block_bypasses"] == 2  # one block in each guidance branch
    assert stats["compute_fraction"] == pytest.approx(0.375)


def test_a_remainder_within_the_tolerance_is_a_whole_step_or_none(tiny):
    # At 30 steps half a step is under 0.02 of the work: the remainder is rounded to a whole
    # step (a partial step near the end cost 8 dB on cogvideox-tiny: design measurement 22).
    for budget in (0.38, 0.465, 0.63):
        compiled = compile_with(tiny, step_rule="lfcache", compute_budget=budget)
        generate(compiled, tiny, timesteps("euler", 30))
        stats = pc_compile.stats(compiled, detail=True)
        trace = stats["per_stream"]["stream0"]["trace"]
        assert all(all(e["blocks"]) for e in trace if e["computed"]), budget
        assert stats["block_bypasses"] == 0
        assert abs(stats["compute_fraction"] - budget) <= 0.02


def controller_pattern(ts, budget, placement, scores, warmup=2):
    """The controller's calls on schedule ``ts`` alone, ``#`` computed and ``.`` reused."""
    controller = BudgetController(budget, num_blocks=4, end_span=1.5, partial=False,
                                  placement=placement)
    bs = BudgetState()
    out = ""
    for i, t in enumerate(ts):
        call = controller.begin(bs, i, t, may_reuse=i >= warmup, has_cache=True, probe_cost=0)
        computed = (controller.decide(bs, call, scores(i)) if call.kind == "free"
                    else call.kind == "compute")
        controller.account(bs, 4 if computed else 0, False, 0, computed)
        out += "#" if computed else "."
    return out


def test_even_placement_ignores_the_score():
    ts = timesteps("unipc", 30)
    rising = controller_pattern(ts, 0.465, "score", lambda i: float(i * i))
    assert rising != controller_pattern(ts, 0.465, "score", lambda i: 1.0)
    assert controller_pattern(ts, 0.465, "even", lambda i: float(i * i)) \
        == controller_pattern(ts, 0.465, "even", lambda i: 1.0) \
        == controller_pattern(ts, 0.465, "score", lambda i: None)


@pytest.mark.parametrize("steps", [20, 30, 50])
def test_the_runs_of_a_blind_budget_differ_by_at_most_one(steps):
    # The run length the controller aims at counts the whole steps the budget buys, not the
    # fraction of one it cannot spend: counting that fraction cut the early runs short and
    # left a run of two or three longer ones before the end of the schedule, where the steps
    # are largest (cogvideox-tiny, Euler 20 at 0.465: 34.7 dB against 39.0).
    for kind in SCHEDULERS:
        for budget in (0.38, 0.465, 0.5):
            pattern = controller_pattern(timesteps(kind, steps), budget, "score",
                                         lambda i: None, warmup=1)
            runs = reuse_runs(pattern)
            assert max(runs) - min(runs) <= 1, (kind, steps, budget, pattern)


def test_a_blind_budget_spaces_its_computed_steps_evenly(tiny):
    compiled = compile_with(tiny, compute_budget=0.5)
    generate(compiled, tiny, timesteps("euler", 30), conditions=(1,))
    trace = pc_compile.stats(compiled, detail=True)["per_stream"]["stream0"]["trace"]
    pattern = trace_pattern(trace)
    # 15 computed steps: the first and the last two (the warm-up and the end guard, shortened
    # to them: ``BudgetController.trimmed``), 12 spread over the 27 between them in runs of
    # one or two reuses.
    assert pattern.startswith("#.") and pattern.endswith(".##") and pattern.count("#") == 15
    assert "..." not in pattern and "##" not in pattern[:-2]


def test_the_end_keeps_its_last_two_steps_where_no_run_grows_longer():
    # The last two steps are the largest of a shifted schedule: the end guard keeps both
    # beyond the budget's room where the longest run of reuses stays as long (turbo's budget
    # at 20-50 steps, flash's at 30), not where it would grow (flash's at 20, 10 steps).
    def guards(budget, steps, kind):
        controller = BudgetController(budget, num_blocks=4, end_span=4.5, partial=True,
                                      warmup_steps=5)
        return controller.trimmed(KnownSchedule(tuple(timesteps(kind, steps))), steps)

    for kind in ("euler", "unipc"):
        assert [guards(0.465, steps, kind) for steps in (20, 30, 50)] == [(1, 2)] * 3
        assert guards(0.38, 30, kind) == (1, 2)
        assert guards(0.38, 20, kind) == guards(0.465, 10, kind) == guards(0.38, 10, kind) \
            == (1, 1)


def test_stats_report_the_budget_per_generation(tiny):
    compiled = compile_with(tiny, compute_budget=0.63)
    generate(compiled, tiny, timesteps("euler", 20))
    generate(compiled, tiny, timesteps("unipc", 30))
    stats = pc_compile.stats(compiled)
    assert stats["budget"]["asked"] == 0.63
    assert len(stats["budget"]["generations"]) == 2
    assert all(abs(f - 0.63) <= 0.02 for f in stats["budget"]["generations"])
    rows = stats["per_stream"]["stream0"]["generations_detail"]
    assert [r["steps"] for r in rows] == [20, 30]
    assert all(r["budget"] == 0.63 for r in rows)
    assert stats["per_stream"]["stream0"]["budget"] == 0.63
    # Without a budget, no budget keys.
    plain = compile_with(tiny, step_rule="lfcache")
    generate(plain, tiny, timesteps("euler", 10))
    assert "budget" not in pc_compile.stats(plain)


def test_a_budget_of_one_computes_everything_unprobed(tiny):
    compiled = compile_with(tiny, step_rule="lfcache", compute_budget=1.0)
    generate(compiled, tiny, timesteps("euler", 20))
    stats = pc_compile.stats(compiled)
    assert stats["skipped_steps"] == 0 and stats["probe_evals"] == 0
    assert stats["compute_fraction"] == 1.0


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, math.nan, "0.5", True])
def test_compute_budget_is_validated(bad):
    with pytest.raises(ValueError, match="compute_budget"):
        PreciseCacheConfig(step_rule="lfcache", compute_budget=bad)


def test_budget_placement_is_validated():
    assert PreciseCacheConfig(budget_placement="even").budget_placement == "even"
    with pytest.raises(ValueError, match="budget_placement"):
        PreciseCacheConfig(budget_placement="evenly")


def test_compute_budget_with_a_block_rule_is_refused_clearly():
    with pytest.raises(ValueError, match="compute_budget cannot be combined with block_rule"):
        PreciseCacheConfig(block_rule="bwcache", compute_budget=0.5)
    assert PreciseCacheConfig(step_rule="sencache", compute_budget=0.5).compute_budget == 0.5
    assert PreciseCacheConfig(compute_budget=0.5).caches


def test_the_controller_adds_no_host_read(tiny, monkeypatch):
    reads = []
    original = torch.Tensor.tolist

    def counting(self):
        reads.append(self.numel())
        return original(self)

    compiled = compile_with(tiny, compute_budget=0.5)
    ts = timesteps("euler", 20)
    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    generate(compiled, tiny, ts, conditions=(1,))
    assert reads == []  # no step rule: nothing measured, nothing read


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_a_copied_timestep_still_plans_the_second_step(tiny, kind):
    # A fresh timestep tensor per step (HunyuanVideo's and Flux's pipelines cast it): no
    # schedule to read. The second step is planned from the first two timesteps, so a budget
    # under one half reuses it, as its evenly spaced schedule does at any step count.
    for steps in (10, 30, 50):
        compiled = compile_with(tiny, compute_budget=0.38)
        generate(compiled, tiny, timesteps(kind, steps), conditions=(1,))
        stats = pc_compile.stats(compiled, detail=True)
        trace = next(iter(stats["per_stream"].values()))["trace"]
        assert [e["computed"] for e in trace[:2]] == [True, False], (kind, steps)
        assert abs(stats["compute_fraction"] - 0.38) <= 0.02 + 1e-9


@pytest.mark.parametrize("keeps_probe", [False, True])
def test_which_forced_steps_are_measured(keeps_probe):
    # A rule without a probe (SenCache, Trajectory) is measured on free steps only; a probing
    # rule (LFCache) also on the forced computed steps before a free one, never at the end.
    ts = timesteps("euler", 20)
    controller = BudgetController(0.5, num_blocks=4, end_span=1.5, partial=True,
                                  keeps_probe=keeps_probe)
    bs = BudgetState()
    calls = [controller.begin(bs, i, t, may_reuse=2 <= i < 19, has_cache=True,
                              probe_cost=0.1) for i, t in enumerate(ts)]
    assert [c.kind for c in calls[:2]] == ["compute", "compute"]
    assert [c.measure for c in calls[:2]] == [keeps_probe, keeps_probe]
    assert calls[2].kind == "free" and calls[2].measure
    assert calls[-1].kind == "compute" and not calls[-1].measure
    # Where the budget covers every step, nothing is measured.
    everything = BudgetController(1.0, num_blocks=4, end_span=1.5, partial=True,
                                  keeps_probe=True)
    bs = BudgetState()
    assert not any(everything.begin(bs, i, t, may_reuse=i >= 2, has_cache=True,
                                    probe_cost=0.1).measure for i, t in enumerate(ts))


def test_the_trajectory_rule_predicts_the_extrapolation_error_of_a_curved_output():
    from pc_compile.runtime.rules.base import RuleSetup, StepContext
    from pc_compile.runtime.rules.trajectory import Trajectory, TrajectoryOptions

    rule = Trajectory(TrajectoryOptions(traj_epsilon=0.01), RuleSetup())
    state = rule.new_state()
    base = torch.ones(8)

    def v(t):  # a prediction that moves along a parabola in the timestep
        return base * (1.0 + 1e-6 * t * t)

    for t in (900.0, 800.0, 700.0):
        rule.after_full_step(StepContext(step=0, timestep=t), state, v(t))
    ctx = StepContext(step=3, timestep=600.0)
    tensors = rule.measure(ctx, state)
    verdict = rule.conclude(ctx, state, [float(x) for x in tensors])
    # The line through 800 and 700 misses the parabola at 600 by 1e-6 x (600-700)(600-800).
    line = v(700.0) + (v(700.0) - v(800.0)) * (600.0 - 700.0) / (700.0 - 800.0)
    truth = (v(600.0) - line).abs().max() / v(700.0).abs().max()
    assert verdict.score == pytest.approx(float(truth), rel=0.01)
    assert verdict.reuse == (verdict.score <= 0.01) and verdict.extrapolate


def test_the_trajectory_rule_under_a_budget_needs_no_probe(tiny):
    compiled = compile_with(tiny, step_rule="trajectory", compute_budget=0.465)
    generate(compiled, tiny, timesteps("unipc", 20))
    stats = pc_compile.stats(compiled, detail=True)
    assert stats["probe_evals"] == 0
    assert abs(stats["compute_fraction"] - 0.465) <= 0.02
    scored = [e for e in stats["per_stream"]["stream0"]["trace"] if "curvature" in e]
    assert scored


def test_residual_reuse_under_a_budget(tiny):
    # Every computed step keeps its chain residual, the following branch's too (before,
    # the budget's plans kept none and the first residual reuse failed).
    compiled = compile_with(tiny, step_rule="lfcache", compute_budget=0.465,
                            step_reuse="residual")
    generate(compiled, tiny, timesteps("euler", 20))
    stats = pc_compile.stats(compiled, detail=True)
    reused = [e["reuse"] for s in stats["per_stream"].values() for e in s["trace"]
              if not e["computed"]]
    assert len(reused) >= 2 * 8 and set(reused) <= {"residual", "residual_extrapolate"}
    assert abs(stats["compute_fraction"] - 0.465) <= 0.02 + 1e-9


def test_the_last_step_computes_where_the_budget_cannot_pay_for_it(tiny):
    # Three Euler steps at 0.465: the first and the last cost more than the budget; the last
    # step still computes (it once took "budget exhausted" and reused). (UniPC's three steps
    # end at timestep 600, which a fitted schedule cannot tell from a middle step.)
    compiled = compile_with(tiny, step_rule="lfcache", compute_budget=0.465)
    for steps in (2, 3, 4):
        generate(compiled, tiny, timesteps("euler", steps))
        trace = pc_compile.stats(compiled, detail=True)["per_stream"]["stream0"]["trace"]
        assert trace[-1]["computed"] and all(trace[-1]["blocks"]), steps
        pc_compile.reset(compiled)
