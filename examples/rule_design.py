"""The measurements behind LFCache's design choices, on a reference model.

1. Step sensitivity: skip exactly one step (reuse the previous output) and measure the final
   PSNR against the uncached video: which steps matter.
2. Reuse form on fixed uniform schedules: the last output (the paper) against the linear
   extrapolation of the last two computed outputs in the timestep.
3. The LFCache rule against uniform skipping at equal compute: the paper's LFD with each reuse
   form, and the distance to the extrapolated cache (``lfd_reference="cache"``, the default).

    python examples/rule_design.py [--model cogvideox-tiny] [--scheduler euler] [--steps 30]

Prints markdown tables (pieces run eagerly; fidelity does not depend on compilation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

# benchmarks/ (reference models, samplers, metrics) is not installed with the package: it is
# imported from the repository this script belongs to.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pc_compile
from benchmarks import models, sampling
from benchmarks.metrics import psnr
from benchmarks.peers.uniform import full_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cogvideox-tiny")
    parser.add_argument("--scheduler", default="euler", choices=sampling.SCHEDULERS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip-sensitivity", action="store_true")
    args = parser.parse_args()
    model, info = models.load_reference(args.model)
    prompts = [(0, 11), (5, 12)]
    steps = args.steps
    refs = [sampling.sample(sampling.plain(model), info, lab, seed, args.scheduler, steps)
            for lab, seed in prompts]

    def mean_psnr(make_fn, n_prompts=len(prompts)):
        values = []
        for (lab, seed), ref in list(zip(prompts, refs))[:n_prompts]:
            out = sampling.sample(make_fn(), info, lab, seed, args.scheduler, steps)
            values.append(psnr(out, ref))
        return sum(values) / len(values)

    def schedule_fn(full: set[int], extrapolate: bool):
        def make():
            history: dict[str, list] = {}

            def fn(hidden, timestep, context, ctx):
                past = history.setdefault(ctx.name, [])
                if ctx.step_index not in full and past:
                    (t_a, v_a) = past[-1]
                    if extrapolate and len(past) > 1:
                        t_b, v_b = past[-2]
                        t = float(timestep[0])
                        return v_a + (v_a - v_b) * ((t - t_a) / (t_a - t_b))
                    return v_a
                out = model(hidden_states=hidden, timestep=timestep,
                            encoder_hidden_states=context, return_dict=False)[0]
                past.append((float(timestep[0]), out))
                return out

            return fn

        return make

    print(f"## {args.model}, {args.scheduler}, {steps} steps, cond + uncond, guidance 5\n")
    if not args.skip_sensitivity:
        print("| step skipped | PSNR dB |\n|---|---|")
        for skip in range(1, steps):
            full = set(range(steps)) - {skip}
            print(f"| {skip} | {mean_psnr(schedule_fn(full, False), 1):.2f} |", flush=True)
        print()
    print("| full steps (uniform) | compute | last output dB | extrapolated dB |")
    print("|---|---|---|---|")
    for n in (round(steps * f) for f in (0.75, 0.6, 0.5, 0.43, 0.37)):
        full = set(full_steps(steps, n))
        plain, extra = (mean_psnr(schedule_fn(full, e)) for e in (False, True))
        print(f"| {n} | {n / steps:.2f} | {plain:.2f} | {extra:.2f} |", flush=True)
    print("\n| LFCache alpha | accumulates | reuse | compute | PSNR dB | schedule (X computed) |")
    print("|---|---|---|---|---|---|")
    for reference, reuse in (("previous", "output"), ("previous", "extrapolate"),
                             ("cache", "extrapolate")):
        for alpha in (0.5, 0.7, 1.0, 1.5):
            torch._dynamo.reset()
            compiled = torch.compile(model, backend=pc_compile.backend(
                preset="turbo", compute_budget=None, alpha=alpha, step_reuse=reuse,
                lfd_reference=reference,
                piece_compiler="eager"))
            values, fractions = [], []
            for (lab, seed), ref in zip(prompts, refs):
                out = sampling.sample(sampling.plain(compiled), info, lab, seed,
                                      args.scheduler, steps)
                values.append(psnr(out, ref))
                fractions.append(pc_compile.stats(compiled)["compute_fraction"])
                if len(values) < len(prompts):
                    pc_compile.reset(compiled)
            value, cf = sum(values) / len(values), sum(fractions) / len(fractions)
            trace = pc_compile.stats(compiled, detail=True)["per_stream"]["stream0"]["trace"]
            schedule = "".join("X" if e["computed"] else "." for e in trace)
            measure = "LFD (paper)" if reference == "previous" else "distance to the cache"
            print(f"| {alpha} | {measure} | {reuse} | {cf:.3f} | {value:.2f} | `{schedule}` |",
                  flush=True)


if __name__ == "__main__":
    main()
