"""Fidelity metrics between a cached generation and the uncached one.

Both work on latent videos ``(B, C, F, H, W)`` (or ``(C, F, H, W)``) whose values span roughly
[-1, 1] (the procedural data range, see ``data.py``); ``data_range`` defaults to 2.

- ``psnr``: over the whole tensor, ``10 log10(range^2 / MSE)``; ``inf`` when identical.
- ``ssim``: the structural similarity of Wang et al. (2004) with an 11-tap gaussian window
  (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, computed per frame and per channel over the valid
  region (no padding) and averaged; 1.0 when identical.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 2.0) -> float:
    mse = (x.double() - ref.double()).pow(2).mean().item()
    if mse == 0:
        return math.inf
    return 10 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def _as_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, F, H, W)`` / ``(C, F, H, W)`` / ``(N, H, W)`` / ``(H, W)`` -> ``(N, 1, H, W)``."""
    if x.ndim == 5:
        x = x.transpose(1, 2).reshape(-1, x.shape[-2], x.shape[-1])
    elif x.ndim == 4:
        x = x.transpose(0, 1).reshape(-1, x.shape[-2], x.shape[-1])
    elif x.ndim == 2:
        x = x[None]
    return x[:, None]


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 2.0,
    window: int = 11,
    sigma: float = 1.5,
) -> float:
    """Mean SSIM over frames and channels (per-frame 2D SSIM, gaussian window)."""
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(ref.shape)}")
    a = _as_frames(x.double())
    b = _as_frames(ref.double())
    size = min(window, a.shape[-1], a.shape[-2])
    w = gaussian_window(size, sigma)[None, None]
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a = F.conv2d(a, w)
    mu_b = F.conv2d(b, w)
    aa = F.conv2d(a * a, w) - mu_a**2
    bb = F.conv2d(b * b, w) - mu_b**2
    ab = F.conv2d(a * b, w) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * ab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (aa + bb + c2)
    return (num / den).mean().item()
