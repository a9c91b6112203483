"""The Low-Frequency Difference (LFD) between two predictions.

PreciseCache splits a prediction ``(B, C, F, H, W)`` into low and high frequencies with a 2D
FFT per frame and a circular low-pass of radius ``radius x min(H, W)`` (radius 1/5 in the
paper), and compares the low-frequency parts of two steps by L2 distance. The FFT is
orthonormal, so by Parseval the distance of the masked spectra equals the distance of the
low-passed frames in the latent's own units.

Everything here is tensor arithmetic on the device; nothing reads a value back to the host.
"""

from __future__ import annotations

import torch


def lowpass_mask(height: int, width: int, radius: float, device=None) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of the unshifted FFT grid: frequencies within the circle."""
    fy = torch.fft.fftfreq(height, device=device) * height
    fx = torch.fft.fftfreq(width, device=device) * width
    distance = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    return distance <= radius * min(height, width)


def low_frequencies(video: torch.Tensor, radius: float) -> torch.Tensor:
    """The low-frequency spectrum of each frame of ``(B, C, F, H, W)``, orthonormal FFT."""
    h, w = video.shape[-2:]
    spectrum = torch.fft.fft2(video.float(), norm="ortho")
    return spectrum * lowpass_mask(h, w, radius, video.device)


def lfd(current: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``|| LF(current) - LF(previous) ||_2`` of two low-frequency spectra, a 0-dim tensor."""
    return torch.linalg.vector_norm(current - previous)
