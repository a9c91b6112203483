"""What Dynamo hands over beyond the graph: the only code that touches Dynamo's internals.

A backend receives a GraphModule and example inputs. PreciseCache also needs the module being
compiled (whose state ``stats`` reports, whose forward the probe calls again), the arguments of
the call being traced (the probe's template), and where each graph input came from
(``node.meta["grapharg"].source``: ``L['kwargs']['timestep']``, ``L['self']...weight``). None of
these is a public API of Dynamo, so each is read here, behind ``try``, and a missing one is said
at DEBUG on the logger ``pc_compile``: the caller then works without it (no probe, no owner).

The frame Dynamo translates is usually the module's ``forward`` (or diffusers' wrapper of it,
``(self, *args, **kwargs)``). A hook that replaces ``module.forward`` by a function of
``(module, *args, **kwargs)`` (accelerate's ``add_hook_to_module``, which
``pipe.enable_model_cpu_offload()`` uses) hands over that function's frame instead, with no
``self``; and where the hook's pre-forward is compiler-disabled (accelerate's is), Dynamo breaks
the graph there and compiles the rest of the function as a resume frame, whose call is the
``(args, kwargs)`` pair the pre-forward returned, held in a stack slot (``L['___stack0']``).
``capture`` finds the module and the call in such a frame too, and renames the sources to the
plain form (``L['self']``, ``L['args'][i]``, ``L['kwargs'][name]``), so that nothing downstream
knows which frame it was.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from dataclasses import dataclass, field

import torch
import torch.fx

log = logging.getLogger("pc_compile")

# One attribute hop of a Dynamo source: ['name'], ["name"], [3], .name, .3
_COMPONENT = re.compile(r"\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(\d+)\s*\]|\.(\w+)")
_ROOT = re.compile(r"^\s*[LG]\[\s*['\"][^'\"]*['\"]\s*\]")
_STORAGE = {"__dict__", "_modules", "_parameters", "_buffers"}
# Where Dynamo keeps the frame it is translating: (module, attribute chain). One place to
# change when a torch version moves it.
CURRENT_FRAME = ("torch._dynamo.symbolic_convert", "InstructionTranslator.current_tx")


def _missing(what: str, error: BaseException | None = None) -> None:
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    log.debug("capture: Dynamo's %s is not available%s; working without it", what, detail)


def current_frame():
    """The frame Dynamo is translating right now (``f_locals``, ``f_code``), or None."""
    module, chain = CURRENT_FRAME
    try:
        current = importlib.import_module(module)
        for name in chain.split("."):
            current = getattr(current, name)
        frame = current()
    except Exception as error:  # noqa: BLE001 - a private API that may move between versions
        _missing(f"current frame ({chain})", error)
        return None
    if frame is None:
        _missing("current frame (no frame is being translated)")
    return frame


def graph_input_sources(gm: torch.fx.GraphModule) -> list[str | None]:
    """Per placeholder of ``gm``, the Dynamo source it was read from (None: unknown)."""
    sources: list[str | None] = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        grapharg = node.meta.get("grapharg")
        name = getattr(getattr(grapharg, "source", None), "name", None)
        name = name() if callable(name) else name
        sources.append(name if isinstance(name, str) else None)
    if sources and all(s is None for s in sources):
        _missing("graph input sources (node.meta['grapharg'].source)")
    return sources


def source_path(source: str) -> str:
    """A Dynamo source as a dotted path below its root: ``proj.weight`` for
    ``L['self']._modules['proj']._parameters['weight']``."""
    rest = _ROOT.sub("", source, count=1)
    parts = []
    for match in _COMPONENT.finditer(rest):
        name = next(g for g in match.groups() if g is not None)
        if name not in _STORAGE:
            parts.append(name)
    return ".".join(parts)


@dataclass
class Capture:
    """What the backend learns about one compile besides the graph."""

    owner: object = None  # the nn.Module (or, for a compiled function, its code object)
    module: torch.nn.Module | None = None  # the module whose forward is being compiled
    call: dict | None = None  # that forward's arguments by name, as this call passed them
    # Per graph input, its source in the plain form: L['self']..., L['args'][i], L['kwargs'][k]
    sources: list[str | None] = field(default_factory=list)


def capture(gm: torch.fx.GraphModule) -> Capture:
    """Read, while Dynamo still holds it, the module, the call and the inputs' sources."""
    frame = current_frame()
    result = Capture(sources=graph_input_sources(gm))
    if frame is None:
        return result
    try:
        locals_, code = frame.f_locals, frame.f_code
    except AttributeError as error:
        _missing("frame locals (f_locals, f_code)", error)
        return result
    owner = locals_.get("self")
    if isinstance(owner, torch.nn.Module):
        result.owner = result.module = owner
        result.call = _arguments(owner, locals_)
        return result
    wrapped = _wrapper_call(locals_)
    if wrapped is None:
        result.owner = code
        return result
    module, arguments, roots = wrapped
    log.debug("capture: %s is compiled through %s, a wrapper of its forward",
              type(module).__name__, code.co_name)
    result.owner = result.module = module
    result.call = _arguments(module, arguments)
    result.sources = [rename_root(s, roots) if s is not None else None for s in result.sources]
    return result


