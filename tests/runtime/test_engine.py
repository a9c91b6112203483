"""The engine: one host read per step for both rules, the shared guards, the reuse forms."""

from types import SimpleNamespace

import pytest
import torch

import pc_compile
from pc_compile.runtime import engine as engine_module
from pc_compile.runtime.engine import Engine
from pc_compile.runtime.guards import Guards
from pc_compile.runtime.plan import ReuseForm, StepPlan
from pc_compile.runtime.reuse import form_for
from pc_compile.runtime.rules import BlockPlan, Verdict
from pc_compile.runtime.state import StreamState
from tests.test_presets import EAGER, TIMESTEPS, generate
from tests.tiny_models import build

GRAPH = SimpleNamespace(roles=SimpleNamespace(hidden=0), probe=None)


class StepMeasures:
    """Measures two numbers a step and reuses when the second is true; keeps what it read."""

    needs_probe = False

    def __init__(self, reuse=True):
        self.reuse = reuse

    def new_state(self):
        return {"read": []}

    def measure(self, ctx, state):
        return [torch.tensor(0.25), torch.tensor(self.reuse)]

    def conclude(self, ctx, state, numbers):
        state["read"].append(numbers)
        return Verdict(reuse=bool(numbers[1]), info={"seen": numbers[0]})

    def after_full_step(self, ctx, state, output):
        pass


class BlockMeasures:
    """Has three numbers pending after each computed step."""

    def new_state(self):
        return {"pending": None, "read": []}

    def measure(self, ctx, state):
        return None if state["pending"] is None else [state["pending"]]

    def conclude(self, ctx, state, numbers):
        state["pending"] = None
        state["read"].append(numbers)
        return numbers[0]

    def plan(self, ctx, state):
        return BlockPlan()

    def after(self, ctx, state, plan, record):
        state["pending"] = torch.tensor([1.0, 2.0, 3.0])


@pytest.fixture
def tolist_calls(monkeypatch):
    calls = []
    original = torch.Tensor.tolist

    def counting(self):
        calls.append(self.numel())
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    return calls


def enter(state, i, timesteps=(1000.0, 900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0)):
    state.step_in_generation = i
    state.previous_timestep = timesteps[i - 1] if i else None
    state.last_timestep = timesteps[i]


def test_a_step_rule_and_a_block_rule_share_one_host_read(tolist_calls):
    engine = Engine(StepMeasures(reuse=False), BlockMeasures(), guards=Guards(),
                    num_blocks=3)
    state = StreamState("s")
    inputs = (torch.zeros(2),)
    for i in range(3):
        enter(state, i)
        before = len(tolist_calls)
        plan = engine.plan_step(state, inputs, GRAPH)
        # Step 0: only the step rule measures; then both, in the same single read.
        assert len(tolist_calls) - before == 1
        assert tolist_calls[-1] == (2 if i == 0 else 5)
        engine.after_full_step(state, inputs, torch.ones(2), None, plan, GRAPH)
    memory = state.memory
    assert memory.step["read"] == [[0.25, 0.0]] * 3
    assert memory.block["read"] == [[[1.0, 2.0, 3.0]]] * 2
    # Each block measurement is the previous step's block_metric; the verdict's info is traced.
    assert [e.get("block_metric") for e in state.trace] == [[1.0, 2.0, 3.0]] * 2 + [None]
    assert [e["seen"] for e in state.trace] == [0.25] * 3


def test_a_follower_reads_only_the_block_rule_and_nothing_when_nothing_is_pending(
        tolist_calls):
    engine = Engine(StepMeasures(), BlockMeasures(), guards=Guards(), num_blocks=3)
    state = StreamState("s")
    inputs = (torch.zeros(2),)
    enter(state, 0)
    plan = engine.plan_step(state, inputs, GRAPH, leader=StepPlan())
    assert tolist_calls == []  # nothing to read: no synchronisation
    assert state.trace[-1] == {"step": 0, "timestep": 1000.0, "computed": True, "reuse": None,
                               "blocks": [True] * 3, "followed": True}
    engine.after_full_step(state, inputs, torch.ones(2), None, plan, GRAPH)
    enter(state, 1)
    engine.plan_step(state, inputs, GRAPH, leader=StepPlan(reuse=ReuseForm.EXTRAPOLATION))
    assert tolist_calls == [3]
    assert state.memory.step["read"] == []  # the step rule was not asked
    assert state.trace[-1]["reuse"] == "extrapolate"


