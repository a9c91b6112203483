"""Histories of (timestep, value) pairs, and the linear extrapolation in the timestep.

The engine keeps the outputs (or chain residuals) of the last computed steps to build a reused
step's output; LFCache keeps the probe's spectra of the same steps to see at low resolution
what a reuse would return. Both extrapolate the same way: linearly in the timestep through the
last two values, because the prediction of a flow-matching model moves smoothly with it.
"""

from __future__ import annotations

import torch


def remember(history: list, t: float | None, value, keep: int = 2) -> None:
    """Append ``(t, value)`` and keep the last ``keep`` entries."""
    history.append((t, value))
    del history[:-keep]


def extrapolate(history: list, t: float | None):
    """The value at ``t`` predicted from ``history`` = [(t_b, v_b), (t_a, v_a)] (oldest first):
    linear in the timestep through the last two, or the last one alone. A value may be a
    tensor or a tuple (each tensor in it is extrapolated, anything else kept)."""
    t_a, v_a = history[-1]
    if len(history) < 2 or t is None:
        return v_a
    t_b, v_b = history[-2]
    if t_a == t_b:
        return v_a
    scale = (t - t_a) / (t_a - t_b)
    if isinstance(v_a, tuple):
        return tuple(a + (a - b) * scale if isinstance(a, torch.Tensor) else a
                     for a, b in zip(v_a, v_b))
    return v_a + (v_a - v_b) * scale
