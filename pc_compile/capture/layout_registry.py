"""Which latent layout a model has: a registry keyed by model class, names only as a fallback.

``layout_for(module, call, hidden)`` walks the module's class and its bases (MRO) and returns
the layout registered for the first one found, by class or by class name, so that diffusers'
classes are known without importing diffusers. The built-in entries are diffusers' video and
image denoisers; ``register_layout(cls_or_name, layout)`` adds one (a ``Layout``, or a factory
``(module, call, hidden) -> Layout``).

A model with no entry gets a layout guessed from the latent's rank and the call's argument
names (``num_frames/height/width``, ``img_ids``, ``img_shapes``) and one ``LayoutGuessWarning``
per class, since a wrong guess makes a probe that measures nothing useful.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch

from pc_compile.capture.layouts import DenseLayout, Grid, Layout, PackedLayout, patch_of
from pc_compile.errors import LayoutGuessWarning, ProbeUnsupported

log = logging.getLogger("pc_compile")

LayoutFactory = Callable[[torch.nn.Module, dict, str], Layout]
_REGISTRY: dict[object, Layout | LayoutFactory] = {}
_guessed: set[str] = set()


def register_layout(cls_or_name: type | str, layout: Layout | LayoutFactory) -> None:
    """Register the latent layout of a model class (or a class name, matched along the MRO):
    a ``Layout`` used as is, or a factory ``(module, call, hidden) -> Layout``."""
    if not isinstance(cls_or_name, (type, str)):
        raise TypeError(f"register_layout takes a class or a class name, got {cls_or_name!r}")
    if not isinstance(layout, Layout) and not callable(layout):
        raise TypeError(f"a layout must be a Layout or a factory, got {layout!r}")
    _REGISTRY[cls_or_name] = layout


def registered_layout(module: torch.nn.Module) -> Layout | LayoutFactory | None:
    for cls in type(module).__mro__:
        for key in (cls, cls.__name__):
            if key in _REGISTRY:
                return _REGISTRY[key]
    return None


def layout_for(module: torch.nn.Module, call: dict, hidden: str) -> Layout:
    """The layout of ``module``'s latent argument ``hidden`` in ``call``."""
    latent = call.get(hidden)
    if not isinstance(latent, torch.Tensor):
        raise ProbeUnsupported(f"the latent argument {hidden!r} is not a tensor")
    entry = registered_layout(module)
    if entry is not None:
        return entry if isinstance(entry, Layout) else entry(module, call, hidden)
    layout = guess_layout(module, call, hidden)
    name = type(module).__qualname__
    if name not in _guessed:
        _guessed.add(name)
        message = (f"precisecache: no latent layout is registered for {name}; guessed "
                   f"{type(layout).__name__} from the call's argument names (register one with "
                   "pc_compile.capture.register_layout)")
        log.debug(message)
        warnings.warn(message, LayoutGuessWarning, stacklevel=2)
    return layout


def guess_layout(module: torch.nn.Module, call: dict, hidden: str) -> Layout:
    """The layout read from the latent's rank and the call's argument names."""
    latent = call[hidden]
    if latent.dim() == 5:
        channels = getattr(getattr(module, "config", None), "in_channels", None)
        frames_first = channels is not None and latent.shape[2] == channels != latent.shape[1]
        return DenseLayout(hidden, patch_of(module), frames_first=frames_first)
    if latent.dim() == 4:
        return DenseLayout(hidden, (1, *patch_of(module)[1:]), image=True)
    if latent.dim() == 3:
        if all(isinstance(call.get(k), int) for k in ("num_frames", "height", "width")):
            return PackedLayout(hidden, grid_from_sizes, with_sizes)
        if isinstance(call.get("img_ids"), torch.Tensor):
            return PackedLayout(hidden, grid_from_ids, with_ids)
        if isinstance(call.get("img_shapes"), (list, tuple)):
            return PackedLayout(hidden, grid_from_shapes, with_shapes)
    raise ProbeUnsupported(
        f"cannot tell the grid of a latent of shape {tuple(latent.shape)}: expected "
        "(B, C, F, H, W), (B, F, C, H, W), (B, C, H, W), or packed tokens with num_frames/"
        "height/width, img_ids or img_shapes"
    )


# Packed tokens whose grid is given as sizes (LTX-Video).
def grid_from_sizes(call):
    return Grid(call["num_frames"], call["height"], call["width"])


def with_sizes(call, grid):
    return {**call, "num_frames": grid.frames, "height": grid.height, "width": grid.width}


# Packed tokens with a position id per token (Flux: columns 1 and 2 are row and column).
def grid_from_ids(call):
    ids = call["img_ids"]
    ids = ids[0] if ids.dim() == 3 else ids
    return Grid(1, int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1)


def with_ids(call, grid):
    old = call["img_ids"]
    rows = torch.arange(grid.height, device=old.device).repeat_interleave(grid.width)
    cols = torch.arange(grid.width, device=old.device).repeat(grid.height)
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).to(old.dtype)
    return {**call, "img_ids": ids.expand(old.shape[0], -1, -1) if old.dim() == 3 else ids}


# Packed tokens with one (frames, height, width) per batch entry (QwenImage).
def grid_from_shapes(call):
    first = call["img_shapes"][0]
    nested = isinstance(first, (list, tuple)) and isinstance(first[0], (list, tuple))
    return Grid(*map(int, first[0] if nested else first))


def with_shapes(call, grid):
    shape = (grid.frames, grid.height, grid.width)
    nested = isinstance(call["img_shapes"][0][0], (list, tuple))
    entry = [shape] if nested else shape
    return {**call, "img_shapes": [entry for _ in call["img_shapes"]]}


def _channels_first(module, call, hidden):
    return DenseLayout(hidden, patch_of(module))


def _frames_first(module, call, hidden):
    return DenseLayout(hidden, patch_of(module), frames_first=True)


def _packed(grid_of, with_grid):
    return lambda module, call, hidden: PackedLayout(hidden, grid_of, with_grid)


for _name, _factory in (
    ("WanTransformer3DModel", _channels_first),
    ("SkyReelsV2Transformer3DModel", _channels_first),
    ("HunyuanVideoTransformer3DModel", _channels_first),
    ("CogVideoXTransformer3DModel", _frames_first),
    ("LTXVideoTransformer3DModel", _packed(grid_from_sizes, with_sizes)),
    ("FluxTransformer2DModel", _packed(grid_from_ids, with_ids)),
    ("QwenImageTransformer2DModel", _packed(grid_from_shapes, with_shapes)),
):
    register_layout(_name, _factory)