def test_the_shared_guards():
    guards = Guards(warmup_steps=2, max_reuse=2, end_span=1.5)
    state = StreamState("s")
    enter(state, 1)
    assert not guards.may_reuse(state, run=0, has_cache=True)  # warm-up
    enter(state, 2)
    assert guards.may_reuse(state, run=1, has_cache=True)
    assert not guards.may_reuse(state, run=2, has_cache=True)  # the run cap
    assert not guards.may_reuse(state, run=0, has_cache=False)  # nothing cached yet
    state.previous_timestep, state.last_timestep = 300.0, 140.0  # 140 < 1.5 x 160
    assert not guards.may_reuse(state, run=0, has_cache=True)  # end of schedule
    ctx = guards.context(state, run=0)
    assert (ctx.step, ctx.timestep, ctx.previous_timestep, ctx.step_size) == (2, 140.0, 300.0,
                                                                              160.0)
    assert ctx.near_end and not ctx.warmup and not ctx.may_reuse
    assert Guards(max_reuse=0).may_reuse(state, run=99, has_cache=True) is False  # near end
    enter(state, 3)
    assert Guards(max_reuse=0).may_reuse(state, run=99, has_cache=True)  # 0: no cap


def test_a_rule_that_always_wants_reuse_obeys_the_guards():
    engine = Engine(StepMeasures(), guards=Guards(warmup_steps=2, max_reuse=2), num_blocks=1)
    timesteps = [1000.0 - 100.0 * i for i in range(10)]  # 100 < 1.5 x 100: the last step
    state = StreamState("s")
    inputs = (torch.zeros(2),)
    for i in range(10):
        enter(state, i, timesteps)
        plan = engine.plan_step(state, inputs, GRAPH)
        if plan.reuse is None:
            engine.after_full_step(state, inputs, torch.full((2,), float(i)), None, plan, GRAPH)
    assert [e["computed"] for e in state.trace] == [
        True, True, False, False, True, False, False, True, False, True]


def test_the_reuse_forms():
    assert form_for("extrapolate", True) is ReuseForm.EXTRAPOLATION
    assert form_for("extrapolate", False) is ReuseForm.LAST_OUTPUT
    assert form_for("output", True) is ReuseForm.LAST_OUTPUT
    assert form_for("residual", True) is ReuseForm.EXTRAPOLATED_CHAIN_RESIDUAL
    assert form_for("residual", False) is ReuseForm.CHAIN_RESIDUAL
    engine = Engine(StepMeasures(), guards=Guards(end_span=0.0), num_blocks=1)
    graph = SimpleNamespace(roles=GRAPH.roles, probe=None, copy_output=lambda o: o.clone())
    state = StreamState("s")
    for i, value in enumerate((1.0, 3.0)):  # two computed steps at t = 1000, 900
        enter(state, i)
        engine.after_full_step(state, (), torch.tensor(value), None, StepPlan(), graph)
    enter(state, 2)  # t = 800: the line through (1000, 1) and (900, 3) gives 5
    extrapolated = engine.reuse_output(state, (), graph, StepPlan(reuse=ReuseForm.EXTRAPOLATION))
    last = engine.reuse_output(state, (), graph, StepPlan(reuse=ReuseForm.LAST_OUTPUT))
    assert (float(extrapolated), float(last)) == (5.0, 3.0)


def test_lfcache_and_blockcache_read_the_host_once_per_step(tolist_calls, monkeypatch):
    reads = []
    original = engine_module.read_host

    inside = []

    def spy(*groups, **options):
        if inside:  # not ``stats``' read of the values kept for the trace
            reads.append(tuple(group is not None for group in groups))
        return original(*groups, **options)

    monkeypatch.setattr(engine_module, "read_host", spy)
    per_step = []
    plan_step = Engine.plan_step

    def counted(self, *args, **kwargs):
        before = len(tolist_calls)
        inside.append(True)
        try:
            plan = plan_step(self, *args, **kwargs)
        finally:
            inside.pop()
        if self.caches:  # not the probe's network, which runs uncached
            per_step.append(len(tolist_calls) - before)
        return plan

    monkeypatch.setattr(Engine, "plan_step", counted)
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "flash", "compute_budget": None, "alpha": 2.0,
                                      "block_rule": "blockcache", **EAGER})
    generate(compiled, tiny)
    stats = pc_compile.stats(compiled)
    assert len(per_step) == stats["steps"] == 2 * len(TIMESTEPS)
    assert max(per_step) == 1 and stats["skipped_steps"] > 0 and stats["block_bypasses"] > 0
    # Some steps carried the step rule's and a block rule's measurements in their one read
    # (the block rule's of the other guidance branch, read ahead for it).
    assert any(r[0] and any(r[1:3]) for r in reads)
    assert sum(per_step) == sum(any(r) for r in reads)
