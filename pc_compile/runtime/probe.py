"""The low-resolution probe: the same network run on a downsampled copy of the latent.

PreciseCache measures each step's Low-Frequency Difference on a cheap trial run: the latent
downsampled 2x in time and 4x4 in space. This file decides the probe's size and builds the
probe's inputs from a call's inputs:

* sizes are rounded to multiples of the patch size and never fall below ``min_tokens`` tokens
  per frame (the spatial factor is lowered until they do not), nor below two frames when the
  latent has two or more (a single frame is a different regime for video models, and a shape
  Dynamo's guards on the full graph never covered);
* the latent is averaged over each downsampled cell (area interpolation): the probe sees the
  low frequencies the metric looks at, without aliasing.

Latents come in three layouts, read from the call: channels-first video ``(B, C, F, H, W)``,
frames-first video ``(B, F, C, H, W)`` (CogVideoX), image ``(B, C, H, W)``, and packed tokens
``(B, N, C)`` whose grid the call describes (LTX-Video's ``num_frames/height/width``, Flux's
``img_ids``, QwenImage's ``img_shapes``). ``ProbeNetwork`` runs the network (compiled by the
front, a separate graph) on the probe inputs and returns its prediction in the dense layout
``(B, C, F, H, W)`` the metric wants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Grid:
    """The latent's grid: frames, height, width in latent cells; patch sizes of the model."""

    frames: int
    height: int
    width: int
    patch_t: int = 1
    patch_h: int = 1
    patch_w: int = 1

    @property
    def tokens_per_frame(self) -> int:
        return (self.height // self.patch_h) * (self.width // self.patch_w)


def probe_grid(grid: Grid, factors: tuple[int, int, int], min_tokens: int) -> Grid:
    """The probe's grid for ``grid`` downsampled by ``factors`` = (time, height, width)."""
    ft, fh, fw = factors

    def scaled(size: int, factor: float, patch: int) -> int:
        cells = max(1, round(size / factor / patch))
        return min(size, cells * patch)

    frames = scaled(grid.frames, ft, grid.patch_t)
    if grid.frames >= 2:
        frames = max(frames, min(grid.frames, 2 * grid.patch_t))
    sh, sw = float(fh), float(fw)
    while True:
        height, width = scaled(grid.height, sh, grid.patch_h), scaled(grid.width, sw, grid.patch_w)
        tokens = (height // grid.patch_h) * (width // grid.patch_w)
        if tokens >= min_tokens or (sh <= 1 and sw <= 1):
            break
        sh, sw = max(1.0, sh / math.sqrt(2)), max(1.0, sw / math.sqrt(2))
    return Grid(frames, height, width, grid.patch_t, grid.patch_h, grid.patch_w)


def resize_video(video: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Area-resize ``(B, C, F, H, W)``; exact identity when the size does not change."""
    if tuple(video.shape[2:]) == (frames, height, width):
        return video
    return F.interpolate(video.float(), size=(frames, height, width), mode="area").to(video.dtype)


class Layout:
    """How a model's latent input is laid out; subclasses convert to and from dense video."""

    def grid(self, call: dict) -> Grid:
        raise NotImplementedError

    def to_video(self, latent: torch.Tensor, call: dict) -> torch.Tensor:
        raise NotImplementedError

    def probe_call(self, call: dict, grid: Grid) -> dict:
        """``call`` with the latent (and whatever describes its grid) at ``grid``."""
        raise NotImplementedError

    def output_video(self, output: torch.Tensor, call: dict, grid: Grid) -> torch.Tensor:
        """The probe's prediction as ``(B, C, F, H, W)``."""
        raise NotImplementedError


@dataclass
class DenseLayout(Layout):
    """``(B, C, F, H, W)``, ``(B, F, C, H, W)`` (``frames_first``) or ``(B, C, H, W)``."""

    hidden: str
    patch: tuple[int, int, int]
    frames_first: bool = False
    image: bool = False

    def to_video(self, latent, call=None):
        if self.image:
            return latent.unsqueeze(2)
        return latent.transpose(1, 2) if self.frames_first else latent

    def from_video(self, video):
        if self.image:
            return video.squeeze(2)
        return video.transpose(1, 2) if self.frames_first else video

    def grid(self, call):
        _, _, f, h, w = self.to_video(call[self.hidden]).shape
        return Grid(f, h, w, *self.patch)

    def probe_call(self, call, grid):
        video = resize_video(self.to_video(call[self.hidden]), grid.frames, grid.height,
                             grid.width)
        return {**call, self.hidden: self.from_video(video).contiguous()}

    def output_video(self, output, call, grid):
        return self.to_video(output)


@dataclass
class PackedLayout(Layout):
    """Tokens ``(B, N, C)`` over a frames x height x width grid given by ``grid_of(call)``;
    ``with_grid(call, grid)`` rewrites what in the call describes the grid."""

    hidden: str
    grid_of: Callable[[dict], Grid]
    with_grid: Callable[[dict, Grid], dict]

    def grid(self, call):
        return self.grid_of(call)

    def to_video(self, latent, call):
        g = self.grid_of(call)
        b, n, c = latent.shape
        return latent.reshape(b, g.frames, g.height, g.width, c).permute(0, 4, 1, 2, 3)

    def probe_call(self, call, grid):
        video = resize_video(self.to_video(call[self.hidden], call), grid.frames, grid.height,
                             grid.width)
        b, c = video.shape[:2]
        tokens = video.permute(0, 2, 3, 4, 1).reshape(b, -1, c).contiguous()
        return self.with_grid({**call, self.hidden: tokens}, grid)

    def output_video(self, output, call, grid):
        b, n, c = output.shape
        return output.reshape(b, grid.frames, grid.height, grid.width, c).permute(0, 4, 1, 2, 3)


class ProbeNetwork:
    """Runs the network at the probe size and returns its prediction as dense video.

    ``network(**call)`` is the model compiled for the probe (a graph of its own, traced at the
    probe's shape); ``template`` is the model's call at compile time, into which each step's
    graph inputs are put back (``bind``: graph input index -> argument name).
    """

    def __init__(self, network, template: dict, bind: dict[int, str], layout: Layout,
                 factors: tuple[int, int, int], min_tokens: int):
        self.network = network
        self.template = template
        self.bind = bind
        self.layout = layout
        full = layout.grid(template)
        self.full_grid = full
        self.grid = probe_grid(full, factors, min_tokens)
        self.token_ratio = (
            self.grid.frames * self.grid.height * self.grid.width
            / (full.frames * full.height * full.width)
        )

    def call_of(self, inputs) -> dict:
        call = dict(self.template)
        for index, name in self.bind.items():
            call[name] = inputs[index]
        return call

    def __call__(self, inputs) -> torch.Tensor:
        call = self.call_of(inputs)
        result = self.network(**self.layout.probe_call(call, self.grid))
        output = result[0] if isinstance(result, (tuple, list)) else getattr(result, "sample",
                                                                              result)
        return self.layout.output_video(output, call, self.grid)
