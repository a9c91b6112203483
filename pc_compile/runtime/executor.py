"""Runs the pieces of a partitioned graph: compiles them, calls them, bypasses blocks.

The executor is handed the pieces (GraphModules) and their ``PartitionSpec``; it never reads a
graph. Pieces whose graphs are identical (the blocks of one list) share one compiled kernel:
compilation time grows with one block, not with the depth of the model. Compilation happens on
first use, with the real tensors of that call, so each kernel is specialised to the shapes it
actually runs at (a probe-sized call gets kernels of its own).

``run`` evaluates the whole partition for one call. The caller says which blocks to compute;
every other block returns its state inputs plus the residual it is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
import torch.fx

from pc_compile.passes.partition_spec import PartitionSpec, Ref
from pc_compile.runtime import ownership
from pc_compile.runtime.inductor import compile_piece, piece_options

PieceFn = Callable[..., object]


class PieceCompiler:
    """Compiles one piece: ``"inductor"`` (the default) or ``"eager"`` (no compilation).

    ``inductor_mode`` is ``torch.compile``'s ``mode``; ``runtime/inductor.py`` says how each
    mode applies to the pieces.
    """

    def __init__(self, mode: str, inductor_mode: str | None = None, cuda_graphs: bool = False):
        self.mode = mode
        self.inductor_mode = inductor_mode
        self.options = piece_options(inductor_mode, cuda_graphs) if mode == "inductor" else {}
        self.seconds = 0.0  # total time spent compiling pieces

    def __call__(self, module: torch.fx.GraphModule, example_args: list) -> PieceFn:
        if self.mode == "eager":
            return module
        return compile_piece(module, example_args, self.options)


class Executor:
    """Evaluates a ``PartitionSpec`` over its pieces."""

    def __init__(
        self,
        spec: PartitionSpec,
        modules: Sequence[torch.fx.GraphModule],
        compiler: PieceCompiler,
    ):
        self.spec = spec
        self.modules = list(modules)
        self.compiler = compiler
        self._kernels: dict[tuple, PieceFn] = {}

    def call_piece(self, number: int, args: list):
        key = (self.spec.pieces[number].kernel_group, _layout(args))
        fn = self._kernels.get(key)
        if fn is None:
            start = time.perf_counter()
            fn = self._kernels[key] = self.compiler(self.modules[number], args)
            self.compiler.seconds += time.perf_counter() - start
        out = fn(*args)
        ownership.mark(out)
        return out

    @staticmethod
    def resolve(ref: Ref, inputs: Sequence, results: list):
        if ref.is_constant:
            return ref.constant
        if ref.piece is None:
            return inputs[ref.index]
        value = results[ref.piece]
        return value if ref.item is None else value[ref.item]

    def piece_args(self, number: int, inputs: Sequence, results: list) -> list:
        return [self.resolve(r, inputs, results) for r in self.spec.pieces[number].args]

    def outputs(self, inputs: Sequence, results: list):
        values = [self.resolve(r, inputs, results) for r in self.spec.outputs]
        return tuple(values) if self.spec.output_is_tuple else values[0]


def _layout(args: list) -> tuple:
    """What a compiled kernel is specialised to: shapes, strides, dtypes, devices."""
    return tuple(
        (tuple(a.shape), a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else a
        for a in args
    )


def block_outputs(result, num_outputs: int | None) -> tuple:
    """A block's result as a tuple of its outputs."""
    return tuple(result) if num_outputs is not None else (result,)


def pack_block_outputs(values: Sequence, num_outputs: int | None):
    return tuple(values) if num_outputs is not None else values[0]
