"""Drives one step rule through the engine a step at a time, as ``CachedGraph`` does, on a
stand-in graph whose probe returns its first input and whose latent is its first input."""

from types import SimpleNamespace

from pc_compile.runtime.engine import Engine
from pc_compile.runtime.guards import Guards
from pc_compile.runtime.plan import StepPlan
from pc_compile.runtime.state import END_SPAN

GRAPH = SimpleNamespace(roles=SimpleNamespace(hidden=0), probe=lambda inputs: inputs[0])


class Driver:
    def __init__(self, rule, extrapolate: bool, warmup_steps: int = 0, max_reuse: int = 0,
                 end_span: float = END_SPAN):
        self.engine = Engine(rule, step_reuse="extrapolate" if extrapolate else "output",
                             guards=Guards(warmup_steps, max_reuse, end_span), num_blocks=1)

    def decide(self, state, inputs):
        """(reuse?, the verdict's trace info with its ``extrapolate`` and ``score``) of the
        step ``state`` is at."""
        memory = self.engine.memory(state)
        ctx = self.engine.context(state, memory, inputs, GRAPH)
        form, verdict, _ = self.engine.decide(state, ctx, memory)
        info = {} if verdict is None else {**verdict.info, "extrapolate": verdict.extrapolate,
                                           "score": verdict.score}
        return form is not None, info

    def computed(self, state, inputs, output):
        """The step was computed and returned ``output``."""
        self.engine.after_full_step(state, inputs, output, None, StepPlan(), GRAPH)
