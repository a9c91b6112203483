"""The interfaces of caching rules: what the engine hands a rule, and what a rule answers.

A *step rule* decides, once per step of a guidance stream, whether the whole step may reuse the
cache. A *block rule* decides which blocks of a computed step run; the others are bypassed
(their state inputs plus a cached residual). The engine (``runtime/engine.py``) calls them; a
rule never sees the compiled graph, only a ``StepContext`` and its own state.

Order of the engine's calls in one step, for the stream's state ``s`` of each rule::

    step.measure(ctx, s)      (the leading guidance branch only)  -> tensors to read, or None
    block.measure(ctx, s)                                          -> tensors to read, or None
    <one device-to-host read of every tensor above>
    step.conclude(ctx, s, numbers)   (when measure returned tensors) -> Verdict
    step.settle(ctx, s, reused)      (when concluded, if the rule defines it)
    block.conclude(ctx, s, numbers)  (when measure returned tensors) -> the trace's block_metric
    block.plan(ctx, s)               (when the step is computed)    -> BlockPlan
    ... the step runs ...
    step.after_full_step(ctx, s, output)      (when the step was computed)
    block.after(ctx, s, plan, record)         (when the step was computed)

A step whose decision is fixed in advance (``StepContext.may_reuse`` is False for a step rule;
for a block rule, a plan that does not depend on the measurement) needs no read: ``measure``
may then answer without one. A step rule returns a ``Verdict`` (``reuse`` False) whose ``info``
values and ``nonfinite`` may be 0-dim device tensors; a block rule returns a ``Later`` whose
``apply`` turns the host copy of its tensors into the trace's ``block_metric``. The engine reads
such values with the next read it makes anyway (or when ``stats`` asks), never for them alone.

``numbers`` holds one entry per measured tensor, in order: a float for a 0-dim tensor, the flat
list of its values (as floats) for any other. A rule keeps whatever it needs between calls in
the state object its ``new_state()`` returns; the engine makes a fresh one at each new
generation and drops it when the stream is evicted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from pc_compile.errors import PolicyUnsupported
from pc_compile.runtime.plan import BlockRecord


class RuleUnsupported(PolicyUnsupported):
    """The configured rule cannot work on this model; the message says why. The front falls
    back to the partitioned graph without caching (``pc_compile/fallback.py``)."""


@dataclass(frozen=True)
class RuleSetup:
    """What a rule learns about the model once, when it is built.

    ``bypassable``: per block, whether it can be bypassed (its outputs pair with its inputs);
    ``has_latent``: whether an input was recognised as the latent (``StepContext.latent``);
    ``extrapolates``: whether the configured reuse forms can extrapolate (``step_reuse`` is
    ``"extrapolate"`` or ``"residual"``), so a step rule's ``Verdict.extrapolate`` matters.
    """

    bypassable: tuple[bool, ...] = ()
    has_latent: bool = True
    extrapolates: bool = True


@dataclass(frozen=True)
class StepContext:
    """One step of one guidance stream, as a rule sees it.

    ``step``: the step's index in its generation; ``timestep`` / ``previous_timestep``: this
    step's and the one before's (None when unknown or at the first step); ``step_size``: the
    last step size in the timestep (None before the second step); ``warmup``: the step lies in
    the configured warm-up; ``near_end``: it lies within ``end_span`` step sizes of t = 0;
    ``may_reuse``: the engine's shared guards (warm-up, end of schedule, run cap, nothing
    cached yet) let this step reuse; ``follows``: another guidance branch of this step decided
    and this one follows (a step rule is not asked then); ``latent``: the latent input tensor
    (None when not recognised); ``probe``: runs the low-resolution probe on this step's inputs
    and returns its prediction (None unless the rule declares ``needs_probe``).
    """

    step: int
    timestep: float | None
    previous_timestep: float | None = None
    step_size: float | None = None
    warmup: bool = False
    near_end: bool = False
    may_reuse: bool = True
    follows: bool = False
    latent: torch.Tensor | None = None
    probe: Callable[[], torch.Tensor] | None = None


@dataclass(frozen=True)
class Verdict:
    """A step rule's answer. The step reuses when ``reuse`` and ``StepContext.may_reuse``.

    ``extrapolate``: the reuse should extrapolate the last two computed results rather than
    return the last one (the engine maps it onto the configured ``step_reuse``); ``info``:
    entries for the step's trace (``stats(detail=True)``), plain numbers; ``nonfinite``: the
    measurement was not finite (counted as ``nonfinite_probes``); ``score``: the predicted
    error of this step's output if it is reused (any unit, the same over a generation; None:
    no estimate), which a compute budget (``runtime/budget.py``) uses to place the computed
    steps where reusing would do the most damage.
    """

    reuse: bool
    extrapolate: bool = False
    info: dict = field(default_factory=dict)
    nonfinite: bool = False
    score: float | None = None


@dataclass
class Later:
    """Tensors that no decision needs now: read with the next read, then ``apply(numbers)``
    (``numbers`` as ``conclude`` would get them)."""

    tensors: list
    apply: Callable[[list], Any]


@dataclass
class BlockPlan:
    """A block rule's plan for a computed step.

    ``compute_blocks``: per block, whether it runs (None: every block); ``residuals``: per
    block, the residual a bypassed block adds to its state inputs; ``record_blocks``: hand the
    blocks' state inputs and outputs to ``after``.
    """

    compute_blocks: list[bool] | None = None
    residuals: list[tuple[torch.Tensor, ...] | None] | None = None
    record_blocks: bool = False


class StepRule(Protocol):
    """Decides whether a whole step reuses the cache. Built as ``cls(options, setup)``."""

    needs_probe: ClassVar[bool]  # the engine hands ``StepContext.probe`` (the backend builds it)

    def new_state(self) -> Any:
        """This rule's state for a new generation of one stream."""

    def measure(self, ctx: StepContext, state: Any) -> Sequence[torch.Tensor] | Verdict | None:
        """Device tensors whose values decide this step, or None: compute, no verdict (and
        ``conclude`` is not called), or a ``Verdict`` taken without a read (when
        ``ctx.may_reuse`` is False). Keeps on ``state`` what ``conclude`` needs."""

    def conclude(self, ctx: StepContext, state: Any, numbers: list) -> Verdict:
        """The verdict, from the host copy of what ``measure`` returned."""

    def after_full_step(self, ctx: StepContext, state: Any, output) -> None:
        """After a computed step, with the model's output: refresh what the rule keeps."""

    # Optional, for rules whose state depends on what the step finally did (the engine calls
    # them when defined). Under a compute budget the engine, not the verdict, decides:
    #
    # def settle(self, ctx, state, reused: bool) -> None:
    #     """The measured step was reused (True) or computed, whatever the verdict said."""
    #
    # def skip(self, ctx, state, computed: bool) -> None:
    #     """The step's decision was forced, so it was not measured (no probe ran)."""


class BlockRule(Protocol):
    """Decides which blocks of a computed step run. Built as ``cls(options, setup)``."""

    def new_state(self) -> Any:
        """This rule's state for a new generation of one stream."""

    def measure(self, ctx: StepContext, state: Any) -> Sequence[torch.Tensor] | Later | None:
        """Measurements still on the device (from the last computed step), or None, or a
        ``Later`` when this step's plan does not depend on them. For a stream that follows
        another's decisions (``ctx.follows``), it is called at the leading stream's step, with
        the leader's context, so that the leader's read carries it."""

    def conclude(self, ctx: StepContext, state: Any, numbers: list) -> list | None:
        """Take in the host copy of what ``measure`` returned; returns what the trace shows
        as the previous step's ``block_metric`` (None: nothing)."""

    def plan(self, ctx: StepContext, state: Any) -> BlockPlan:
        """Which blocks this computed step runs."""

    def after(self, ctx: StepContext, state: Any, plan: BlockPlan,
              record: BlockRecord | None) -> None:
        """After the computed step, with the blocks' record when ``plan.record_blocks``."""
