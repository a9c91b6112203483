"""Which graph inputs are the latent, the timestep and the conditioning, and whose weights run.

Graph inputs are named by where Dynamo read them (``capture.dynamo.graph_input_sources``): the
forward's arguments appear as ``L['args'][0]``, ``L['kwargs']['timestep']`` or, for a compiled
function, ``L['timestep']``; parameters and buffers as attribute chains of ``L['self']``. The
positional ones are named through the signature of the module's ``forward``. The roles are then
found by the usual argument names of diffusers' denoisers; the runtime receives ``InputRoles``
and never sees a name. Each function reads the sources from the graph, or takes them from a
``Capture`` (``sources=``), which has renamed those of a wrapper's frame to this plain form.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch
import torch.fx

from pc_compile.capture.dynamo import graph_input_sources, source_path

HIDDEN_NAMES = ("hidden_states", "x", "latents", "latent", "sample", "img")
TIMESTEP_NAMES = ("timestep", "timesteps", "t", "sigma")
CONTEXT_NAMES = ("encoder_hidden_states", "context", "txt", "prompt_embeds", "y", "cond")

_POSITIONAL = re.compile(r"^L\['args'\]\[(\d+)\]$")
_KEYWORD = re.compile(r"^L\['kwargs'\]\['(\w+)'\]$")
_LOCAL = re.compile(r"^L\['(\w+)'\]$")


@dataclass(frozen=True)
class InputRoles:
    """Which graph inputs are the latent, the timestep and the conditioning (None: unknown)."""

    hidden: int | None = None
    timestep: int | None = None
    context: int | None = None
    user_inputs: tuple[int, ...] = ()  # inputs that are not parameters or buffers
    weights: int | None = None  # one parameter of the model: whose weights this call runs
    weights_path: str | None = None  # that parameter's path in the module, e.g. "proj.weight"


def _sources(gm: torch.fx.GraphModule, sources: list | None) -> list:
    return graph_input_sources(gm) if sources is None else sources


def weights_input(gm: torch.fx.GraphModule, example_inputs,
                  sources: list | None = None) -> tuple[int | None, str | None]:
    """The first parameter input of the graph and its path in the compiled module."""
    for i, source in enumerate(_sources(gm, sources)):
        if source and source.startswith("L['self']") and i < len(example_inputs):
            if isinstance(example_inputs[i], torch.nn.Parameter):
                return i, source_path(source)
    return None, None


def _forward_parameters(owner) -> list[str]:
    """The names of ``owner.forward``'s parameters, in order (none for a function's code)."""
    if isinstance(owner, torch.nn.Module):
        try:
            return list(inspect.signature(owner.forward).parameters)
        except (TypeError, ValueError):
            pass
    return []


def input_names(gm: torch.fx.GraphModule, owner,
                sources: list | None = None) -> list[str | None]:
    """Per placeholder, the forward argument it is (None: a parameter, buffer or size)."""
    positional = _forward_parameters(owner)
    names: list[str | None] = []
    for source in _sources(gm, sources):
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


_ROOT_ARG = re.compile(r"^L\['args'\]\[(\d+)\]|^L\['kwargs'\]\['(\w+)'\]|^L\['(\w+)'\]")
_ITEM = re.compile(r"\[(\d+)\]|\['([^']*)'\]")


def input_paths(gm: torch.fx.GraphModule, owner,
                sources: list | None = None) -> list[tuple[str, tuple] | None]:
    """Per placeholder, ``(argument, path)`` when the input is an argument of the forward or an
    item inside one: ``("hidden_states", ())`` for ``L['kwargs']['hidden_states']``,
    ``("img_shapes", (0, 0, 1))`` for ``L['kwargs']['img_shapes'][0][0][1]`` (an int a dynamic
    graph takes as an input). None: a parameter, a buffer, a size read off a tensor."""
    positional = _forward_parameters(owner)
    paths: list[tuple[str, tuple] | None] = []
    for source in _sources(gm, sources):
        paths.append(_argument_path(source, positional) if isinstance(source, str) else None)
    return paths


def _argument_path(source: str, positional: list[str]) -> tuple[str, tuple] | None:
    root = _ROOT_ARG.match(source)
    if root is None:
        return None
    index, keyword, local = root.groups()
    if index is not None:
        i = int(index)
        name = positional[i] if i < len(positional) else f"arg{i}"
    else:
        name = keyword if keyword is not None else local
    if name == "self":
        return None
    rest, path = source[root.end():], []
    while rest:
        item = _ITEM.match(rest)
        if item is None:
            return None  # an attribute or a method call (a tensor's size): not an argument
        path.append(int(item.group(1)) if item.group(1) is not None else item.group(2))
        rest = rest[item.end():]
    return name, tuple(path)


def find_roles(names: list[str | None], weights=(None, None)) -> InputRoles:
    """The roles of the inputs named ``names`` (``weights``: from ``weights_input``)."""

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
