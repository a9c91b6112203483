"""What Dynamo hands over beyond the graph: the only code that touches Dynamo's internals.

A backend receives a GraphModule and example inputs. PreciseCache also needs the module being
compiled (whose state ``stats`` reports, whose forward the probe calls again), the arguments of
the call being traced (the probe's template), and where each graph input came from
(``node.meta["grapharg"].source``: ``L['kwargs']['timestep']``, ``L['self']...weight``). None of
these is a public API of Dynamo, so each is read here, behind ``try``, and a missing one is said
at DEBUG on the logger ``pc_compile``: the caller then works without it (no probe, no owner).

A model with diffusers hooks on its root (context parallelism's input split, for one) is called
through the hook's wrapper ``new_forward(module, *args, **kwargs)``: the frame Dynamo hands over
is that wrapper, whose module is the local ``module``, not ``self``. When the hook's
``pre_forward`` breaks the graph (context parallelism's split hook does on every call where an
input has an unexpected rank, e.g. Wan's 1-D timestep), the graph that holds the blocks is
Dynamo's resumption of the wrapper after ``pre_forward``, where the call is that function's
result ``(args, kwargs)`` on the stack (``L['___stack0']``). ``capture`` reads both frames as
the module's forward and rewrites their input sources to the forward's (``L['self']``,
``L['args']``, ``L['kwargs']``), so the roles and the probe work as for a plain module.

Any other function of ``(module, *args, **kwargs)`` wrapping one module's forward is read the
same way: accelerate's ``add_hook_to_module`` (which ``pipe.enable_model_cpu_offload()`` uses)
replaces ``module.forward`` by such a function, and its compiler-disabled ``pre_forward`` breaks
the graph there, so Dynamo compiles the rest as a resume frame whose call is the
``(args, kwargs)`` pair in a stack slot. The frame's one module is the owner.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass, field

import torch
import torch.fx

from pc_compile.passes.module_paths import normalize_module_path

log = logging.getLogger("pc_compile")

# One attribute hop of a Dynamo source: ['name'], ["name"], [3], .name, .3
# Where Dynamo keeps the frame it is translating: (module, attribute chain). One place to
# change when a torch version moves it.
CURRENT_FRAME = ("torch._dynamo.symbolic_convert", "InstructionTranslator.current_tx")
# diffusers' hook wrapper (``hooks/hooks.py``, ``new_forward``): the locals that say a frame is
# it, and where Dynamo's resumption after ``pre_forward`` keeps that call's result.
HOOK_WRAPPER_LOCALS = ("module", "function_reference")
RESUMED_CALL = "___stack0"
# Where ``capture`` leaves a graph's input sources rewritten to the forward's.
SOURCES_META = "pc_compile_sources"
# Dynamo's state per code object (its compiled entries, and the mark that runs a frame of it
# eagerly for good): the module holding it, how to list the entries, how to clear it all.
CODE_STATE = ("torch._C._dynamo.eval_frame", "_debug_get_cache_entry_list", "reset_code")


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
    """Per placeholder of ``gm``, the Dynamo source it was read from (None: unknown); as the
    module's forward would read it when ``capture`` found the frame to be a hook's wrapper."""
    rewritten = getattr(gm, "meta", {}).get(SOURCES_META)
    if rewritten is not None:
        return list(rewritten)
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
    ``L['self']._modules['proj']._parameters['weight']`` (the passes' reading of a source)."""
    return normalize_module_path(source)


@dataclass
class Capture:
    """What the backend learns about one compile besides the graph."""

    owner: object = None  # the nn.Module (or, for a compiled function, its code object)
    module: torch.nn.Module | None = None  # the module whose forward is being compiled
    call: dict | None = None  # that forward's arguments by name, as this call passed them
    sources: list[str | None] = field(default_factory=list)  # per graph input


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
    if not isinstance(owner, torch.nn.Module):
        wrapped = _hook_wrapper(locals_) or _wrapper_call(locals_)
        if wrapped is None:
            result.owner = code
            return result
        owner, call_locals, renames = wrapped
        result.sources = [_rename(s, renames) for s in result.sources]
        gm.meta[SOURCES_META] = list(result.sources)
        log.debug("capture: %s's forward through a wrapper of it (%s)",
                  type(owner).__name__, code.co_name)
        locals_ = call_locals
    result.owner = result.module = owner
    result.call = _arguments(owner, locals_)
    return result


