"""The callable the backend returns: one denoiser call = one step of one guidance stream.

For each call it finds the stream (``state.StreamTable``), lets the engine decide what to
compute, and runs the pieces through the ``Executor``:

* a *reused* step returns the stream's cached result without running any block;
* a *computed* step runs the prologue, then every block the plan marks as computed; a block
  it marks as bypassed returns its state inputs plus the residual the plan hands over
  (BlockCache's ``F_j = F_(j-1) + D_j``); glue and epilogue always run.

The engine (``engine.py``) and its rules own the decision and what they cache; this file owns
the order of evaluation and the counters that ``stats`` reports.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from pc_compile.passes.partition_spec import PartitionSpec
from pc_compile.runtime import ownership
from pc_compile.runtime.engine import Engine
from pc_compile.runtime.executor import (
    Executor,
    block_outputs,
    pack_block_outputs,
)
from pc_compile.runtime.plan import BlockRecord, StepPlan
from pc_compile.runtime.state import (
    DecisionGroup,
    StreamState,
    StreamTable,
    named_scope,
    tensor_identity,
    without_address,
)
from pc_compile.runtime.timestep import TimestepReader
from pc_compile.runtime.weights import weights_identity


class CachedGraph:
    """Runs a partitioned denoiser graph under a caching engine."""

    def __init__(
        self,
        spec: PartitionSpec,
        executor: Executor,
        roles,  # capture.InputRoles: which inputs are the latent, timestep, conditioning
        engine: Engine,
        max_streams: int,
        config=None,
    ):
        self.spec = spec
        self.executor = executor
        self.roles = roles
        self.engine = engine
        self.max_streams = max_streams
        self.config = config  # what the front compiled this graph with (compared, not read)
        # Dynamo serves every instance of a model class from one graph (parameters are graph
        # inputs, not guarded by identity), so state is kept per set of weights: two models
        # never share a cache even when they share this graph.
        self.tables: dict[tuple, StreamTable] = {}
        self.probe = None  # a ProbeNetwork, set by the front when a step rule needs one
        # Per set of weights (``tables``' key), a callable returning the name the caller gives
        # the current call's stream (diffusers' cache_context), or None; set by the front.
        self.stream_names: dict[tuple, object] = {}
        # Called with the key of a set of weights this graph meets for the first time (another
        # instance of the model class, served by this graph without a compile of its own).
        self.on_new_weights = None
        self.timesteps = TimestepReader()
        # False for the probe's own graphs: their calls run every piece and are no steps (no
        # stream, no timestep read).
        self.counts_steps = True
        blocks = spec.blocks
        self.first_block, self.last_block = blocks[0], blocks[-1]
        self.chain_pairs = chain_pairs(spec)

    # -- public ------------------------------------------------------------------------------

    def __call__(self, *inputs):
        if torch.is_grad_enabled() and any(
            isinstance(x, torch.Tensor) and x.requires_grad for x in inputs
        ):
            # Training or gradients through the denoiser: caching would change the gradient.
            return self.run_full(inputs, None)[0]
        if not self.counts_steps:
            return self.run_full(inputs, None)[0]
        ownership.new_call()
        weights = self._weights_key(inputs)
        table = self.table_for(weights)
        reader = self.stream_names.get(weights)
        name = reader() if reader is not None else None
        state = table.lookup(self._identity(inputs), self._signature(inputs), name)
        timestep = self._timestep(inputs)
        table.enter_step(state, timestep)
        state.following = self.timesteps.following if timestep is not None else None
        if state.cache_off:
            state.counters.full_steps += 1
            return self.run_full(inputs, None, state=state)[0]
        # Guidance branches of one step (same latent, same timestep) take one decision: the
        # first branch decides, the others follow. Reusing in one branch while computing in
        # the other would put the whole caching error into (cond - uncond), which guidance
        # then multiplies by its scale.
        latent = self._identity_of(self.roles.hidden, inputs)
        # Branches the pipeline names (diffusers' cache contexts) also match by the latent's
        # device, shape and dtype: one step's branches share its value, not always its storage
        # (accelerate's offload to a CPU execution device copies it at every call, and the
        # allocator decides whether the copies share an address).
        named = latent is not None and (name is not None or named_scope())
        group = DecisionGroup(latent, without_address(latent) if named else None, timestep)
        leader = table.shared_decision(group, state)
        probes = state.counters.probe_evals
        if leader is not None:
            self.engine.follow(table.decider(), state)
        plan = self.engine.plan_step(state, inputs, self, leader)
        if self.probe is not None and state.counters.probe_evals != probes:
            # The probe's cost at this call's shape (a graph may serve several shapes).
            cost = self.spec.num_blocks * self.probe.last_ratio
            state.counters.probe_work += (state.counters.probe_evals - probes) * cost
            self.engine.probe_cost = cost
        if leader is None:
            table.record_decision(group, state, plan)
        if plan.reuse is not None:
            state.counters.skipped_steps += 1
            output = self.engine.reuse_output(state, inputs, self, plan)
        else:
            state.counters.full_steps += 1
            output, record = self.run_full(inputs, plan, state=state)
            self.engine.after_full_step(state, inputs, output, record, plan, self)
        if self.engine.max_cache_bytes is not None:
            self._hold_cap(table, state)
        return output

    def _hold_cap(self, table: StreamTable, state: StreamState) -> None:
        """After a step of ``state``: while the graph's streams keep more than
        ``max_cache_bytes``, the latest stream to have started drops its cache and computes
        every step from now on (the streams that started first keep theirs)."""
        cap = self.engine.max_cache_bytes
        sizes = {s.order: sum(self.engine.kept(s).values()) for s in table.live_streams()}
        total = sum(sizes.values())
        for latest in sorted(table.live_streams(), key=lambda s: -s.order):
            if total <= cap:
                return
            if sizes[latest.order] == 0 and latest is not state:
                continue
            total -= sizes[latest.order]
            latest.memory = None
            latest.cache_off = True
            warnings.warn(
                f"precisecache: max_cache_bytes={cap} is exceeded; stream {latest.name!r} "
                f"(the latest to start, {sizes[latest.order]} bytes) drops its cache and "
                "computes every step from now on",
                stacklevel=3,
            )

    def table_for(self, key: tuple) -> StreamTable:
        table = self.tables.get(key)
        if table is None:
            table = self.tables[key] = StreamTable(self.max_streams)
            if self.on_new_weights is not None:
                self.on_new_weights(key)
        return table

    def weights_key_of(self, module) -> tuple | None:
        """The key under which ``module``'s calls keep their state (None: not this graph's)."""
        if self.roles.weights_path is None:
            return ("any",)
        try:
            tensor = _attribute(module, self.roles.weights_path)
        except AttributeError:
            return None
        return weights_identity(tensor) if isinstance(tensor, torch.Tensor) else None

    # -- evaluation --------------------------------------------------------------------------

    def run_full(self, inputs: Sequence, plan: StepPlan | None, state: StreamState | None = None):
        """Evaluate every piece; blocks not in ``plan.compute_blocks`` are bypassed."""
        results: list = [None] * len(self.spec.pieces)
        tail = plan.record_tail if plan is not None and self.chain_pairs is not None else None
        record = BlockRecord() if plan is not None and (
            plan.record_blocks or plan.record_chain or tail is not None) else None
        position = 0
        chain_in = tail_in = None
        for number, piece in enumerate(self.spec.pieces):
            args = self.executor.piece_args(number, inputs, results)
            if piece.kind != "block":
                results[number] = self.executor.call_piece(number, args)
                continue
            if position == 0 and self.chain_pairs is not None:
                chain_in = [args[arg] for arg, _ in self.chain_pairs]
            if tail is not None and position == tail:
                tail_in = [args[arg] for arg, _ in self.chain_pairs]
            compute = plan is None or plan.compute_blocks is None or plan.compute_blocks[position]
            if compute:
                out = self.executor.call_piece(number, args)
                if state is not None:
                    state.counters.block_evals += 1
            else:
                outputs = [None] * (piece.num_outputs or 1)
                for (arg, item), delta in zip(piece.state_slots, plan.residuals[position]):
                    outputs[item] = args[arg] + delta
                out = pack_block_outputs(outputs, piece.num_outputs)
                state.counters.block_bypasses += 1
            if record is not None and plan.record_blocks:
                record.inputs.append(tuple(args[arg] for arg, _ in piece.state_slots))
                record.outputs.append(
                    tuple(block_outputs(out, piece.num_outputs)[i] for _, i in piece.state_slots)
                )
            results[number] = out
            position += 1
        if record is not None and (plan.record_chain or tail_in is not None):
            last = self.spec.pieces[self.last_block]
            outs = block_outputs(results[self.last_block], last.num_outputs)
            if plan.record_chain:
                record.chain_residual = tuple(
                    outs[item] - entry for (_, item), entry in zip(self.chain_pairs, chain_in)
                )
            if tail_in is not None:
                record.tail_residual = tuple(
                    outs[item] - entry for (_, item), entry in zip(self.chain_pairs, tail_in)
                )
        return self.executor.outputs(inputs, results), record

    def run_chain_residual(self, inputs: Sequence, residual: tuple):
        """A reused step in residual form: prologue, first block's input + the chain residual
        as the last block's output, epilogue. No block runs."""
        results: list = [None] * len(self.spec.pieces)
        for number, piece in enumerate(self.spec.pieces):
            if piece.kind != "block":
                args = self.executor.piece_args(number, inputs, results)
                results[number] = self.executor.call_piece(number, args)
            elif number == self.first_block:
                args = self.executor.piece_args(number, inputs, results)
                last = self.spec.pieces[self.last_block]
                outputs = [None] * (last.num_outputs or 1)
                for (arg, item), delta in zip(self.chain_pairs, residual):
                    outputs[item] = args[arg] + delta
                results[self.last_block] = pack_block_outputs(outputs, last.num_outputs)
        return self.executor.outputs(inputs, results)

    @staticmethod
    def copy_output(output):
        """A cached output handed to the caller: a copy, so the cache cannot be changed."""
        if isinstance(output, tuple):
            return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in output)
        return output.clone() if isinstance(output, torch.Tensor) else output

    # -- inputs ------------------------------------------------------------------------------

    def _weights_key(self, inputs: Sequence) -> tuple:
        if self.roles.weights is None or self.roles.weights_path is None:
            return ("any",)
        return weights_identity(inputs[self.roles.weights])

    @staticmethod
    def _identity_of(index: int | None, inputs: Sequence) -> tuple | None:
        if index is None or not isinstance(inputs[index], torch.Tensor):
            return None
        return tensor_identity(inputs[index])

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
        return self.timesteps.value(inputs[self.roles.timestep])




def _attribute(module, path: str):
    for part in path.split("."):
        module = getattr(module, part)
    return module


def chain_pairs(spec: PartitionSpec) -> tuple[tuple[int, int], ...] | None:
    """(first block's argument, last block's output) pairs of the chain's residual, or None.

    The chain residual needs one list of identical blocks (argument positions then mean the
    same in the first and the last block), no glue, and an epilogue that reads no block but
    the last.
    """
    blocks = spec.blocks
    first, last = spec.pieces[blocks[0]], spec.pieces[blocks[-1]]
    if len(spec.block_lists) != 1 or any(p.kind == "glue" for p in spec.pieces):
        return None
    if not last.state_slots:
        return None
    for piece in spec.pieces:
        if piece.kind == "epilogue":
            for ref in piece.args:
                if ref.piece in blocks and ref.piece != blocks[-1]:
                    return None
    positions = {arg for arg, _ in first.state_slots}
    pairs = tuple((arg, item) for arg, item in last.state_slots if arg in positions)
    return pairs if len(pairs) == len(last.state_slots) else None
