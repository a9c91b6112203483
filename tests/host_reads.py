"""Counting device-to-host reads while code runs, on any device (a CPU included).

On a GPU every read of a device tensor's value by the host (``t.item()``, ``float(t)``,
``if t:``, ``t.tolist()``, ``t.cpu()``, ``torch.nonzero(t)``...) is a synchronisation that
stalls the launch queue. A CPU run never synchronises, so the syncs cannot be observed there;
the *calls* that would synchronise can. ``HostReads`` counts them:

    with HostReads() as reads:
        for i in range(steps):
            with reads.scope(step=i, branch="cond"):
                model(...)
    reads.count, reads.per("step"), reads.sites()

How the calls are seen, and why not with a ``TorchFunctionMode``: a mode does see every method
below (on torch 2.13 ``item``, ``tolist``, ``__bool__``, ``__float__``, ``__int__``,
``__index__``, ``cpu``, ``numpy``, ``nonzero``... all dispatch through ``__torch_function__``),
but an active mode is part of what Dynamo guards on: entering one around a ``torch.compile``d
model recompiles it (with the mode traced into the graph), which for a caching backend means a
fresh cache and another program than the one being measured. So the harness replaces the
methods on ``torch.Tensor`` (and the data-dependent functions on ``torch``) with counting
wrappers for the duration of the ``with`` block, and puts the originals back after. Python
looks dunder methods up on the type, so ``float(t)``, ``bool(t)``, ``int(t)``,
``operator.index(t)`` and f-strings all reach the wrappers. A compiled model's frames are not
re-traced (Dynamo does not guard on ``torch.Tensor``'s attributes), and whatever runs in Python
inside a compiled call (a graph break, a backend's runtime, Inductor's Python wrapper) is
counted like any other code.

What counts as one read:

* a value read: ``item``, ``tolist``, ``__bool__``, ``__float__``, ``__int__``, ``__index__``,
  ``__complex__``, ``__format__``, ``__repr__``/``__str__`` (printing), ``numpy``,
  ``__array__`` (through ``numpy``), ``equal``, ``allclose``, ``is_nonzero``;
* a copy to the host: ``cpu()`` (on a CPU run a no-op, but on a GPU the read), and ``to()``
  from another device to the CPU (on a CPU run ``to("cpu")`` cannot be told from a compiled
  graph placing its own tensors on the device it was traced on, so it is not counted there);
* an op whose output shape depends on the data: ``nonzero``, ``argwhere``, ``masked_select``,
  ``unique``, ``unique_consecutive``, ``torch.where(condition)`` with one argument,
  ``repeat_interleave`` with tensor repeats and no ``output_size``, ``bincount``, and indexing
  (``x[mask]``, ``x[mask] = v``) with a boolean tensor.

Only reads of tensors count (``float(3.0)`` never reaches a wrapper), fake and meta tensors
(what the compiler traces with) never do, and a read made while another is being counted (the
``numpy()`` under ``__array__``, the ``item()`` under ``__format__``) is part of that one.

Not seen: reads made inside C++ without a Python call (``torch.tensor([t0, t1])`` of 0-d
tensors, a 0-d tensor passed where an op takes a Python number), and code that held a
reference to an original method before the ``with`` block (``item = torch.Tensor.item``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor

# Tensor methods that read the value on the host.
VALUE_METHODS = (
    "item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__",
    "__format__", "__repr__", "__str__", "numpy", "__array__", "equal", "allclose", "is_nonzero",
)
# Tensor methods whose output shape depends on the data.
DATA_METHODS = ("nonzero", "argwhere", "masked_select", "unique", "unique_consecutive",
                "bincount")
# Functions of the ``torch`` namespace that do one of the above.
TORCH_FUNCTIONS = ("nonzero", "argwhere", "masked_select", "unique", "unique_consecutive",
                   "bincount", "equal", "allclose", "is_nonzero", "where", "repeat_interleave")

_HERE = os.path.abspath(__file__)
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


@dataclass(frozen=True)
class Read:
    """One counted read: what was called, the scope it happened in, and where."""

    kind: str
    scope: tuple  # the ``scope(**labels)`` items active at the time, sorted
    where: tuple  # (file, line, function) frames outside torch and this file, innermost first

    @property
    def labels(self) -> dict:
        return dict(self.scope)

    @property
    def site(self) -> str:
        """The innermost frame outside torch and this file, as ``path:line (function)``."""
        if not self.where:
            return "?"
        file, line, function = self.where[0]
        return f"{_short(file)}:{line} ({function})"


@dataclass
class HostReads:
    """Counts host reads of tensors while active (see the module docstring).

    ``stack_depth`` frames of each read's call stack (outside torch) are kept; 0 keeps none
    and makes counting cheaper."""

    stack_depth: int = 6
    reads: list = field(default_factory=list)

    def __post_init__(self):
        self._scope: dict = {}
        self._saved: list = []
        self._busy = False
        self._active = False

    # -- use ------------------------------------------------------------------------------------

    def __enter__(self) -> HostReads:
        if self._active:
            raise RuntimeError("HostReads is already active")
        for name in VALUE_METHODS + DATA_METHODS:
            self._patch(torch.Tensor, name, self._wrap(name, _always))
        self._patch(torch.Tensor, "cpu", self._wrap("cpu", _always))
        self._patch(torch.Tensor, "to", self._wrap("to", _to_host))
        self._patch(torch.Tensor, "repeat_interleave",
                    self._wrap("repeat_interleave", _repeat_needs_size))
        self._patch(torch.Tensor, "__getitem__", self._wrap("index[mask]", _bool_index))
        self._patch(torch.Tensor, "__setitem__", self._wrap("index[mask]=", _bool_index))
        for name in TORCH_FUNCTIONS:
            check = {"where": _one_argument, "repeat_interleave": _repeat_needs_size}.get(
                name, _always)
            self._patch(torch, name, self._wrap(f"torch.{name}", check))
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        while self._saved:
            owner, name, had, original = self._saved.pop()
            if had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
        self._active = False

    @contextlib.contextmanager
    def scope(self, **labels):
        """Reads made inside are labelled with ``labels`` (nested scopes add labels)."""
        saved = self._scope
        self._scope = {**saved, **labels}
        try:
            yield self
        finally:
            self._scope = saved

    # -- results --------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.reads)

    def where(self, **labels) -> list[Read]:
        """The reads whose scope has every one of ``labels``."""
        return [r for r in self.reads if all(r.labels.get(k) == v for k, v in labels.items())]

    def per(self, label: str, values=None) -> dict:
        """Reads per value of ``label`` (e.g. ``per("step")``); ``values`` lists values to report
        even when they saw no read (a step without reads counts 0)."""
        counts = Counter(r.labels.get(label) for r in self.reads if label in r.labels)
        if values is not None:
            return {v: counts.get(v, 0) for v in values}
        return dict(counts)

    def kinds(self) -> Counter:
        return Counter(r.kind for r in self.reads)

    def sites(self, reads=None, callers: int = 1) -> Counter:
        """How many reads each call site made: ``kind at path:line (function)``, then up to
        ``callers`` calling frames (``<- path:line (function)``)."""
        counted = Counter()
        for r in self.reads if reads is None else reads:
            chain = " <- ".join(
                f"{_short(file)}:{line} ({function})"
                for file, line, function in r.where[1: 1 + callers]
            )
            counted[f"{r.kind} at {r.site}" + (f" <- {chain}" if chain else "")] += 1
        return counted

    # -- machinery ------------------------------------------------------------------------------

    def _patch(self, owner, name: str, wrapper) -> None:
        had = name in vars(owner)
        original = vars(owner).get(name)
        base = getattr(owner, name, None)
        if base is None:
            return
        self._saved.append((owner, name, had, original))
        setattr(owner, name, wrapper(base))

    def _wrap(self, kind: str, counts):
        harness = self

        def decorate(base):
            @functools.wraps(base)
            def counting(*args, **kwargs):
                if harness._busy or torch.compiler.is_compiling():
                    return base(*args, **kwargs)
                tensor = _first_tensor(args)
                if tensor is None or _is_traced(tensor) or not counts(args, kwargs):
                    return base(*args, **kwargs)
                harness._busy = True
                try:
                    harness._record(kind)
                    return base(*args, **kwargs)
                finally:
                    harness._busy = False

            _run_outside_dynamo(counting)
            return counting

        return decorate

    def _record(self, kind: str) -> None:
        where = ()
        if self.stack_depth:
            frames = []
            for summary in reversed(traceback.extract_stack(sys._getframe(2))):
                path = os.path.abspath(summary.filename)
                if path == _HERE or path.startswith(_TORCH_DIR):
                    continue
                frames.append((summary.filename, summary.lineno, summary.name))
                if len(frames) == self.stack_depth:
                    break
            where = tuple(frames)
        self.reads.append(Read(kind, tuple(sorted(self._scope.items(), key=str)), where))


def _run_outside_dynamo(fn) -> None:
    """While a compiled frame runs, Dynamo compiles the Python functions it calls (a graph
    break's call reaches a wrapper as a new frame), which would trace the counting away. Its
    frames are run as they are; inside a trace the wrapper is still inlined (and counts
    nothing: ``is_compiling()``)."""
    skip = getattr(torch._dynamo.eval_frame, "skip_code", None)
    if skip is not None:
        skip(fn.__code__)


def _first_tensor(args):
    for a in args[:2]:
        if isinstance(a, torch.Tensor):
            return a
    return None


def _is_traced(tensor: torch.Tensor) -> bool:
    """Fake, functional and meta tensors: what the compiler traces with, never a read."""
    return tensor.is_meta or isinstance(tensor, (FakeTensor, FunctionalTensor))


def _always(args, kwargs) -> bool:
    return True


def _to_host(args, kwargs) -> bool:
    """``Tensor.to(...)``: a read when it moves a tensor off another device to the CPU. (On a
    CPU run ``.to("cpu")`` cannot be told from a model placing its own tensors, which compiled
    graphs do with the device they were traced on, so it is not counted there.)"""
    target = kwargs.get("device")
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            target = a
    if target is None or args[0].device.type == "cpu":
        return False
    try:
        return torch.device(target).type == "cpu"
    except (RuntimeError, TypeError):
        return False


def _one_argument(args, kwargs) -> bool:
    """``torch.where(condition)`` (the nonzero form) but not ``torch.where(c, x, y)``."""
    return len(args) + len(kwargs) == 1


def _repeat_needs_size(args, kwargs) -> bool:
    repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
    if len(args) == 1 and not kwargs:  # torch.repeat_interleave(repeats)
        return True
    return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None


def _bool_index(args, kwargs) -> bool:
    index = args[1] if len(args) > 1 else None
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
               for i in items)


def _short(path: str) -> str:
    path = os.path.abspath(path)
    for root in (os.getcwd(),):
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root)
    marker = os.sep + "site-packages" + os.sep
    if marker in path:
        return path.split(marker, 1)[1]
    return path
