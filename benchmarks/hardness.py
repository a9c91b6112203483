"""How hard a sampling setting is for step caching: the PSNR of 50% uniform skipping.

    python -m benchmarks.hardness --models cogvideox-tiny --guidance 5,8,12 --steps 10,20,30 \\
        --shift 3,6 --prompts 2

For every model x scheduler x guidance x shift x step count, each prompt is generated without
caching and with uniform skipping at half the steps (``uniform``: evenly spaced computed steps,
the last output reused; and ``uniform+linear``: the same steps, the skipped ones extrapolated
linearly), and the mean PSNR against the uncached output is printed, one line per setting. The
lower the PSNR, the harder the setting: the reference models sit far above real video models,
which are near 26-29 dB for the paper's caching rows. The bench's named settings
(``run.SETTINGS``) were chosen with it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from . import metrics, models, sampling
from .peers.uniform import UniformSkip
from .run import prompts_for


def measure(model, info, scheduler: str, steps: int, guidance: float, shift: float,
            prompts: list[tuple[int, int]], fraction: float = 0.5) -> dict:
    """Mean PSNR (dB) of uniform skipping at ``fraction`` against the uncached output, for the
    plain reuse (``uniform``) and the linear extrapolation (``uniform+linear``)."""
    out = {"uniform": [], "uniform+linear": []}
    for label, seed in prompts:
        ref = sampling.sample(sampling.plain(model), info, label, seed, scheduler, steps,
                              guidance, shift=shift)
        for name, order in (("uniform", 0), ("uniform+linear", 1)):
            u = UniformSkip(model, fraction, order=order)
            x = sampling.sample(u.fn, info, label, seed, scheduler, steps, guidance, shift=shift)
            out[name].append(float(metrics.psnr(x, ref)))
    return {name: sum(v) / len(v) for name, v in out.items()} | {"per_prompt": out}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hardness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cogvideox-tiny")
    p.add_argument("--schedulers", default="euler")
    p.add_argument("--steps", default="30")
    p.add_argument("--guidance", default="5")
    p.add_argument("--shift", default="3")
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        model, info = models.load_reference(name)
        prompts = prompts_for(info, args.prompts)
        grid = itertools.product(args.schedulers.split(","),
                                 [float(g) for g in args.guidance.split(",")],
                                 [float(s) for s in args.shift.split(",")],
                                 [int(s) for s in args.steps.split(",")])
        for sched, guidance, shift, steps in grid:
            t0 = time.time()
            with torch.no_grad():
                r = measure(model, info, sched, steps, guidance, shift, prompts, args.fraction)
            row = {"model": name, "scheduler": sched, "guidance": guidance, "shift": shift,
                   "steps": steps, "fraction": args.fraction, "prompts": len(prompts), **r}
            rows.append(row)
            per = " ".join(f"{x:.1f}" for x in r["per_prompt"]["uniform"])
            print(f"{name} {sched} guidance {guidance:g} shift {shift:g} steps {steps}: "
                  f"uniform {r['uniform']:.1f} dB ({per}), uniform+linear "
                  f"{r['uniform+linear']:.1f} dB  [{time.time() - t0:.0f}s]", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
