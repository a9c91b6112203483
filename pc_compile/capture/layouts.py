"""How a model's latent is laid out, and how to put it at another grid size.

The probe runs the model on a downsampled latent, so it must know which dimensions of the
latent argument are frames, height and width, and what else in the call describes that grid.
Three layouts cover the supported denoisers:

* ``DenseLayout``: channels-first video ``(B, C, F, H, W)`` (Wan, HunyuanVideo), frames-first
  video ``(B, F, C, H, W)`` (CogVideoX), or an image ``(B, C, H, W)``;
* ``PackedLayout``: tokens ``(B, N, C)`` over a grid that the call describes (LTX-Video's
  ``num_frames/height/width``, Flux's ``img_ids``, QwenImage's ``img_shapes``).

A layout converts the latent to dense video ``(B, C, F, H, W)``, builds the probe's call at a
smaller ``Grid`` (area resize: the probe sees the low frequencies without aliasing) and reads the
probe's prediction back as dense video. Which layout a model has is the registry's business
(``capture/layout_registry.py``); the probe's size and execution are the runtime's.
"""

from __future__ import annotations

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


def resize_video(video: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Area-resize ``(B, C, F, H, W)``; exact identity when the size does not change."""
    if tuple(video.shape[2:]) == (frames, height, width):
        return video
    return F.interpolate(video.float(), size=(frames, height, width), mode="area").to(video.dtype)


def patch_of(module: torch.nn.Module) -> tuple[int, int, int]:
    """(time, height, width) patch size of a denoiser, read from its config or attributes."""
    config = getattr(module, "config", None)
    patch = getattr(config, "patch_size", None) if config is not None else None
    patch = patch if patch is not None else getattr(module, "patch_size",
                                                    getattr(module, "patch", 1))
    patch_t = getattr(config, "patch_size_t", None) if config is not None else None
    if isinstance(patch, (tuple, list)):
        return tuple(int(p) for p in patch) if len(patch) == 3 else (1, *map(int, patch))
    return (int(patch_t or 1), int(patch), int(patch))


class Layout:
    """How a model's latent input is laid out; subclasses convert to and from dense video."""

    hidden: str  # the latent's argument name

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
