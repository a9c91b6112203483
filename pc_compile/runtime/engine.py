"""The engine: runs one step rule and one block rule through their protocols (``rules/base.py``).

Any step rule combines with any block rule, and either may be absent: the step rule decides
whether a step reuses the cache, the block rule which blocks of a computed step run. What every
rule needs and no rule should redo is here:

* the step's single device-to-host read: both rules hand over the device tensors they need on
  the host (``measure``), the engine reads them in one ``.tolist()`` (``host.read_host``) and
  hands back the numbers (``conclude``);
* the shared guards (``guards.py``): warm-up, end of schedule, run cap, nothing cached yet;
* the reuse forms and the history of computed results they are built from (``reuse.py``);
* the guidance-branch rule: the first branch of a step decides, the others follow its decision
  without measuring (``CachedGraph`` finds the leader); a follower reuses only where it has a
  cache of its own;
* the per-step trace (``stats(compiled, detail=True)``).

The graph runner (``cached_graph.py``) calls ``plan_step`` before each step, ``reuse_output``
when the plan reuses, ``after_full_step`` after a computed step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from pc_compile.errors import OptionUnsupported
from pc_compile.runtime.budget import COMPUTE, FREE, PARTIAL, BudgetController, BudgetState
from pc_compile.runtime.guards import Guards
from pc_compile.runtime.host import read_host
from pc_compile.runtime.lookahead import look_ahead, upcoming
from pc_compile.runtime.memory import kept_bytes
from pc_compile.runtime.ownership import keep
from pc_compile.runtime.plan import BlockRecord, ReuseForm, StepPlan
from pc_compile.runtime.reuse import ReuseHistory, form_for
from pc_compile.runtime.rules import registry
from pc_compile.runtime.rules.base import (
    BlockRule,
    Later,
    RuleSetup,
    RuleUnsupported,
    StepContext,
    StepRule,
    Verdict,
)
from pc_compile.runtime.state import StreamState


@dataclass
class StreamMemory:
    """What the engine keeps for one stream's generation (``StreamState.memory``)."""

    step: Any = None  # the step rule's state
    block: Any = None  # the block rule's state
    history: ReuseHistory = field(default_factory=ReuseHistory)
    run: int = 0  # reused steps in a row
    context: StepContext | None = None  # the current step's, until it is done
    budget: BudgetState = field(default_factory=BudgetState)  # under a compute budget
    last_plan: StepPlan | None = None  # the plan this stream decided last
    tail: tuple | None = None  # (k, residual from block k's input to the last block's output)
    followers: list = field(default_factory=list)  # streams that follow this one's decisions
    block_read: Any = None  # the block rule's measurement, read with the leader's step
    seen: list = field(default_factory=list)  # the generation's distinct timesteps so far


