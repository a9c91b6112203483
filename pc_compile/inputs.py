"""Which graph inputs are the latent, the timestep and the conditioning, and whose graph it is.

Dynamo records where each graph input came from (``node.meta["grapharg"].source``): the
forward's arguments appear as ``L['args'][0]``, ``L['kwargs']['timestep']`` or, for a compiled
function, ``L['timestep']``; parameters and buffers as attribute chains of ``L['self']``. The
positional ones are named through the signature of the module's ``forward``. The module itself
is read from the frame Dynamo is compiling, when there is one.
"""

from __future__ import annotations

import inspect
import re

import torch
import torch.fx

from pc_compile.passes.module_paths import normalize_module_path
from pc_compile.runtime.cached_graph import InputRoles

HIDDEN_NAMES = ("hidden_states", "x", "latents", "latent", "sample", "img")
TIMESTEP_NAMES = ("timestep", "timesteps", "t", "sigma")
CONTEXT_NAMES = ("encoder_hidden_states", "context", "txt", "prompt_embeds", "y", "cond")

_POSITIONAL = re.compile(r"^L\['args'\]\[(\d+)\]$")
_KEYWORD = re.compile(r"^L\['kwargs'\]\['(\w+)'\]$")
_LOCAL = re.compile(r"^L\['(\w+)'\]$")


def compiling_frame():
    """The frame Dynamo is translating right now (f_locals, f_code), or None.

    A private API of Dynamo; without it there is no owner (stats) and no probe.
    """
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        return InstructionTranslator.current_tx()
    except Exception:  # noqa: BLE001 - private API, may move between torch versions
        return None


def compiled_owner():
    """The module (or function code) Dynamo is compiling right now, or None."""
    tx = compiling_frame()
    if tx is None:
        return None
    owner = tx.f_locals.get("self")
    if isinstance(owner, torch.nn.Module):
        return owner
    return tx.f_code


def _sources(gm: torch.fx.GraphModule) -> list[str | None]:
    sources = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        grapharg = node.meta.get("grapharg")
        source = getattr(getattr(grapharg, "source", None), "name", None)
        source = source() if callable(source) else source
        sources.append(source if isinstance(source, str) else None)
    return sources


def weights_input(gm: torch.fx.GraphModule, example_inputs) -> tuple[int | None, str | None]:
    """The first parameter input of the graph and its path in the compiled module."""
    for i, source in enumerate(_sources(gm)):
        if source and source.startswith("L['self']") and i < len(example_inputs):
            if isinstance(example_inputs[i], torch.nn.Parameter):
                return i, normalize_module_path(source)
    return None, None


def input_names(gm: torch.fx.GraphModule, owner) -> list[str | None]:
    """Per placeholder, the forward argument it is (None: a parameter, buffer or size)."""
    positional: list[str] = []
    if isinstance(owner, torch.nn.Module):
        try:
            positional = list(inspect.signature(owner.forward).parameters)
        except (TypeError, ValueError):
            positional = []
    names: list[str | None] = []
    for source in _sources(gm):
        name = None
        if isinstance(source, str):
            if m := _POSITIONAL.match(source):
                i = int(m.group(1))
                name = positional[i] if i < len(positional) else f"arg{i}"
            elif m := _KEYWORD.match(source):
                name = m.group(1)
            elif (m := _LOCAL.match(source)) and m.group(1) != "self":
                name = m.group(1)
        names.append(name)
    return names


def find_roles(names: list[str | None], weights=(None, None)) -> InputRoles:
    def first(candidates):
        for c in candidates:
            if c in names:
                return names.index(c)
        return None

    hidden = first(HIDDEN_NAMES)
    if hidden is None:
        hidden = next((i for i, n in enumerate(names) if n is not None), None)
    return InputRoles(
        hidden=hidden,
        timestep=first(TIMESTEP_NAMES),
        context=first(CONTEXT_NAMES),
        user_inputs=tuple(i for i, n in enumerate(names) if n is not None),
        weights=weights[0],
        weights_path=weights[1],
    )
