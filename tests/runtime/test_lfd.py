"""The Low-Frequency Difference against a direct numpy computation."""

import numpy as np
import torch

from pc_compile.runtime.lfd import lfd, low_frequencies, lowpass_mask


def numpy_lfd(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    h, w = a.shape[-2:]
    ky = np.fft.fftfreq(h) * h
    kx = np.fft.fftfreq(w) * w
    mask = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2) <= radius * min(h, w)
    fa = np.fft.fft2(a, norm="ortho") * mask
    fb = np.fft.fft2(b, norm="ortho") * mask
    return float(np.sqrt((np.abs(fa - fb) ** 2).sum()))


def test_lfd_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 4, 3, 12, 20, generator=g)
    b = torch.randn(2, 4, 3, 12, 20, generator=g)
    ours = lfd(low_frequencies(a, 0.2), low_frequencies(b, 0.2)).item()
    assert abs(ours - numpy_lfd(a.numpy(), b.numpy(), 0.2)) < 1e-4 * ours


def test_lowpass_mask_is_the_circle_of_radius_one_fifth():
    mask = lowpass_mask(5, 5, 0.2)  # radius 1 frequency step: the centre and its 4 neighbours
    assert mask.sum().item() == 5
    assert mask[0, 0] and mask[0, 1] and mask[1, 0] and mask[0, -1] and mask[-1, 0]
    assert not mask[1, 1]


def test_high_frequencies_do_not_count():
    x = torch.arange(16.0)
    checkerboard = ((x[:, None] + x[None, :]) % 2 * 2 - 1).expand(1, 1, 1, 16, 16)
    base = torch.ones(1, 1, 1, 16, 16)
    # The checkerboard is the highest frequency: its low-frequency part is zero.
    assert lfd(low_frequencies(base + checkerboard, 0.2), low_frequencies(base, 0.2)) < 1e-5
    smooth = torch.linspace(-1, 1, 16).expand(1, 1, 1, 16, 16)
    assert lfd(low_frequencies(base + smooth, 0.2), low_frequencies(base, 0.2)) > 0.5