class Engine:
    """Plans each step of a stream from its rules' decisions; with no rule, computes all."""

    def __init__(self, step_rule: StepRule | None = None, block_rule: BlockRule | None = None,
                 *, step_reuse: str = "extrapolate", guards: Guards = Guards(),
                 num_blocks: int = 0, probe_cost: float = 0.0,
                 budget: BudgetController | None = None, max_cache_bytes: int | None = None):
        self.step_rule = step_rule
        self.block_rule = block_rule
        self.step_reuse = step_reuse
        self.guards = guards
        self.num_blocks = num_blocks
        self.probe_cost = probe_cost  # one probe evaluation in block-equivalents (stats)
        self.budget = budget  # the compute budget's controller, or None
        # The context-parallel process group decisions are agreed over (``distributed.py``),
        # or None; set by the front.
        self.group = None
        self.max_cache_bytes = max_cache_bytes  # what a graph's streams may keep, or None
        self.later: list[Later] = []  # values read with the next read, or by ``stats``

    @property
    def caches(self) -> bool:
        return (self.step_rule is not None or self.block_rule is not None
                or self.budget is not None)

    def memory(self, state: StreamState) -> StreamMemory:
        if state.memory is None:
            state.memory = StreamMemory(
                step=self.step_rule.new_state() if self.step_rule is not None else None,
                block=self.block_rule.new_state() if self.block_rule is not None else None,
            )
        return state.memory

    def context(self, state: StreamState, memory: StreamMemory, inputs, graph,
                follows: bool = False) -> StepContext:
        """The step's context: the latent by its role, the probe if the step rule needs it."""
        hidden = graph.roles.hidden
        probe = None
        if self.step_rule is not None and getattr(self.step_rule, "needs_probe", False):
            def probe():
                prediction = graph.probe(inputs)
                state.counters.probe_evals += 1
                return prediction
        return self.guards.context(
            state, run=memory.run, has_cache=memory.history.has(self.step_reuse),
            follows=follows, latent=None if hidden is None else inputs[hidden], probe=probe,
        )

    def decide(self, state: StreamState, ctx: StepContext, memory: StreamMemory,
               followers: Sequence[StreamState] = ()
               ) -> tuple[ReuseForm | None, Verdict | None, list | None]:
        """Both rules' measurements in one host read: (the reuse form, or None to compute;
        the step rule's verdict, or None; the block rule's metric for the previous step).

        The read also carries what ``followers`` (the streams that follow this stream's
        decisions, the other guidance branches) will need at their own call of this step, so
        that they read nothing, and the values kept for later (``Later``). Nothing is read
        when nothing measured needs reading now (a decision fixed in advance)."""
        memory.context = ctx
        leads = self.step_rule is not None and not ctx.follows
        if leads and not self.worth_measuring(state, ctx, memory):
            leads = False
            skip = getattr(self.step_rule, "skip", None)
            if skip is not None:
                skip(ctx, memory.step, True)
        step_out = self.step_rule.measure(ctx, memory.step) if leads else None
        block_out = None
        if self.block_rule is not None:
            if memory.block_read is not None:  # read with the leading branch's step
                block_out, memory.block_read = memory.block_read, None
            else:
                block_out = self.block_rule.measure(ctx, memory.block)
        step_tensors = step_out if _needs_read(step_out) else None
        block_tensors = block_out if _needs_read(block_out) else None
        ahead = []  # (follower memory, its block rule's tensors)
        if not ctx.follows and self.block_rule is not None:
            for other in followers:
                if other is state or other.memory is None or other.memory.block_read is not None:
                    continue
                out = self.block_rule.measure(replace(ctx, follows=True, latent=None,
                                                      probe=None), other.memory.block)
                if out is not None:
                    ahead.append((other.memory, out))
        ahead_tensors = [out for _, out in ahead if _needs_read(out)]
        if step_tensors is not None or block_tensors is not None or ahead_tensors:
            step_numbers, block_numbers, *ahead_numbers = self.read(
                step_tensors, block_tensors, *ahead_tensors)
        else:
            step_numbers = block_numbers = None
            ahead_numbers = []
        read = iter(ahead_numbers)
        for other_memory, out in ahead:
            other_memory.block_read = _Read(next(read)) if _needs_read(out) else out
        form = verdict = metric = None
        if step_out is not None:
            if step_tensors is not None:
                verdict = self.step_rule.conclude(ctx, memory.step, step_numbers)
            else:  # decided without a read: its trace values are read later
                verdict = step_out
            self.count_nonfinite(state, verdict)
            reuse = ctx.may_reuse and bool(verdict.reuse)
            settle = getattr(self.step_rule, "settle", None)
            if settle is not None and step_tensors is not None:
                settle(ctx, memory.step, reuse)
            memory.run = memory.run + 1 if reuse else 0
            if reuse:
                form = form_for(self.step_reuse, verdict.extrapolate)
        if block_out is not None:
            if isinstance(block_out, _Read):
                metric = self.block_rule.conclude(ctx, memory.block, block_out.numbers)
            elif isinstance(block_out, Later):
                metric = block_out
            else:
                metric = self.block_rule.conclude(ctx, memory.block, block_numbers)
        return form, verdict, metric

    def count_nonfinite(self, state: StreamState, verdict: Verdict) -> None:
        """Count a non-finite measurement now, or with the next read where the verdict was
        reached without one (its ``nonfinite`` still a device tensor)."""
        if not isinstance(verdict.nonfinite, torch.Tensor):
            state.counters.nonfinite_probes += bool(verdict.nonfinite)
        else:
            counters = state.counters
            self.later.append(Later([verdict.nonfinite], lambda n, c=counters: setattr(
                c, "nonfinite_probes", c.nonfinite_probes + bool(n[0]))))

    @staticmethod
    def kept_objects(state: StreamState) -> dict:
        """What ``state`` keeps across steps, by owner: the reuse history (outputs, chain
        residuals), the step rule's state (probe spectra, anchors), the block rule's
        (residuals, outputs) and the partial step's residual under a budget."""
        memory = state.memory
        if memory is None:
            return {"history": None, "step_rule": None, "block_rule": None, "partial": None}
        return {"history": memory.history, "step_rule": memory.step,
                "block_rule": memory.block, "partial": memory.tail}

    def kept(self, state: StreamState) -> dict:
        """Bytes ``state`` keeps across steps, by owner (``kept_objects``); each storage
        counted once."""
        seen: set = set()
        return {name: kept_bytes(obj, seen) for name, obj in self.kept_objects(state).items()}

    def worth_measuring(self, state: StreamState, ctx: StepContext, memory: StreamMemory
                        ) -> bool:
        """Whether the deciding stream's step rule measures this step (``lookahead.py``): a
        forced step only when a free step follows and, for a rule running the probe, the
        reuses still allowed are worth more than the probes; a free step always."""
        t = ctx.timestep
        if t is not None and (not memory.seen or t < memory.seen[-1]):
            memory.seen.append(t)
        if ctx.may_reuse:
            return True
        guards = self.guards
        ahead = look_ahead(t, upcoming(state.following, memory.seen, ctx.step), ctx.step,
                           guards.warmup_steps, guards.end_span, guards.max_reuse)
        if ahead is None:
            return True  # the steps to come are unknown
        if ahead.free == 0:
            return False
        if not getattr(self.step_rule, "needs_probe", False):
            return True
        streams = 1 + len(memory.followers)
        return ahead.pays(self.probe_cost / (self.num_blocks * streams))

    def follow(self, leader: StreamState, follower: StreamState) -> None:
        """``follower`` follows ``leader``'s decision at this step: at its next step, the
        leader's read carries what the follower's block rule measured."""
        memory = self.memory(leader)
        if follower not in memory.followers:
            memory.followers.append(follower)

    def read(self, *groups):
        """``read_host(*groups)``, carrying the values kept for later along in the same
        read (and handing them to their ``apply``)."""
        later, self.later = self.later, []
        # Under context parallelism the groups are agreed over the ranks; the values kept for
        # later only feed the trace and are read as this rank has them (``host.py``).
        numbers = read_host(*groups, *(w.tensors for w in later), group=self.group,
                            shared=len(groups))
        for w, values in zip(later, numbers[len(groups):]):
            w.apply(values)
        return numbers[:len(groups)]

    def settle(self) -> None:
        """Read the values kept for later (trace entries, counters), in one read."""
        if self.later:
            self.read()

    def plan_step(self, state: StreamState, inputs, graph, leader: StepPlan | None = None
                  ) -> StepPlan:
        """This step's plan; ``leader`` is the plan another guidance branch of the same step
        took (None: this branch decides)."""
        if not self.caches:
            return StepPlan()
        if state.evaluation_in_step:
            # Another evaluation of a step already decided (a second call at the same
            # timestep: FlowMatchHeun's). The rules decide once per step, on its first
            # evaluation; this one computes every block and leaves the caches alone.
            state.trace.append({
                "step": state.step_in_generation, "timestep": state.last_timestep,
                "evaluation": state.evaluation_in_step, "computed": True, "reuse": None,
                "blocks": [True] * self.num_blocks,
            })
            return StepPlan()
        memory = self.memory(state)
        follows = leader is not None
        ctx = self.context(state, memory, inputs, graph, follows)
        if follows:
            leader.followers += 1
        if self.budget is None:
            plan = self.plan_rules(state, memory, ctx, leader)
        elif follows:
            plan = self.follow_budget(state, memory, ctx, leader)
        else:
            plan = self.plan_budget(state, memory, ctx)
        # A computed step keeps its chain residual for the residual reuse forms.
        plan.record_chain = plan.reuse is None and self.step_reuse == "residual"
        return plan

    def plan_rules(self, state: StreamState, memory: StreamMemory, ctx: StepContext,
                   leader: StepPlan | None) -> StepPlan:
        """The plan the rules take alone (no budget); ``leader``: as in ``plan_step``."""
        follows = leader is not None
        followers = () if follows else [f for f in memory.followers if f.memory is not None]
        form, verdict, metric = self.decide(state, ctx, memory, followers)
        info = verdict.info if verdict is not None else {}
        if follows:
            info = {"followed": True}
            if (leader.reuse is not None and self.step_rule is not None
                    and memory.history.has(self.step_reuse)):
                form = leader.reuse
        if metric is not None and state.trace:  # measured on the step before this one
            if isinstance(metric, Later):  # not needed to decide: read later, for the trace
                entry, note = state.trace[-1], metric.apply
                self.later.append(Later(metric.tensors, lambda n, e=entry, f=note: e.__setitem__(
                    "block_metric", f(n))))
            else:
                state.trace[-1]["block_metric"] = metric
        if form is not None:
            plan = StepPlan(reuse=form)
        elif self.block_rule is not None:
            blocks = self.block_rule.plan(ctx, memory.block)
            plan = StepPlan(compute_blocks=blocks.compute_blocks, residuals=blocks.residuals,
                            record_blocks=blocks.record_blocks, block_plan=blocks)
        else:
            plan = StepPlan()
        self.trace(state, plan, info)
        return plan

    # -- under a compute budget (``budget.py``) ----------------------------------------------

    def plan_budget(self, state: StreamState, memory: StreamMemory, ctx: StepContext
                    ) -> StepPlan:
        """The deciding stream's plan under a compute budget: a free step's score goes to the
        controller; a forced step is measured (without a read) only where the controller asks,
        for a probing rule's spectra before a free step, and never at the end."""
        controller, bs = self.budget, memory.budget
        if memory.last_plan is not None:
            bs.streams = 1 + memory.last_plan.followers
        memory.context = ctx
        probes = self.step_rule is not None and getattr(self.step_rule, "needs_probe", False)
        probe_cost = self.probe_cost if probes else 0.0
        has_cache = memory.history.has(self.step_reuse)
        # Forced by the warm-up or the end of the schedule alone: the controller may shorten
        # those where the budget cannot afford them (``BudgetController.trimmed``).
        by_schedule = ((ctx.warmup or ctx.near_end) and has_cache
                       and not self.guards.capped(memory.run))
        call = controller.begin(bs, ctx.step, ctx.timestep, ctx.may_reuse, has_cache,
                                probe_cost, state.following, by_schedule=by_schedule)
        if call.kind == FREE and not ctx.may_reuse:
            # A guard the controller lifted (only such a step is free against the guards):
            # the rule sees the step as free, as the controller does.
            ctx = replace(ctx, warmup=False, near_end=False, may_reuse=True)
            memory.context = ctx
        verdict = None
        measured = False
        if call.measure and call.kind in (FREE, COMPUTE) and self.step_rule is not None:
            # A forced computed step is measured for the spectra a later reuse's form is
            # chosen by; the rule keeps them itself, without a read (its verdict is fixed).
            out = self.step_rule.measure(ctx, memory.step)
            if isinstance(out, Verdict):
                self.count_nonfinite(state, out)
            elif out is not None:  # a free step may reuse: never a verdict without a read
                numbers = self.read(out)[0]
                verdict = self.step_rule.conclude(ctx, memory.step, numbers)
                state.counters.nonfinite_probes += bool(verdict.nonfinite)
            measured = True
        if call.kind == FREE:
            reuse = not controller.decide(bs, call, None if verdict is None else verdict.score)
        else:
            reuse = call.kind not in (COMPUTE, PARTIAL)
        if verdict is not None:
            settle = getattr(self.step_rule, "settle", None)
            if settle is not None:
                settle(ctx, memory.step, reuse)
        elif self.step_rule is not None and not measured:
            skip = getattr(self.step_rule, "skip", None)
            if skip is not None:
                skip(ctx, memory.step, not reuse)
        memory.run = memory.run + 1 if reuse else 0
        blocks = self.num_blocks
        if reuse:
            extrapolated = True if verdict is None else verdict.extrapolate
            plan = StepPlan(reuse=form_for(self.step_reuse, extrapolated))
            blocks = 0
        elif (call.kind in (PARTIAL, FREE) and 0 < call.blocks < self.num_blocks
              and self.partial_ready(memory, call.blocks)):
            plan = self.partial_plan(memory, call.blocks)
            blocks = call.blocks
        else:
            plan = StepPlan()
        tail = controller.account(bs, blocks, measured and probes, probe_cost,
                                  computed=not reuse)
        if not reuse and plan.partial is None:
            plan.record_tail = tail
        memory.last_plan = plan
        info = dict(verdict.info) if verdict is not None else {}
        info.update({k: v for k, v in bs.last.items() if v is not None})
        info["budget_call"] = call.kind if not call.reason else f"{call.kind}: {call.reason}"
        info["probed"] = measured and probes
        self.trace(state, plan, info)
        return plan

    def follow_budget(self, state: StreamState, memory: StreamMemory, ctx: StepContext,
                      leader: StepPlan) -> StepPlan:
        """A following branch under a budget: the leader's partial step with this branch's
        own residual, and the same residual recorded."""
        memory.context = ctx
        if leader.reuse is not None and memory.history.has(self.step_reuse):
            plan = StepPlan(reuse=leader.reuse)
        elif leader.partial is not None and self.partial_ready(memory, leader.partial):
            plan = self.partial_plan(memory, leader.partial)
        else:
            plan = StepPlan(record_tail=leader.record_tail)
        memory.run = memory.run + 1 if plan.reuse is not None else 0
        self.trace(state, plan, {"followed": True})
        return plan

    @staticmethod
    def partial_ready(memory: StreamMemory, k: int) -> bool:
        return memory.tail is not None and memory.tail[0] == k

    def partial_plan(self, memory: StreamMemory, k: int) -> StepPlan:
        """Compute the first ``k`` blocks; block ``k`` adds the recorded residual across the
        rest, which add nothing."""
        residual = memory.tail[1]
        zeros = tuple(0.0 for _ in residual)
        compute = [i < k for i in range(self.num_blocks)]
        residuals = [None if i < k else (residual if i == k else zeros)
                     for i in range(self.num_blocks)]
        return StepPlan(compute_blocks=compute, residuals=residuals, partial=k)

    def trace(self, state: StreamState, plan: StepPlan, info: dict) -> None:
        """The step's entry in the stream's trace; values still on the device (no decision
        needed them) are filled in by a later read, or when ``stats`` asks."""
        entry = {
            "step": state.step_in_generation,
            "timestep": state.last_timestep,
            "computed": plan.reuse is None,
            "reuse": None if plan.reuse is None else plan.reuse.value,
            "blocks": None if plan.reuse is not None else (
                [True] * self.num_blocks if plan.compute_blocks is None
                else list(plan.compute_blocks)
            ),
            **info,
        }
        kept = [k for k, v in info.items() if isinstance(v, torch.Tensor)]
        if kept:
            self.later.append(Later([entry[k] for k in kept], lambda n, e=entry, ks=kept:
                                    e.update(zip(ks, n))))
        state.trace.append(entry)

    def reuse_output(self, state: StreamState, inputs, graph, plan: StepPlan):
        """The output of a step whose plan reuses, in the plan's form."""
        memory = self.memory(state)
        memory.context = None  # holds this step's inputs: not kept past the step
        return memory.history.output(plan.reuse, state.last_timestep, inputs, graph)

    def after_full_step(self, state: StreamState, inputs, output, record: BlockRecord | None,
                        plan: StepPlan, graph) -> None:
        """After a computed step: keep its result, and let the rules refresh theirs."""
        if not self.caches or state.evaluation_in_step:
            return  # the caches hold the steps' first evaluations only
        memory = self.memory(state)
        chain = record.chain_residual if record is not None else None
        memory.history.record(self.step_reuse, state.last_timestep, output, chain)
        if record is not None and record.tail_residual is not None:
            memory.tail = (plan.record_tail, keep(record.tail_residual))
        elif plan.partial is None:
            memory.tail = None  # recorded for another k, or not at all: out of date
        if self.step_rule is not None:
            self.step_rule.after_full_step(memory.context, memory.step, output)
        if self.block_rule is not None:
            self.block_rule.after(memory.context, memory.block, plan.block_plan, record)
        memory.context = None


