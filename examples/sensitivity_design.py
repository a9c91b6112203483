"""How SenCache should estimate the model's sensitivity: accuracy and cost of three estimators.

SenCache predicts the relative change of the output between a computed step ``a`` and a later
step ``i`` from the change of the inputs. On uncached trajectories of a reference model, for every
anchor ``a`` and ``i = a + 1 .. a + 3``, this script compares the true relative change
``rms(v_i - v_a) / rms(v_a)`` with:

``history``     the finite difference along the trajectory from the two computed steps before:
                ``s = rms(v_a - v_b) / rms(x_a - x_b)``, prediction ``s rms(x_i - x_a) / rms(v_a)``
                (no network evaluation);
``probe-jvp``   forward-mode JVPs (``torch.func.jvp``) of the low-resolution probe network at
                ``a``: ``||J_x u||`` along the latent's last move ``u`` and ``||J_t||``, then the
                paper's bound ``(||J_x|| rms(x_i - x_a) + ||J_t|| |t_i - t_a|) / rms(v_a)`` on the
                probe's scale;
``full-jvp``    the same JVPs on the full network (too costly to use; the accuracy ceiling).

JVPs run with the math attention kernel: fused attention kernels have no forward-mode
derivative (``NotImplementedError`` on CPU).

Accuracy: Spearman's rank correlation of prediction and truth over all pairs (can the rule order
steps?) and the spread of log(prediction / truth) (can one threshold serve every step and
sample?). Cost: wall time of each estimator per computed step, in full forward passes (CPU).

    python examples/sensitivity_design.py [--model cogvideox-tiny] [--scheduler euler]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# benchmarks/ (reference models, samplers, metrics) is not installed with the package: it is
# imported from the repository this script belongs to.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import models, sampling


def rms(x: torch.Tensor) -> float:
    return float(x.float().square().mean().sqrt())


def record(model, info, label, seed, scheduler, steps):
    """(x, t, v, context) of every conditional call of an uncached generation."""
    calls = []

    def fn(hidden, timestep, context, ctx):
        out = model(hidden_states=hidden, timestep=timestep, encoder_hidden_states=context,
                    return_dict=False)[0]
        if ctx.name == "cond":
            calls.append((hidden.clone(), timestep.clone(), out.clone(), context))
        return out

    sampling.sample(fn, info, label, seed, scheduler, steps)
    return calls


def downsample(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The probe's latent: 2x in time, down to 4x4 cells in space (area average)."""
    dense = models.from_layout(x, layout)
    _, _, f, h, w = dense.shape
    size = (max(2, f // 2), max(4, h // 4), max(4, w // 4))
    return models.to_layout(F.interpolate(dense, size=size, mode="area"), layout)


def jvp_norms(model, x, t, context, u):
    """(rms f, rms J_x u / rms u, rms J_t) at (x, t)."""
    def f(xx, tt):
        return model(hidden_states=xx, timestep=tt, encoder_hidden_states=context,
                     return_dict=False)[0]

    # Fused attention kernels have no forward-mode derivative: JVPs need the math kernel.
    with sdpa_kernel(SDPBackend.MATH):
        out, jx = torch.func.jvp(lambda xx: f(xx, t), (x,), (u,))
        _, jt = torch.func.jvp(lambda tt: f(x, tt), (t,), (torch.ones_like(t),))
    return rms(out), rms(jx) / max(rms(u), 1e-12), rms(jt)


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cogvideox-tiny")
    parser.add_argument("--scheduler", default="euler", choices=sampling.SCHEDULERS)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, info = models.load_reference(args.model)
    layout = info["layout"]
    truth: list[float] = []
    preds: dict[str, list[float]] = {"history": [], "probe-jvp": [], "full-jvp": []}
    cost: dict[str, list[float]] = {"forward": [], "probe-jvp": [], "full-jvp": []}
    for label, seed in [(0, 100), (5, 101)]:
        calls = record(model, info, label, seed, args.scheduler, args.steps)
        for a in range(2, len(calls) - 3):
            x_a, t_a, v_a, ctx = calls[a]
            x_b, _, v_b, _ = calls[a - 1]
            u = x_a - x_b
            s_hist = rms(v_a - v_b) / rms(u)
            start = time.perf_counter()
            with torch.no_grad():
                model(hidden_states=x_a, timestep=t_a, encoder_hidden_states=ctx,
                      return_dict=False)
            cost["forward"].append(time.perf_counter() - start)
            start = time.perf_counter()
            p_scale, p_jx, p_jt = jvp_norms(model, downsample(x_a, layout), t_a, ctx,
                                           downsample(u, layout))
            cost["probe-jvp"].append(time.perf_counter() - start)
            start = time.perf_counter()
            f_scale, f_jx, f_jt = jvp_norms(model, x_a, t_a, ctx, u)
            cost["full-jvp"].append(time.perf_counter() - start)
            scale = rms(v_a)
            for k in (1, 2, 3):
                x_i, t_i, v_i, _ = calls[a + k]
                dx, dt = rms(x_i - x_a), abs(float(t_i[0] - t_a[0]))
                truth.append(rms(v_i - v_a) / scale)
                preds["history"].append(s_hist * dx / scale)
                preds["probe-jvp"].append((p_jx * dx + p_jt * dt) / p_scale)
                preds["full-jvp"].append((f_jx * dx + f_jt * dt) / f_scale)
    forward = statistics.fmean(cost["forward"])
    print(f"{args.model}, {args.scheduler}, {args.steps} steps, 2 prompts, "
          f"{len(truth)} (anchor, step) pairs\n")
    print("| estimator | Spearman vs true change | spread of log(pred/true) (IQR) "
          "| median pred/true | cost per computed step (full forwards) |")
    print("|---|---|---|---|---|")
    for name, values in preds.items():
        logs = sorted(math.log(p / t) for p, t in zip(values, truth) if p > 0 and t > 0)
        q1, q3 = logs[len(logs) // 4], logs[3 * len(logs) // 4]
        median = math.exp(logs[len(logs) // 2])
        spent = 0.0 if name == "history" else statistics.fmean(cost[name]) / forward
        print(f"| {name} | {spearman(values, truth):.3f} | {q3 - q1:.3f} | {median:.2f} "
              f"| {spent:.2f} |")


if __name__ == "__main__":
    main()