def _hook_wrapper(locals_: dict):
    """``(module, {"args", "kwargs"}, source renames)`` when the frame is diffusers' hook
    wrapper (at its entry, or resumed after ``pre_forward``); None otherwise."""
    module = locals_.get(HOOK_WRAPPER_LOCALS[0])
    if not isinstance(module, torch.nn.Module):
        return None
    if any(name not in locals_ for name in HOOK_WRAPPER_LOCALS):
        return None
    # The module's weights are read through the wrapper's reference to the bound forward.
    renames = [("L['module']", "L['self']"),
               ("L['function_reference'].forward.__self__", "L['self']")]
    if "args" in locals_ and "kwargs" in locals_:
        return module, {"args": locals_["args"], "kwargs": locals_["kwargs"]}, renames
    resumed = locals_.get(RESUMED_CALL)
    if (isinstance(resumed, (tuple, list)) and len(resumed) == 2
            and isinstance(resumed[0], (tuple, list)) and isinstance(resumed[1], dict)):
        renames += [(f"L['{RESUMED_CALL}'][0]", "L['args']"),
                    (f"L['{RESUMED_CALL}'][1]", "L['kwargs']")]
        return module, {"args": resumed[0], "kwargs": resumed[1]}, renames
    _missing(f"the call of the hook wrapper's resumption ({RESUMED_CALL})")
    return None


def _wrapper_call(locals_: dict):
    """``(module, {"args", "kwargs"}, source renames)`` when the frame is another function of
    ``(module, *args, **kwargs)`` wrapping one module's forward (accelerate's hook), at its
    entry or resumed after a graph break; None otherwise."""
    modules = [(n, v) for n, v in locals_.items() if isinstance(v, torch.nn.Module)]
    if len(modules) != 1:
        return None
    name, module = modules[0]
    renames = [(f"L['{name}']", "L['self']")]
    args, kwargs = locals_.get("args"), locals_.get("kwargs")
    if not (isinstance(args, tuple) and isinstance(kwargs, dict)):
        # Resumed after a graph break: the call is the (args, kwargs) pair on the stack.
        pairs = [n for n, v in locals_.items() if n.startswith("___stack") and _is_call(v)]
        if len(pairs) != 1:
            return None
        (slot,) = pairs
        args, kwargs = locals_[slot]
        renames += [(f"L['{slot}'][0]", "L['args']"), (f"L['{slot}'][1]", "L['kwargs']")]
    return module, {"args": args, "kwargs": kwargs}, renames


def _is_call(value) -> bool:
    return (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], tuple)
            and isinstance(value[1], dict))


def _rename(source: str | None, renames) -> str | None:
    """``source`` with its root renamed (``L['module']._modules['proj']`` to
    ``L['self']._modules['proj']``); the longest matching root wins, whole roots only."""
    if source is None:
        return None
    for old, new in sorted(renames, key=lambda r: len(r[0]), reverse=True):
        if source == old or (source.startswith(old) and source[len(old)] in ".["):
            return new + source[len(old):]
    return source


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


def retrace(functions) -> bool:
    """Make Dynamo translate the frames of ``functions`` again at their next call: clear its
    state of each code object that holds no compiled entry (a frame it runs eagerly for good
    after a graph break in a loop; clearing a code with entries would throw away compiled
    graphs, of other models too). True when at least one code was cleared."""
    module, entries_of, reset = CODE_STATE
    try:
        state = importlib.import_module(module)
        entries_of, reset = getattr(state, entries_of), getattr(state, reset)
    except (ImportError, AttributeError) as error:
        _missing(f"per-code state ({module}.{CODE_STATE[1]}, {CODE_STATE[2]})", error)
        return False
    cleared = False
    for function in functions:
        code = getattr(function, "__code__", None)
        if code is None:
            continue
        try:
            if entries_of(code):
                continue
            reset(code)
        except Exception as error:  # noqa: BLE001 - a private API that may change
            _missing(f"per-code state of {code.co_name}", error)
            continue
        cleared = True
    return cleared


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
