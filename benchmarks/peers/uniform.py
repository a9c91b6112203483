"""Uniform step skipping: a fixed set of evenly spaced computed steps, the steps between filled
from the computed ones.

The schedule. For a compute fraction ``f`` and ``S`` steps the method computes
``n = round(f * S)`` steps (at least one), at the indices ``round(i * (S - 1) / (n - 1))`` for
``i = 0 .. n - 1`` (``full_steps``): the first step (index 0) and the last (index ``S - 1``) are
always computed when ``n >= 2``, and the others are evenly spaced in the step index between
them, each rounded to the nearest index (Python's ``round``: halves go to the even index). The
schedule depends only on ``f`` and ``S``, not on the timesteps, the model or the prompt, and
every transformer call of a step (the conditional and the unconditional one) takes the same
decision. Its compute is ``n / S`` exactly (``realised_fraction``), which differs from ``f`` by
at most ``1 / (2 S)``.

A skipped step does not call the transformer; it returns, per guidance branch (each keeps its
own history of computed outputs), by ``order``:

* ``0`` (``uniform``): the branch's last computed output (velocity prediction), as plain uniform
  skipping does;
* ``1`` (``uniform+linear``): the line in the timestep through the last two computed outputs,
  evaluated at the skipped step's timestep, the reuse form the library's ``step_reuse=
  "extrapolate"`` uses;
* ``2`` (``uniform+quadratic``): the parabola in the timestep through the last three computed
  outputs (TaylorSeer's order 2, but through the computed points themselves rather than a Taylor
  series in the step index).

While a branch has fewer computed outputs than ``order + 1`` (right after step 0), it uses the
highest order its history allows: with one computed output, that output.
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


def computed_count(fraction: float, steps: int) -> int:
    """How many of ``steps`` steps a compute fraction computes: ``round(fraction * steps)``,
    at least one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"compute fraction must be in (0, 1], got {fraction}")
    return min(steps, max(1, round(fraction * steps)))


def realised_fraction(fraction: float, steps: int) -> float:
    """The share of the steps the schedule of ``fraction`` really computes."""
    return computed_count(fraction, steps) / steps


def pattern(fraction: float, steps: int) -> str:
    """The schedule as a string, one character a step: ``#`` computed, ``.`` skipped."""
    on = set(full_steps(steps, computed_count(fraction, steps)))
    return "".join("#" if i in on else "." for i in range(steps))


def every_kth(steps: int, k: int) -> list[int]:
    """Steps ``0, k, 2k, ...``: compute every k-th step."""
    return list(range(0, steps, k))


def extrapolate(points: list[tuple[float, torch.Tensor]], t: float) -> torch.Tensor:
    """The polynomial in the timestep through all ``(t_i, v_i)`` of ``points``, at ``t``.

    One point gives that point's value, two the line through them, three the parabola
    (Lagrange form: ``sum_i v_i prod_{j != i} (t - t_j) / (t_i - t_j)``). The timesteps must
    differ.
    """
    if not points:
        raise ValueError("need at least one point")
    ts = [float(p[0]) for p in points]
    if len(set(ts)) != len(ts):
        raise ValueError(f"the points' timesteps must differ, got {ts}")
    out = None
    for i, (t_i, v_i) in enumerate(points):
        w = 1.0
        for j, t_j in enumerate(ts):
            if j != i:
                w *= (t - t_j) / (float(t_i) - t_j)
        term = v_i * w
        out = term if out is None else out + term
    return out


class UniformSkip:
    """Transformer callable computing only the steps of the evenly spaced schedule of
    ``fraction``; a skipped step is filled by the reuse form of ``order`` (module docstring)."""

    def __init__(self, model: torch.nn.Module, fraction: float, order: int = 0):
        if order not in (0, 1, 2):
            raise ValueError(f"order must be 0, 1 or 2, got {order}")
        self.model = model
        self.fraction = fraction
        self.order = order
        self.history: dict[str, list[tuple[float, torch.Tensor]]] = {}
        self.calls: list[tuple[str, int, bool]] = []

    def schedule(self, steps: int) -> set[int]:
        return set(full_steps(steps, computed_count(self.fraction, steps)))

    def fn(self, hidden_states, timestep, encoder_hidden_states, ctx):
        history = self.history.get(ctx.name)
        run = ctx.step_index in self.schedule(ctx.num_inference_steps) or not history
        self.calls.append((ctx.name, ctx.step_index, run))
        t = float(timestep.reshape(-1)[0])
        if run:
            out = self.model(
                hidden_states=hidden_states,
                timestep=timestep,
                encoder_hidden_states=encoder_hidden_states,
                return_dict=False,
            )[0]
            history = self.history.setdefault(ctx.name, [])
            history.append((t, out))
            del history[: -(self.order + 1)]
            return out
        if self.order == 0:
            return history[-1][1]
        return extrapolate(history[-(self.order + 1):], t)

    def reset(self) -> None:
        self.history = {}
        self.calls = []

    def stats(self) -> dict:
        n = len(self.calls)
        ran = sum(1 for c in self.calls if c[2])
        return {"compute_fraction": ran / n if n else 0.0, "calls": n, "full_calls": ran}
