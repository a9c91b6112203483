"""The callable the backend returns: one denoiser call = one step of one guidance stream.

For each call it finds the stream (``state.StreamTable``), lets the policy decide what to
compute, and runs the pieces through the ``Executor``:

* a *reused* step returns the stream's cached result without running any block;
* a *computed* step runs the prologue, then every block the policy marks as computed; a block
  it marks as bypassed returns its state inputs plus the residual the policy hands over
  (BlockCache's ``F_j = F_(j-1) + D_j``); glue and epilogue always run.

The policy (``policies/``) owns the decision and what it caches; this file owns the order of
evaluation and the counters that ``stats`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pc_compile.passes.partition_spec import PartitionSpec
from pc_compile.runtime.executor import (
    Executor,
    block_outputs,
    pack_block_outputs,
)
from pc_compile.runtime.policies.base import BlockRecord, Policy, StepPlan
from pc_compile.runtime.state import StreamState, StreamTable, tensor_identity


@dataclass(frozen=True)
class InputRoles:
    """Which graph inputs are the latent, the timestep and the conditioning (None: unknown)."""

    hidden: int | None = None
    timestep: int | None = None
    context: int | None = None
    user_inputs: tuple[int, ...] = ()  # inputs that are not parameters or buffers


class CachedGraph:
    """Runs a partitioned denoiser graph under a caching policy."""

    def __init__(
        self,
        spec: PartitionSpec,
        executor: Executor,
        roles: InputRoles,
        policy: Policy,
        max_streams: int,
    ):
        self.spec = spec
        self.executor = executor
        self.roles = roles
        self.policy = policy
        self.streams = StreamTable(max_streams)
        self.block_numbers = spec.blocks

    # -- public ------------------------------------------------------------------------------

    def __call__(self, *inputs):
        if torch.is_grad_enabled() and any(
            isinstance(x, torch.Tensor) and x.requires_grad for x in inputs
        ):
            # Training or gradients through the denoiser: caching would change the gradient.
            return self.run_full(inputs, None, record=False)[0]
        state = self.streams.lookup(self._identity(inputs), self._signature(inputs))
        self.streams.enter_step(state, self._timestep(inputs))
        plan = self.policy.plan_step(state, inputs, self)
        if plan.reuse:
            state.counters.skipped_steps += 1
            output = self.policy.reuse_output(state, inputs, self)
        else:
            state.counters.full_steps += 1
            output, record = self.run_full(inputs, plan, record=plan.record_blocks, state=state)
            self.policy.after_full_step(state, inputs, output, record, self)
        self.policy.finish_step(state, plan)
        return output

    def reset(self) -> None:
        self.streams.reset()

    # -- evaluation --------------------------------------------------------------------------

    def run_full(
        self,
        inputs: Sequence,
        plan: StepPlan | None,
        record: bool,
        state: StreamState | None = None,
    ):
        """Evaluate every piece; blocks not in ``plan.compute_blocks`` are bypassed."""
        results: list = [None] * len(self.spec.pieces)
        blocks = BlockRecord() if record else None
        position = 0
        for number, piece in enumerate(self.spec.pieces):
            args = self.executor.piece_args(number, inputs, results)
            if piece.kind != "block":
                results[number] = self.executor.call_piece(number, args)
                continue
            compute = plan is None or plan.compute_blocks is None or plan.compute_blocks[position]
            if compute:
                out = self.executor.call_piece(number, args)
                if state is not None:
                    state.counters.block_evals += 1
            else:
                residual = plan.residuals[position]
                outputs = [None] * (piece.num_outputs or 1)
                for (arg, item), delta in zip(piece.state_slots, residual):
                    outputs[item] = args[arg] + delta
                out = pack_block_outputs(outputs, piece.num_outputs)
                state.counters.block_bypasses += 1
            if blocks is not None:
                blocks.inputs.append(tuple(args[arg] for arg, _ in piece.state_slots))
                blocks.outputs.append(
                    tuple(block_outputs(out, piece.num_outputs)[i] for _, i in piece.state_slots)
                )
            results[number] = out
            position += 1
        return self.executor.outputs(inputs, results), blocks

    # -- inputs ------------------------------------------------------------------------------

    def _identity(self, inputs: Sequence) -> tuple:
        if self.roles.context is None:
            return ("single",)
        return tensor_identity(inputs[self.roles.context])

    def _signature(self, inputs: Sequence) -> tuple:
        """Shapes, dtypes and devices of the user's inputs: a change means another cache."""
        return tuple(
            (tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else x
            for x in (inputs[i] for i in self.roles.user_inputs)
        )

    def _timestep(self, inputs: Sequence) -> float | None:
        if self.roles.timestep is None:
            return None
        t = inputs[self.roles.timestep]
        if isinstance(t, torch.Tensor):
            return float(t.reshape(-1)[0])
        return float(t)


