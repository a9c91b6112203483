"""Wiring the probe: how to call the model again, at the probe's size.

The graph Dynamo hands the backend is specialised to the shapes of the call that traced it,
so the low-resolution probe cannot be cut out of it: the probe is the same module compiled a
second time, at the probe's shape (a graph of its own, partitioned and compiled like the first,
never caching). This file reads, from the frame Dynamo is compiling, the module and the call's
arguments (the template each step's tensors are put back into) and picks the latent's layout
from the call's argument names and the model's config.
"""

from __future__ import annotations

import inspect

import torch

from pc_compile.inputs import compiling_frame
from pc_compile.runtime.probe import DenseLayout, Grid, Layout, PackedLayout, ProbeNetwork


class ProbeUnsupported(ValueError):
    """The probe cannot be built for this model; the message says why."""


def compiled_call() -> tuple[torch.nn.Module, dict] | None:
    """The module Dynamo is compiling and its call's arguments by name, or None."""
    tx = compiling_frame()
    if tx is None:
        return None
    owner = tx.f_locals.get("self")
    if not isinstance(owner, torch.nn.Module):
        return None
    try:
        signature = inspect.signature(owner.forward)
        if "args" in tx.f_locals and "kwargs" in tx.f_locals:
            # The frame is a wrapper of forward (diffusers' models): (self, *args, **kwargs).
            bound = signature.bind(*tx.f_locals["args"], **tx.f_locals["kwargs"])
            return owner, dict(bound.arguments)
        # The frame is forward itself: its locals at entry are its arguments.
        return owner, {n: tx.f_locals[n] for n in signature.parameters if n in tx.f_locals}
    except (TypeError, ValueError):
        return None


def _patch(owner: torch.nn.Module) -> tuple[int, int, int]:
    config = getattr(owner, "config", None)
    patch = getattr(config, "patch_size", None) if config is not None else None
    patch = patch if patch is not None else getattr(owner, "patch_size", getattr(owner, "patch", 1))
    patch_t = getattr(config, "patch_size_t", None) if config is not None else None
    if isinstance(patch, (tuple, list)):
        return tuple(int(p) for p in patch) if len(patch) == 3 else (1, *map(int, patch))
    return (int(patch_t or 1), int(patch), int(patch))


def choose_layout(owner: torch.nn.Module, call: dict, hidden: str) -> Layout:
    latent = call.get(hidden)
    if not isinstance(latent, torch.Tensor):
        raise ProbeUnsupported(f"the latent argument {hidden!r} is not a tensor")
    if latent.dim() == 5:
        channels = getattr(getattr(owner, "config", None), "in_channels", None)
        frames_first = channels is not None and latent.shape[2] == channels != latent.shape[1]
        return DenseLayout(hidden, _patch(owner), frames_first=frames_first)
    if latent.dim() == 4:
        return DenseLayout(hidden, (1, *_patch(owner)[1:]), image=True)
    if latent.dim() == 3:
        if all(isinstance(call.get(k), int) for k in ("num_frames", "height", "width")):
            return PackedLayout(hidden, _grid_from_sizes, _with_sizes)
        if isinstance(call.get("img_ids"), torch.Tensor):
            return PackedLayout(hidden, _grid_from_ids, _with_ids)
        if isinstance(call.get("img_shapes"), (list, tuple)):
            return PackedLayout(hidden, _grid_from_shapes, _with_shapes)
    raise ProbeUnsupported(
        f"cannot tell the grid of a latent of shape {tuple(latent.shape)}: expected "
        "(B, C, F, H, W), (B, F, C, H, W), (B, C, H, W), or packed tokens with num_frames/"
        "height/width, img_ids or img_shapes"
    )


# Packed tokens whose grid is given as sizes (LTX-Video).
def _grid_from_sizes(call):
    return Grid(call["num_frames"], call["height"], call["width"])


def _with_sizes(call, grid):
    return {**call, "num_frames": grid.frames, "height": grid.height, "width": grid.width}


# Packed tokens with a position id per token (Flux: columns 1 and 2 are row and column).
def _grid_from_ids(call):
    ids = call["img_ids"]
    ids = ids[0] if ids.dim() == 3 else ids
    return Grid(1, int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1)


def _with_ids(call, grid):
    old = call["img_ids"]
    rows = torch.arange(grid.height, device=old.device).repeat_interleave(grid.width)
    cols = torch.arange(grid.width, device=old.device).repeat(grid.height)
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).to(old.dtype)
    return {**call, "img_ids": ids.expand(old.shape[0], -1, -1) if old.dim() == 3 else ids}


# Packed tokens with one (frames, height, width) per batch entry (QwenImage).
def _grid_from_shapes(call):
    first = call["img_shapes"][0]
    first = first[0] if isinstance(first, (list, tuple)) and isinstance(first[0], (list, tuple)) \
        else first
    return Grid(*map(int, first))


def _with_shapes(call, grid):
    shape = (grid.frames, grid.height, grid.width)
    nested = isinstance(call["img_shapes"][0][0], (list, tuple))
    entry = [shape] if nested else shape
    return {**call, "img_shapes": [entry for _ in call["img_shapes"]]}


def build_probe(owner, call: dict, names: list, hidden_index: int, config, probe_backend):
    """A ``ProbeNetwork`` for ``owner``; ``names[i]`` is graph input i's argument name."""
    hidden = names[hidden_index]
    layout = choose_layout(owner, call, hidden)
    bind = {i: n for i, n in enumerate(names) if n is not None and n in call}
    network = torch.compile(owner, backend=probe_backend, dynamic=False)
    return ProbeNetwork(network, call, bind, layout, config.probe_downsample,
                        config.probe_min_tokens)
