"""What a block bypass costs, against what reusing the whole step costs, per compute saved.

BlockCache (PreciseCache's flash) saves compute by bypassing blocks with a cached residual;
the step rules save it by reusing the whole step. This measures both on one uncached generation
(two calls per step, guidance 5), one intervention at a time: at step ``i``

* *step reuse*: the guided output of step ``i - k`` (plain) or the linear extrapolation, in the
  timestep, of steps ``i - 2k`` and ``i - k`` (extrapolated), against the true guided output;
* *block bypass*: block ``j`` alone returns its input plus its residual ``D_j`` of step ``i - k``
  (plain) or the extrapolation of ``D_j`` from steps ``i - 2k`` and ``i - k``; every other block
  and the epilogue run on the true inputs of step ``i``. Error of the guided output again.

Errors are relative to the norm of the true guided output. A whole step saves 1 of compute, one
block ``1 / blocks``: the last column is the error per compute saved of bypassing blocks over
that of reusing steps (above 1: bypassing blocks is the worse trade). Design measurement 9
(docs/design/09-flash-without-block-bypass.md) has the numbers.

    python examples/block_bypass_cost.py [--models cogvideox-tiny,cogvideox-deep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

# benchmarks/ (reference models, samplers, metrics) is not installed with the package: it is
# imported from the repository this script belongs to.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import models, sampling

GUIDANCE = 5.0


class Recorder:
    """Forward hooks on every block: record each block's residual per (branch, step), or
    replace one block's output by its input plus a given residual."""

    def __init__(self, blocks):
        self.residuals: dict[tuple[str, int], list[tuple]] = {}
        self.key: tuple[str, int] | None = None
        self.replace: tuple[int, tuple] | None = None  # (block, residual) while intervening
        self._inputs: tuple = ()
        for j, block in enumerate(blocks):
            block.register_forward_pre_hook(self._pre, with_kwargs=True)
            block.register_forward_hook(self._post(j), with_kwargs=True)

    def _pre(self, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        self._inputs = (hidden, context)

    def _post(self, j: int):
        def hook(module, args, kwargs, out):
            outs = out if isinstance(out, tuple) else (out,)
            if self.replace is not None:
                if self.replace[0] != j:
                    return None
                new = tuple(i + d for i, d in zip(self._inputs, self.replace[1]))
                return new + tuple(outs[len(new):]) if isinstance(out, tuple) else new[0]
            if self.key is not None:
                deltas = tuple((o - i).clone() for o, i in zip(outs, self._inputs))
                self.residuals.setdefault(self.key, []).append(deltas)
            return None

        return hook


def linear(t: float, a: tuple[float, object], b: tuple[float, object]):
    """The value at ``t`` on the line through ``a`` = (t_a, v_a) and ``b`` (older)."""
    (t_a, v_a), (t_b, v_b) = a, b
    scale = (t - t_a) / (t_a - t_b)
    if isinstance(v_a, tuple):
        return tuple(x + (x - y) * scale for x, y in zip(v_a, v_b))
    return v_a + (v_a - v_b) * scale


def measure(model_name: str, scheduler: str, steps: int, gaps: tuple[int, ...]) -> list[dict]:
    model, info = models.load_reference(model_name)
    blocks = getattr(model, "transformer_blocks", None) or model.blocks
    recorder = Recorder(blocks)
    forward = sampling.plain(model)
    calls, outputs, timesteps = {}, {}, {}

    def fn(hidden, timestep, context, ctx):
        key = (ctx.name, ctx.step_index)
        recorder.key = key
        timesteps[ctx.step_index] = float(timestep[0])
        calls[key] = (hidden, timestep, context)
        outputs[key] = forward(hidden, timestep, context, ctx)
        recorder.key = None
        return outputs[key]

    sampling.sample(fn, info, 0, 100, scheduler, steps)

    def guided(values: dict):
        return values["uncond"] + GUIDANCE * (values["cond"] - values["uncond"])

    rows = []
    for k in gaps:
        step_plain, step_extra, block_plain, block_extra = [], [], [], []
        for i in range(2 * k + 2, steps - 2, 2):
            t = timesteps[i]
            a, b = i - k, i - 2 * k
            true = guided({n: outputs[(n, i)] for n in ("cond", "uncond")})
            size = float(true.norm())

            def error(values):
                return float((guided(values) - true).norm()) / size

            step_plain.append(error({n: outputs[(n, a)] for n in ("cond", "uncond")}))
            step_extra.append(error({
                n: linear(t, (timesteps[a], outputs[(n, a)]), (timesteps[b], outputs[(n, b)]))
                for n in ("cond", "uncond")}))
            for j in range(len(blocks)):
                for extrapolated, sink in ((False, block_plain), (True, block_extra)):
                    values = {}
                    for n in ("cond", "uncond"):
                        d_a = recorder.residuals[(n, a)][j]
                        d_b = recorder.residuals[(n, b)][j]
                        residual = linear(t, (timesteps[a], d_a), (timesteps[b], d_b)) \
                            if extrapolated else d_a
                        recorder.replace = (j, residual)
                        values[n] = forward(*calls[(n, i)], None)
                        recorder.replace = None
                    sink.append(error(values))
        median = statistics.median
        rows.append({
            "model": model_name, "gap": k, "blocks": len(blocks),
            "step_plain": median(step_plain), "step_extra": median(step_extra),
            "block_plain": median(block_plain), "block_extra": median(block_extra),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cogvideox-tiny,cogvideox-deep,wan-tiny")
    parser.add_argument("--scheduler", default="euler", choices=sampling.SCHEDULERS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--gaps", default="1,2")
    args = parser.parse_args()
    gaps = tuple(int(g) for g in args.gaps.split(","))
    print(f"{args.scheduler}, {args.steps} steps, label 0 seed 100, guidance {GUIDANCE}; "
          "medians over steps (and blocks) of the guided output's relative error\n")
    print("| model | blocks | gap (steps) | step reuse: plain / extrapolated | "
          "one block bypassed: plain / extrapolated | per compute saved, blocks over steps "
          "(plain / extrapolated) |")
    print("|---|---:|---:|---|---|---|")
    with torch.no_grad():
        for name in args.models.split(","):
            for r in measure(name, args.scheduler, args.steps, gaps):
                per_plain = r["block_plain"] * r["blocks"] / r["step_plain"]
                per_extra = r["block_extra"] * r["blocks"] / r["step_extra"]
                print(f"| {r['model']} | {r['blocks']} | {r['gap']} | "
                      f"{r['step_plain']:.4f} / {r['step_extra']:.4f} | "
                      f"{r['block_plain']:.4f} / {r['block_extra']:.4f} | "
                      f"{per_plain:.1f} / {per_extra:.1f} |", flush=True)


if __name__ == "__main__":
    main()