@dataclass
class _Read:
    """A block rule's measurement read ahead, with another stream's step."""

    numbers: list


def _needs_read(out) -> bool:
    """Whether a rule's ``measure`` answer is tensors to read now (not None, a ``Verdict``
    decided without a read, a ``Later`` or numbers already read)."""
    return out is not None and not isinstance(out, (Verdict, Later, _Read))


def needs_probe(step_rule: str) -> bool:
    """Whether the step rule registered as ``step_rule`` runs the low-resolution probe."""
    if step_rule == "none":
        return False
    return bool(getattr(registry.lookup("step", step_rule).cls, "needs_probe", False))


def build_engine(config, spec, chain_pairs, roles=None) -> Engine:
    """The engine ``config`` asks for, or ``RuleUnsupported`` saying why its rules cannot work
    on the partitioned model ``spec`` (``roles``: which inputs are the latent and the
    timestep; ``chain_pairs``: the blocks' chain, None when they form none)."""
    if not config.caches:
        return Engine()
    extrapolates = config.step_reuse in ("extrapolate", "residual")
    has_latent = roles is None or roles.hidden is not None
    step_rule = block_rule = None
    if config.step_rule != "none":
        entry = registry.lookup("step", config.step_rule)
        step_rule = entry.cls(config.options_for(config.step_rule),
                              RuleSetup(has_latent=has_latent, extrapolates=extrapolates))
    if step_rule is not None and config.step_reuse == "residual" and chain_pairs is None:
        raise OptionUnsupported(
            "step_reuse='residual' needs one list of identical blocks whose last block "
            "feeds the epilogue; this model's blocks do not form such a chain "
            "(use step_reuse='output')"
        )
    if config.block_rule != "none":
        bypassable = tuple(bool(spec.pieces[i].state_slots) for i in spec.blocks)
        if not any(bypassable):
            raise RuleUnsupported(
                f"block_rule={config.block_rule!r} cannot work on this model: no block's "
                "outputs can be paired with its inputs, so no block can be bypassed"
            )
        entry = registry.lookup("block", config.block_rule)
        block_rule = entry.cls(config.options_for(config.block_rule),
                               RuleSetup(bypassable=bypassable, has_latent=has_latent,
                                         extrapolates=extrapolates))
    guards = Guards(config.warmup_steps, config.max_reuse, config.end_span)
    budget = None
    if config.compute_budget is not None:
        budget = BudgetController(config.compute_budget, len(spec.blocks), config.end_span,
                                  warmup_steps=config.warmup_steps,
                                  partial=chain_pairs is not None,
                                  keeps_probe=getattr(step_rule, "needs_probe", False),
                                  placement=config.budget_placement)
    return Engine(step_rule, block_rule, step_reuse=config.step_reuse, guards=guards,
                  num_blocks=len(spec.blocks), budget=budget,
                  max_cache_bytes=config.max_cache_bytes)
