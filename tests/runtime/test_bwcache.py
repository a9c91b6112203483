"""BWCache's per-block decisions on constructed cases with known answers."""

import torch

from pc_compile.runtime.guards import Guards
from pc_compile.runtime.host import read_host
from pc_compile.runtime.plan import BlockRecord
from pc_compile.runtime.rules import RuleSetup
from pc_compile.runtime.rules.base import Later
from pc_compile.runtime.rules.bwcache import BWCache, BWCacheOptions
from pc_compile.runtime.state import StreamState


class Rule:
    """BWCache with the engine's side of a step: the guards' context of the stream's step and
    the one host read of the rule's measurements."""

    def __init__(self, threshold, reuse_steps, scope, bypassable, warmup_steps):
        self.bw = BWCache(BWCacheOptions(threshold, reuse_steps, scope),
                          RuleSetup(bypassable=tuple(bypassable)))
        self.guards = Guards(warmup_steps=warmup_steps)
        self.state = self.bw.new_state()

    def absorb(self, stream):
        ctx = self.guards.context(stream)
        tensors = self.bw.measure(ctx, self.state)
        if isinstance(tensors, Later):  # the plan does not depend on it: trace values only
            return tensors.apply(read_host(tensors.tensors)[0])
        return None if tensors is None else self.bw.conclude(ctx, self.state,
                                                             read_host(tensors)[0])

    def plan(self, stream):
        return self.bw.plan(self.guards.context(stream), self.state)

    def after(self, stream, plan, record):
        self.bw.after(self.guards.context(stream), self.state, plan, record)


def record(outputs, inputs=None):
    rec = BlockRecord()
    for j, out in enumerate(outputs):
        rec.inputs.append((torch.zeros(4) if inputs is None else inputs[j],))
        rec.outputs.append((out,))
    return rec


def at_step(state, i):
    state.step_in_generation = i
    state.previous_timestep = None if i == 0 else 1000.0 - 50.0 * (i - 1)
    state.last_timestep = 1000.0 - 50.0 * i


def step(rule, state, i, outputs):
    """One computed step: absorb the last measurements, plan, run (outputs given), measure."""
    at_step(state, i)
    measured = rule.absorb(state)
    plan = rule.plan(state)
    ran = [True] * len(outputs) if plan.compute_blocks is None else plan.compute_blocks
    rule.after(state, plan, record(outputs))  # a bypassed block's output is not measured
    return ran, measured


def test_each_block_is_bypassed_while_its_own_change_is_small():
    rule = Rule(threshold=0.1, reuse_steps=2, scope="block", bypassable=[True] * 3,
                warmup_steps=1)
    state = StreamState("s")
    base = [torch.full((4,), 1.0), torch.full((4,), 2.0), torch.full((4,), 4.0)]
    # Relative L1 changes at step 1: 5%, 50%, 1%; block 1 keeps changing by 50% a step.
    changed = [base[0] * 1.05, base[1] * 1.5, base[2] * 1.01]
    runs = [step(rule, state, 0, base), step(rule, state, 1, changed)]
    for i in range(2, 5):
        runs.append(step(rule, state, i, [changed[0], base[1] * 1.5**i, changed[2]]))
    assert [r[0] for r in runs] == [
        [True, True, True],
        [True, True, True],
        [False, True, False],  # blocks 0 and 2 calm: bypassed for 2 computed steps
        [False, True, False],
        [True, True, True],  # then they run and are measured again
    ]
    assert all(abs(a - b) < 1e-6 for a, b in zip(runs[2][1], [0.05, 0.5, 0.01]))
    # The bypass adds the residual each block had when it last ran.
    torch.testing.assert_close(rule.state.residuals[0][0], changed[0])


def test_mean_scope_decides_for_every_block_at_once():
    for changes, expected in (([0.05, 0.5, 0.01], [True] * 3), ([0.05, 0.15, 0.01], [False] * 3)):
        rule = Rule(threshold=0.1, reuse_steps=1, scope="mean", bypassable=[True] * 3,
                    warmup_steps=0)
        state = StreamState("s")
        base = [torch.full((4,), 1.0) for _ in range(3)]
        step(rule, state, 0, base)
        step(rule, state, 1, [b * (1 + c) for b, c in zip(base, changes)])
        ran, _ = step(rule, state, 2, base)
        assert ran == expected


def test_warm_up_end_of_schedule_and_blocks_that_cannot_be_bypassed():
    rule = Rule(threshold=10.0, reuse_steps=5, scope="block",
                bypassable=[True, False, True], warmup_steps=3)
    state = StreamState("s")
    out = [torch.full((4,), 1.0)] * 3
    ran = [step(rule, state, i, out)[0] for i in range(5)]
    assert ran[:3] == [[True] * 3] * 3  # warm-up
    assert ran[3] == [False, True, False]  # the unbypassable block always runs
    # Near the end of the schedule every block runs.
    state.step_in_generation, state.previous_timestep, state.last_timestep = 5, 300.0, 100.0
    rule.absorb(state)
    assert rule.plan(state).compute_blocks is None
