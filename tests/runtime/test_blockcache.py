"""BlockCache's selection and refresh cycle on constructed cases with known answers."""

import torch

from pc_compile.runtime.policies.base import BlockRecord
from pc_compile.runtime.policies.blockcache import BlockCache
from pc_compile.runtime.state import StreamState


def record_with_residual_norms(norms):
    record = BlockRecord()
    for n in norms:
        x = torch.zeros(4)
        record.inputs.append((x,))
        record.outputs.append((x + torch.tensor([n, 0.0, 0.0, 0.0]),))
    return record


def test_top_fraction_of_blocks_by_residual_size_are_pivotal():
    rule = BlockCache(pivotal_fraction=0.4, pivotal_steps=3, bypassable=[True] * 5)
    state = StreamState("s")
    plan = rule.plan(state)
    assert plan.compute_blocks is None and plan.record_blocks  # first: every block runs
    rule.after(state, plan, record_with_residual_norms([5.0, 1.0, 4.0, 2.0, 3.0]))
    rule.absorb(state, rule.pending(state).tolist())
    assert state.cache["pivotal"] == [True, False, True, False, False]
    # The residual a bypassed block adds is its D_j from the refresh.
    torch.testing.assert_close(state.cache["residuals"][1][0], torch.tensor([1.0, 0, 0, 0]))


def test_refresh_every_pivotal_steps():
    rule = BlockCache(pivotal_fraction=0.4, pivotal_steps=2, bypassable=[True] * 5)
    state = StreamState("s")
    computed_all = []
    for _ in range(7):
        rule.absorb(state, None if rule.pending(state) is None else rule.pending(state).tolist())
        plan = rule.plan(state)
        computed_all.append(plan.compute_blocks is None)
        record = record_with_residual_norms([5.0, 1.0, 4.0, 2.0, 3.0]) \
            if plan.compute_blocks is None else None
        rule.after(state, plan, record)
    assert computed_all == [True, False, False, True, False, False, True]


def test_blocks_that_cannot_be_bypassed_always_run_and_count():
    rule = BlockCache(pivotal_fraction=0.4, pivotal_steps=3,
                      bypassable=[True, False, True, True, True])
    state = StreamState("s")
    rule.after(state, rule.plan(state), record_with_residual_norms([1.0, 9.0, 5.0, 2.0, 3.0]))
    rule.absorb(state, rule.pending(state).tolist())
    # 40% of 5 blocks = 2 computed: the one that cannot be bypassed, and the largest other.
    assert state.cache["pivotal"] == [False, True, True, False, False]
