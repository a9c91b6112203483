"""Host reads per step for every preset and step/block rule combination, on a pipeline-shaped
loop (a tiny Wan transformer, the timestep a view of the schedule tensor, guidance as two
calls per step, 20 steps), counted with ``tests/host_reads.py``:

* at most one read per step;
* none on the second guidance branch (its decision and its block rule's measurements travel
  in the first branch's read);
* none on the warm-up steps after the first: their decision is fixed. The first step of a
  generation reads the schedule once (preset off too, and nothing else) (a new generation is told by its timesteps, and this
  copy gives every later step's timestep without a read); under a compute budget, the warm-up
  the budget affords (``BudgetController.trimmed``). BlockCache is the exception: its
  plan bypasses blocks in the warm-up too, so its ranking is read where it is refreshed.
"""

from __future__ import annotations

import pytest
import torch

import pc_compile
from benchmarks.host_reads import configurations
from benchmarks.loop import Loop, compiled_wan
from pc_compile.config import config_from_options
from pc_compile.runtime.budget import BudgetController
from pc_compile.runtime.schedule import KnownSchedule
from tests.host_reads import HostReads

STEPS = 20


def count(options: dict) -> tuple[HostReads, dict]:
    model, inputs, compiled = compiled_wan(dict(options, piece_compiler="eager"))
    with torch.no_grad():
        Loop(steps=STEPS)(compiled, inputs)
        pc_compile.reset(compiled)
        reads = HostReads(stack_depth=2)
        with reads:
            Loop(steps=STEPS, around=lambda i, b: reads.scope(step=i, branch=b))(compiled, inputs)
    return reads, pc_compile.stats(compiled, detail=True)


@pytest.mark.parametrize("label,options", configurations(), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_one_read_per_step_none_on_uncond_none_in_warm_up(label, options):
    reads, stats = count(options)
    per_step = reads.per("step", range(STEPS))
    assert max(per_step.values()) <= 1, (per_step, reads.sites())
    assert reads.per("branch").get("uncond", 0) == 0, reads.sites(reads.where(branch="uncond"))
    config = config_from_options(dict(options))
    if config.caches:
        assert per_step[0] == 1  # the schedule, once per generation
        warmup = config.warmup_steps
        budget = config.compute_budget
        if budget is not None:  # the warm-up the budget affords
            trace = next(iter(stats["per_stream"].values()))["trace"]
            schedule = KnownSchedule(tuple(e["timestep"] for e in trace))
            controller = BudgetController(budget, 1, config.end_span, False,
                                          warmup_steps=config.warmup_steps)
            warmup = controller.trimmed(schedule, STEPS)[0]
        if config.block_rule != "blockcache":
            assert [per_step[i] for i in range(1, warmup)] == [0] * (warmup - 1)
    else:
        # Preset off decides nothing; it reads the schedule once per generation, to tell
        # generations apart for ``stats`` (``generations``, per-generation fractions).
        assert per_step[0] == 1 and reads.count == 1
    assert stats["steps"] == 2 * STEPS


def test_a_timestep_that_is_no_view_of_a_schedule_is_read_by_the_first_branch():
    """A pipeline passing a fresh timestep tensor per step: read once per step, by the first
    branch (the rules need it before they measure, so a step that measures reads twice: not
    yet one read, see ``runtime/timestep.py``)."""
    # LFCache's threshold rule with five warm-up steps and at most one reuse in a row (turbo
    # before it became a compute budget).
    model, inputs, compiled = compiled_wan({"preset": "turbo", "compute_budget": None,
                                            "max_reuse": 1, "piece_compiler": "eager"})
    reads = HostReads(stack_depth=0)
    x = inputs.noise
    with torch.no_grad(), reads:
        for i in range(7):
            t = torch.full((1,), 1000.0 - 100.0 * i)  # not a view
            with reads.scope(step=i):
                for text in (inputs.cond, inputs.uncond):
                    compiled(hidden_states=x, timestep=t, encoder_hidden_states=text,
                             return_dict=False)
    per_step = reads.per("step", range(7))
    assert [per_step[i] for i in range(5)] == [1] * 5  # warm-up: the timestep alone
    assert per_step[5] == 2  # the timestep, then the probe's measurement
    assert per_step[6] == 1  # after a reuse turbo computes (max_reuse 1): no measurement read
