"""Uniform step skipping: a fixed set of evenly spaced full steps, the last output reused between.

``full_steps(steps, n)`` picks ``n`` steps evenly spaced over ``[0, steps - 1]`` (the first and the
last included when ``n >= 2``). On every other step the transformer is not called and the
branch's last computed output (velocity prediction) is returned again; the conditional and the
unconditional branch each keep their own last output.
"""

from __future__ import annotations

import torch


def full_steps(steps: int, n: int) -> list[int]:
    """``n`` evenly spaced step indices in ``[0, steps)``, sorted, first (and last) included."""
    if not 1 <= n <= steps:
        raise ValueError(f"need 1 <= n <= steps, got n={n}, steps={steps}")
    if n == 1:
        return [0]
    return sorted({round(i * (steps - 1) / (n - 1)) for i in range(n)})


def every_kth(steps: int, k: int) -> list[int]:
    """Steps ``0, k, 2k, ...``: compute every k-th step."""
    return list(range(0, steps, k))


class UniformSkip:
    """Transformer callable computing only the steps in ``schedule(num_steps)``."""

    def __init__(self, model: torch.nn.Module, fraction: float):
        self.model = model
        self.fraction = fraction
        self.last: dict[str, torch.Tensor] = {}
        self.calls: list[tuple[str, int, bool]] = []

    def schedule(self, steps: int) -> set[int]:
        return set(full_steps(steps, max(1, round(self.fraction * steps))))

    def fn(self, hidden_states, timestep, encoder_hidden_states, ctx):
        run = ctx.step_index in self.schedule(ctx.num_inference_steps) or ctx.name not in self.last
        self.calls.append((ctx.name, ctx.step_index, run))
        if run:
            self.last[ctx.name] = self.model(
                hidden_states=hidden_states,
                timestep=timestep,
                encoder_hidden_states=encoder_hidden_states,
                return_dict=False,
            )[0]
        return self.last[ctx.name]

    def reset(self) -> None:
        self.last = {}
        self.calls = []

    def stats(self) -> dict:
        n = len(self.calls)
        ran = sum(1 for c in self.calls if c[2])
        return {"compute_fraction": ran / n if n else 0.0, "calls": n, "full_calls": ran}
