"""Compare ``compute_budget`` placements at the same budget, against the uncached output.

For each reference model, scheduler and step count: the uncached generation of each prompt,
then the generations of each method, all through ``torch.compile`` with this backend (pieces
run eagerly), reporting per method the realised compute fraction (``stats()["budget"]``, the
mean and the largest distance from the budget over the prompts) and the mean PSNR:

* ``blind``: ``compute_budget`` with no step rule: evenly spaced computed steps, the skipped
  ones extrapolated from the last two computed outputs (uniform + extrapolation);
* ``lfcache``: ``compute_budget`` with LFCache's probe placing the computed steps;
* ``sencache``: ``compute_budget`` with SenCache's predicted change placing them;
* ``preset:NAME``: a preset as it is, at its own compute, for comparison.

    python examples/budget_compare.py --models wan-tiny --schedulers euler --steps 30 \\
        --budgets 0.465 --methods blind,lfcache,preset:turbo --prompts 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pc_compile  # noqa: E402
from benchmarks import metrics, models, sampling  # noqa: E402

PROMPTS = [(0, 100), (5, 101), (2, 102), (7, 103), (4, 104), (1, 105), (6, 106), (3, 107)]
RULES = {"blind": "none", "lfcache": "lfcache", "sencache": "sencache", "trajectory": "trajectory"}


def options_for(method: str, budget: float, warmup: int | None = None) -> dict:
    if method.startswith("preset:"):
        return {"preset": method.split(":", 1)[1]}
    extra = {} if warmup is None else {"warmup_steps": warmup}
    return {"preset": "off", "step_rule": RULES[method], "compute_budget": budget, **extra}


def run(model, info, method: str, budget: float, scheduler: str, steps: int, prompts, refs,
        warmup: int | None = None):
    torch._dynamo.reset()
    options = {**options_for(method, budget, warmup), "piece_compiler": "eager"}
    compiled = torch.compile(model, backend="precisecache", options=options)
    fn = sampling.plain(compiled)
    fractions, psnrs = [], []
    for (label, seed), ref in zip(prompts, refs):
        out = sampling.sample(fn, info, label, seed, scheduler, steps)
        stats = pc_compile.stats(compiled)
        fractions.append(stats["compute_fraction"])
        psnrs.append(metrics.psnr(out, ref))
        pc_compile.reset(compiled)
    return fractions, psnrs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="wan-tiny")
    p.add_argument("--schedulers", default="euler")
    p.add_argument("--steps", default="30")
    p.add_argument("--budgets", default="0.465")
    p.add_argument("--methods", default="blind,lfcache")
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=None,
                   help="warmup_steps for the budget methods (default: the config's 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    prompts = PROMPTS[: args.prompts]
    print("model | scheduler | steps | budget | method | realised (mean, max |dev|) | PSNR",
          flush=True)
    for name in args.models.split(","):
        model, info = models.load_reference(name)
        for scheduler in args.schedulers.split(","):
            for steps in map(int, args.steps.split(",")):
                with torch.no_grad():
                    refs = [sampling.sample(sampling.plain(model), info, lab, seed, scheduler,
                                            steps) for lab, seed in prompts]
                for budget in map(float, args.budgets.split(",")):
                    for method in args.methods.split(","):
                        with torch.no_grad():
                            fr, ps = run(model, info, method, budget, scheduler, steps,
                                         prompts, refs, args.warmup)
                        dev = max(abs(f - budget) for f in fr)
                        print(f"{name} | {scheduler} | {steps} | {budget} | {method} | "
                              f"{sum(fr) / len(fr):.3f} ({dev:.3f}) | "
                              f"{sum(ps) / len(ps):.2f} | "
                              + " ".join(f"{x:.1f}" for x in ps), flush=True)


if __name__ == "__main__":
    main()
