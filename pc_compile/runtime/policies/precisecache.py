"""One policy for every combination of a step rule and a block rule.

The step rules are LFCache (PreciseCache's probe guard, ``lfcache.py``) and SenCache
(``sencache.py``); the block rules are BlockCache (PreciseCache's pivotal blocks,
``blockcache.py``) and BWCache (``bwcache.py``). Either may be absent, and any step rule combines
with any block rule: the step rule decides whether a step runs, the block rule which blocks of a
running step run.

A step first asks the step rule whether to reuse. A reused step returns the cache in one of
three forms (``step_reuse``):

``"extrapolate"``  the linear extrapolation, in the timestep, of the outputs of the last two
                   computed steps (with LFCache's ``lfd_reference="previous"``: or the last
                   output, whichever keeps the reuses' accumulated error smaller as the
                   probe sees it; see ``lfcache.py``). Measured on the reference models,
                   extrapolation keeps 3-6 dB more PSNR than plain reuse on regular schedules
                   (BENCHMARKS.md): the prediction of a flow-matching model moves smoothly
                   with the timestep, so a first-order step follows it better.
``"output"``       the output of the last computed step, as it was (the paper's reuse);
``"residual"``     the blocks' residual (last block's output minus first block's input) of the
                   last computed step, or its extrapolation from the last two, as the probe
                   chooses, added to this step's first-block input, then this step's
                   epilogue: the prologue and epilogue see the current timestep, as
                   first-block caches do.

A computed step asks the block rule which blocks to run. A later evaluation of a step (a second
call at the same timestep, ``StreamState.evaluation_in_step``: FlowMatchHeun's) computes every
block and leaves the caches to the steps' first evaluations. Each step's decision is written to
the stream's trace (``stats(compiled, detail=True)``).
"""

from __future__ import annotations

from pc_compile.runtime.policies.base import Policy, StepPlan, read_host
from pc_compile.runtime.policies.blockcache import BlockCache
from pc_compile.runtime.policies.bwcache import BWCache
from pc_compile.runtime.policies.lfcache import LFCache, extrapolate, remember
from pc_compile.runtime.policies.sencache import SenCache


class PreciseCachePolicy(Policy):
    name = "precisecache"

    def __init__(self, step_rule: LFCache | SenCache | None,
                 block_rule: BlockCache | BWCache | None,
                 step_reuse: str, probe_cost: float):
        self.step_rule = step_rule
        self.block_rule = block_rule
        self.step_reuse = step_reuse
        self.probe_cost = probe_cost

    def plan_step(self, state, inputs, graph, shared: str | None = None) -> StepPlan:
        if state.evaluation_in_step:
            # Another evaluation of a step already decided (Heun's second call at the same
            # timestep). The rules decide once per step, on its first evaluation: this one
            # computes every block and leaves the caches to the first evaluations.
            state.trace.append({
                "step": state.step_in_generation, "timestep": state.last_timestep,
                "evaluation": state.evaluation_in_step, "computed": True, "reuse": None,
                "blocks": [True] * len(graph.spec.blocks),
            })
            return StepPlan()
        pending = self.block_rule.pending(state) if self.block_rule else None
        info: dict = {}
        reuse = False
        mode = None
        if self.step_rule is not None and shared is None:
            reuse, info, norms = self.step_rule.decide(state, inputs, graph, pending)
            extrapolated = info.pop("extrapolate", False)
            if reuse:
                mode = {
                    ("extrapolate", True): "extrapolate", ("extrapolate", False): "output",
                    ("residual", True): "residual_extrapolate", ("residual", False): "residual",
                }.get((self.step_reuse, extrapolated), self.step_reuse)
        else:
            # Following another branch's decision (or no step rule): no probe of our own.
            norms = read_host([], pending)[1]
            if shared is not None:
                reuse = bool(shared) and self.step_rule is not None and self.can_reuse(state)
                info = {"followed": True}
                mode = shared if reuse else None
        if self.block_rule is not None:
            measured = self.block_rule.absorb(state, norms)
            if measured is not None and state.trace:  # measured on the step before this one
                state.trace[-1]["block_metric"] = measured
        if reuse:
            plan = StepPlan(reuse=mode)
        elif self.block_rule is not None:
            plan = self.block_rule.plan(state)
        else:
            plan = StepPlan()
        if self.step_reuse == "residual" and not reuse:
            plan.record_chain = True
        state.trace.append({
            "step": state.step_in_generation,
            "timestep": state.last_timestep,
            "computed": not reuse,
            "reuse": mode if reuse else None,
            "blocks": None if reuse else (
                [True] * len(graph.spec.blocks) if plan.compute_blocks is None
                else list(plan.compute_blocks)
            ),
            **info,
        })
        return plan

    def can_reuse(self, state) -> bool:
        key = "chain_residuals" if self.step_reuse == "residual" else "outputs"
        return bool(state.cache.get(key))

    def reuse_output(self, state, inputs, graph):
        mode = state.trace[-1]["reuse"]
        t = state.last_timestep
        if mode in ("residual", "residual_extrapolate"):
            history = state.cache["chain_residuals"]
            if mode == "residual":
                return graph.run_chain_residual(inputs, history[-1][1])
            return graph.run_chain_residual(inputs, extrapolate(history, t))
        outputs = state.cache["outputs"]
        if mode != "extrapolate" or len(outputs) < 2:
            return graph.copy_output(outputs[-1][1])
        predicted = extrapolate(outputs, t)
        return graph.copy_output(predicted) if predicted is outputs[-1][1] else predicted

    def after_full_step(self, state, inputs, output, record, plan, graph) -> None:
        if state.evaluation_in_step:
            return  # the caches hold the steps' first evaluations only
        if self.step_reuse == "residual":
            remember(state.cache.setdefault("chain_residuals", []), state.last_timestep,
                     record.chain_residual)
        else:
            keep = 2 if self.step_reuse == "extrapolate" else 1
            remember(state.cache.setdefault("outputs", []), state.last_timestep, output, keep)
        if self.step_rule is not None:
            self.step_rule.after_full_step(state, inputs, output, graph)
        if self.block_rule is not None:
            self.block_rule.after(state, plan, record)
