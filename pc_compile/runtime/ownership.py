"""What the runtime keeps across steps is its own memory, never a piece's output.

Under CUDA graphs (``mode="reduce-overhead"``) the outputs of a compiled piece live in the
graph's static memory, which the next replay of that graph overwrites: a cached step output,
a block's output or a residual that still pointed there would change under the cache's feet.
Without CUDA graphs an output is the caller's to keep, but the rule is the same everywhere so
that it is tested where it is cheap (on CPU) and holds where it matters.

So every tensor the runtime keeps past the call that produced it goes through ``keep``: a
tensor whose storage is that of an output of a piece call of the current denoiser call (the
``Executor`` marks them) is copied; a tensor the runtime computed itself (a difference, an
extrapolation, a spectrum) is kept as is. A copy is one pass over memory, a small fraction of
the step that produced the tensor; ``stats()["kept_bytes"]`` counts what is kept.

The marks are per thread and cleared at the start of each denoiser call.
"""

from __future__ import annotations

import threading

import torch

_local = threading.local()


def _marks() -> set:
    marks = getattr(_local, "marks", None)
    if marks is None:
        marks = _local.marks = set()
    return marks


def _key(t: torch.Tensor) -> tuple:
    return (t.device, t.untyped_storage().data_ptr())


def new_call() -> None:
    """A denoiser call starts: the marks of the previous one no longer matter."""
    _marks().clear()


def mark(outputs) -> None:
    """``outputs`` (a tensor or a tuple/list of them) came out of a piece call."""
    marks = _marks()
    for t in outputs if isinstance(outputs, (tuple, list)) else (outputs,):
        if isinstance(t, torch.Tensor):
            marks.add(_key(t))


def is_piece_output(t: torch.Tensor) -> bool:
    """Whether ``t`` shares its storage with a piece output of the current call."""
    return _key(t) in _marks()


def keep(value):
    """``value`` (a tensor, or a tuple/list of them and other objects) made safe to keep
    across calls: the tensors that share a piece output's storage are copied, detached."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return value.clone() if is_piece_output(value) else value
    if isinstance(value, tuple):
        return tuple(keep(v) for v in value)
    if isinstance(value, list):
        return [keep(v) for v in value]
    return value
