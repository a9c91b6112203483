"""The interface every caching policy implements, and the policy that caches nothing.

A policy answers, once per step of a stream: reuse the cache, or compute (and which blocks)?
It keeps whatever it needs in ``StreamState.cache``. The engine (``cached_graph.py``) calls:

``plan_step``       before the step: a ``StepPlan``; ``shared`` is the decision another
                    guidance branch of the same step took (None: this call decides);
``reuse_output``    when the plan reuses: the step's output, built from the cache;
``after_full_step`` after a computed step, with the output and (if asked) the blocks' state
                    inputs and outputs, to refresh the cache;
``finish_step``     always, last.

``probe_cost`` is the cost of one probe evaluation in block-equivalents, for
``compute_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pc_compile.runtime.state import END_SPAN


@dataclass
class StepPlan:
    reuse: bool | str = False  # False, or how the step reuses (a policy's own word)
    compute_blocks: list[bool] | None = None  # None: compute every block
    residuals: list[tuple[torch.Tensor, ...] | None] | None = None  # per bypassed block
    record_blocks: bool = False  # hand the blocks' inputs/outputs to after_full_step
    record_chain: bool = False  # hand the chain residual (last block out - first block in)


@dataclass
class BlockRecord:
    """Per block, in order: the state inputs and outputs of a computed step."""

    inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    outputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    chain_residual: tuple[torch.Tensor, ...] | None = None


class Policy:
    """Computes every step and every block: the ``off`` preset."""

    name = "off"
    probe_cost = 0.0

    def plan_step(self, state, inputs, graph, shared: bool | None = None) -> StepPlan:
        return StepPlan()

    def reuse_output(self, state, inputs, graph):
        raise RuntimeError(f"policy {self.name!r} never reuses a step")

    def after_full_step(self, state, inputs, output, record, plan, graph) -> None:
        pass

    def finish_step(self, state, plan: StepPlan) -> None:
        pass


def guard(state, graph, verdict: bool, warmup_steps: int, max_reuse: int,
          end_span: float = END_SPAN) -> bool:
    """A step rule's verdict, overruled where no rule may reuse: the first ``warmup_steps`` of a
    generation, the steps within ``end_span`` step sizes of the end (``StreamState.near_end``),
    nothing cached yet, or ``max_reuse`` (> 0) reuses in a row already. Counts the run of
    reuses."""
    run = state.cache.get("reuse_run", 0)
    reuse = (
        verdict
        and state.step_in_generation >= warmup_steps
        and not state.near_end(end_span)
        and graph.policy.can_reuse(state)
        and not (max_reuse and run >= max_reuse)
    )
    state.cache["reuse_run"] = run + 1 if reuse else 0
    return reuse


def read_host(values: list[torch.Tensor], extra: torch.Tensor | None = None):
    """The step's one device-to-host read: ``values`` (one number each) and ``extra`` (a block
    rule's pending measurements, or None) packed into one tensor. Returns (the numbers of
    ``values``, the host copy of ``extra`` or None)."""
    tensors = [v.reshape(-1).float() for v in values]
    if extra is not None:
        tensors.append(extra.reshape(-1).float())
    if not tensors:
        return [], None
    packed = torch.cat(tensors).tolist()
    head = packed[: len(values)]
    return head, (packed[len(values):] if extra is not None else None)
