"""BlockCache's selection and refresh cycle on constructed cases with known answers."""

import torch

from pc_compile.runtime.guards import Guards
from pc_compile.runtime.host import read_host
from pc_compile.runtime.plan import BlockRecord
from pc_compile.runtime.rules import RuleSetup
from pc_compile.runtime.rules.blockcache import BlockCache, BlockCacheOptions
from pc_compile.runtime.state import StreamState

CTX = Guards().context(StreamState("s"))  # BlockCache reads nothing of the step


def make(pivotal_fraction, pivotal_steps, bypassable):
    return BlockCache(BlockCacheOptions(pivotal_fraction, pivotal_steps),
                      RuleSetup(bypassable=tuple(bypassable)))


def absorb(rule, state):
    """What the engine does at the start of a step: read the rule's measurements, hand them
    back."""
    tensors = rule.measure(CTX, state)
    if tensors is not None:
        rule.conclude(CTX, state, read_host(tensors)[0])


def record_with_residual_norms(norms):
    record = BlockRecord()
    for n in norms:
        x = torch.zeros(4)
        record.inputs.append((x,))
        record.outputs.append((x + torch.tensor([n, 0.0, 0.0, 0.0]),))
    return record


def test_top_fraction_of_blocks_by_residual_size_are_pivotal():
    rule = make(pivotal_fraction=0.4, pivotal_steps=3, bypassable=[True] * 5)
    state = rule.new_state()
    plan = rule.plan(CTX, state)
    assert plan.compute_blocks is None and plan.record_blocks  # first: every block runs
    rule.after(CTX, state, plan, record_with_residual_norms([5.0, 1.0, 4.0, 2.0, 3.0]))
    absorb(rule, state)
    assert state.pivotal == [True, False, True, False, False]
    # The residual a bypassed block adds is its D_j from the refresh.
    torch.testing.assert_close(state.residuals[1][0], torch.tensor([1.0, 0, 0, 0]))


def test_refresh_every_pivotal_steps():
    rule = make(pivotal_fraction=0.4, pivotal_steps=2, bypassable=[True] * 5)
    state = rule.new_state()
    computed_all = []
    for _ in range(7):
        absorb(rule, state)
        plan = rule.plan(CTX, state)
        computed_all.append(plan.compute_blocks is None)
        record = record_with_residual_norms([5.0, 1.0, 4.0, 2.0, 3.0]) \
            if plan.compute_blocks is None else None
        rule.after(CTX, state, plan, record)
    assert computed_all == [True, False, False, True, False, False, True]


def test_blocks_that_cannot_be_bypassed_always_run_and_count():
    rule = make(pivotal_fraction=0.4, pivotal_steps=3,
                bypassable=[True, False, True, True, True])
    state = rule.new_state()
    rule.after(CTX, state, rule.plan(CTX, state),
               record_with_residual_norms([1.0, 9.0, 5.0, 2.0, 3.0]))
    absorb(rule, state)
    # 40% of 5 blocks = 2 computed: the one that cannot be bypassed, and the largest other.
    assert state.pivotal == [False, True, True, False, False]