def _arguments(module: torch.nn.Module, locals_: dict) -> dict | None:
    try:
        signature = inspect.signature(module.forward)
        if "args" in locals_ and "kwargs" in locals_:
            # The frame wraps forward (diffusers' models): (self, *args, **kwargs).
            return dict(signature.bind(*locals_["args"], **locals_["kwargs"]).arguments)
        # The frame is forward itself: its locals at entry are its arguments.
        return {n: locals_[n] for n in signature.parameters if n in locals_}
    except (TypeError, ValueError) as error:
        log.debug("capture: the call's arguments do not bind to %s.forward (%s)",
                  type(module).__name__, error)
        return None


def _wrapper_call(locals_: dict):
    """``(module, {"args", "kwargs"}, roots)`` when the frame is a function of
    ``(module, *args, **kwargs)`` wrapping one module's forward, else None. ``roots`` maps the
    sources' roots in this frame to the plain form."""
    modules = [(n, v) for n, v in locals_.items() if isinstance(v, torch.nn.Module)]
    if len(modules) != 1:
        return None
    name, module = modules[0]
    roots = {f"L['{name}']": "L['self']"}
    args, kwargs = locals_.get("args"), locals_.get("kwargs")
    if not (isinstance(args, tuple) and isinstance(kwargs, dict)):
        # Resumed after a graph break: the call is the (args, kwargs) pair on the stack.
        pairs = [n for n, v in locals_.items() if n.startswith("___stack") and _is_call(v)]
        if len(pairs) != 1:
            return None
        (slot,) = pairs
        args, kwargs = locals_[slot]
        roots.update({f"L['{slot}'][0]": "L['args']", f"L['{slot}'][1]": "L['kwargs']"})
    return module, {"args": args, "kwargs": kwargs}, roots


def _is_call(value) -> bool:
    return (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple)
            and isinstance(value[1], dict))


def rename_root(source: str, roots: dict[str, str]) -> str:
    """``source`` with its root renamed: ``L['module']._modules['proj']`` -> ``L['self']...``
    for ``roots = {"L['module']": "L['self']"}``; the longest matching root wins."""
    for old in sorted(roots, key=len, reverse=True):
        if source == old or (source.startswith(old) and source[len(old)] in ".["):
            return roots[old] + source[len(old):]
    return source


def compiled_original(compiled):
    """The module or function that ``torch.compile`` wrapped (``compiled`` itself if none):
    the key under which ``stats`` finds its graphs."""
    if isinstance(compiled, torch.nn.Module):
        original = getattr(compiled, "_orig_mod", None)
        if original is None and type(compiled).__name__ == "OptimizedModule":
            _missing("OptimizedModule._orig_mod")
        return compiled if original is None else original
    original = getattr(compiled, "_torchdynamo_orig_callable", compiled)
    if isinstance(original, torch.nn.Module):
        return original
    return getattr(original, "__code__", None)
