"""Compiling one piece with Inductor, through its public entry point.

``torch._inductor.standalone_compile`` (torch >= 2.8) compiles an FX graph outside Dynamo: given
``dynamic_shapes="from_example_inputs"`` it specialises the kernel to the example arguments'
shapes and strides, under a fake-tensor mode with a shape environment of its own, so Inductor's
FX graph cache (and AOTAutograd's) serve a warm start. Where it is missing, ``compile_fx`` is
called with such a fake mode by hand.

Inductor may rewrite the graph it compiles in place (a piece that returns one tensor comes out
returning a tuple), so it is always handed a copy: the piece's GraphModule is compiled again at
every new shape, and must stay as the passes made it.

Modes. ``torch.compile``'s ``mode`` is applied through ``torch._inductor.list_mode_options``,
with one change by default: pieces do not run under Inductor's CUDA graphs, so
``reduce-overhead`` compiles them like ``default`` and ``max-autotune`` like
``max-autotune-no-cudagraphs``, said once by a warning. The runtime copies what it keeps out of
a piece's outputs (``runtime/ownership.py``), which a CUDA-graph replay would overwrite, so the
pieces can run under CUDA graphs: the option ``cuda_graphs=True`` keeps the mode's CUDA graphs.
It stays off by default until it is measured on a GPU (``benchmarks/gpu_check.py``'s ``-ro``
rows run it). A graph that falls back to plain Inductor gets the user's mode unchanged.
"""

from __future__ import annotations

import copy
import inspect
import logging
import warnings

import torch
import torch.fx

log = logging.getLogger("pc_compile")

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDAGRAPH_MODES = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
_said: set[str] = set()


def mode_options(mode: str | None) -> dict:
    """Inductor's config patches for ``mode`` (``torch.compile``'s names)."""
    from torch._inductor import list_mode_options

    try:
        return dict(list_mode_options(mode or "default"))
    except (RuntimeError, KeyError) as error:
        raise ValueError(f"mode={mode!r} is not an Inductor mode; choose one of "
                         f"{', '.join(MODES)}") from error


def piece_options(mode: str | None, cuda_graphs: bool = False) -> dict:
    """The config patches the pieces are compiled with under ``mode``: the mode's, without
    CUDA graphs unless ``cuda_graphs`` (see the module's docstring)."""
    patches = mode_options(mode)
    if cuda_graphs:
        return patches
    if patches.get("triton.cudagraphs") and mode not in _said:
        _said.add(mode)
        message = (f"precisecache: mode={mode!r} compiles the cached pieces as "
                   f"mode={_CUDAGRAPH_MODES.get(mode, 'default')!r}, without CUDA graphs; "
                   "backend=pc_compile.backend(cuda_graphs=True) keeps them (not yet measured on "
                   "a GPU)")
        log.debug(message)
        warnings.warn(message, UserWarning, stacklevel=3)
    patches["triton.cudagraphs"] = False
    return patches


def compile_piece(module: torch.fx.GraphModule, example_args: list, options: dict):
    """A callable running ``module`` compiled by Inductor for ``example_args``'s shapes.
    ``module`` itself is left unchanged."""
    piece = copy.deepcopy(module)
    standalone = getattr(torch._inductor, "standalone_compile", None)
    if standalone is None:
        return _compile_fx(piece, example_args, options)
    extra = {}
    if "donate_graph_module" in inspect.signature(standalone).parameters:
        extra["donate_graph_module"] = True  # ``piece`` is our copy: no second copy needed
    if not is_symbolic(module):
        return standalone(piece, list(example_args), dynamic_shapes="from_example_inputs",
                          options={"config_patches": options}, **extra)
    # A piece of a graph Dynamo traced with dynamic sizes: specialised to this call's concrete
    # layout like any other (the executor keeps one kernel per layout).
    try:
        return standalone(piece, list(example_args), dynamic_shapes="from_example_inputs",
                          options={"config_patches": options}, **extra)
    except Exception as error:  # noqa: BLE001 - Inductor's own errors on symbolic graphs
        # A float Dynamo made symbolic under dynamic=True (a layer norm's eps, read with
        # ``.item()``) is data-dependent in a fresh shape environment
        # (``GuardOnDataDependentSymNode``); compiling in Dynamo's own fake mode
        # (``from_graph``) asks for a new Dynamo trace instead (TensorifyScalarRestartAnalysis).
        # This piece runs uncompiled, said once.
        key = f"symbolic:{type(error).__name__}"
        if key not in _said:
            _said.add(key)
            message = ("precisecache: a piece of a graph traced with dynamic shapes could not "
                       f"be compiled by Inductor ({type(error).__name__}); it runs uncompiled "
                       "(compile with dynamic=None or dynamic=False to compile every piece)")
            log.debug("%s: %s", message, error)
            warnings.warn(message, UserWarning, stacklevel=3)
        return module


def is_symbolic(module: torch.fx.GraphModule) -> bool:
    """Whether ``module``'s inputs carry symbolic sizes or values (a dynamic Dynamo graph)."""
    for node in module.graph.find_nodes(op="placeholder"):
        value = node.meta.get("val", node.meta.get("example_value"))
        if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            return True
        if isinstance(value, torch.Tensor) and any(
            isinstance(d, torch.SymInt) for d in (*value.shape, *value.stride())
        ):
            return True
    return False


def _compile_fx(piece, example_args, options):
    """For a torch without ``standalone_compile``: ``compile_fx`` under a fake mode with a
    shape environment (given real tensors, Inductor bypasses its FX graph cache)."""
    from torch._inductor.compile_fx import compile_fx
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    log.debug("inductor: torch._inductor.standalone_compile is missing; using compile_fx")
    fake_mode = FakeTensorMode(shape_env=ShapeEnv())
    fake_args = [
        fake_mode.from_tensor(a, static_shapes=True) if isinstance(a, torch.Tensor) else a
        for a in example_args
    ]
    return compile_fx(piece, fake_args, config_patches=options)
