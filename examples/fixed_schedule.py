"""Replay a fixed schedule of computed and reused steps, with each way of filling a reuse.

A schedule is a string, one character a step: ``#`` computes the step, ``.`` reuses it. Each
guidance branch keeps its own computed outputs. A reused step returns

* ``plain``: the last computed output;
* ``line``: the linear extrapolation, in the timestep, through the last two computed outputs
  (the runtime's ``step_reuse="extrapolate"``);
* ``wide``: the same line through the last computed output and the newest earlier one at
  least as many steps back as the reused step is ahead;
* ``wide-t``: the same, measured in the timestep instead of in steps (the step sizes of the
  shifted schedules grow, so this reaches further back, also for a single reuse)
  (both: design measurement 14).

Prints the mean PSNR against the uncached generation over the prompts, per schedule and way.
This replays the fixed schedules of design measurements 12 and 14 (docs/design/), e.g.

    python examples/fixed_schedule.py --model wan-tiny --scheduler euler \\
        '###.#..#..#..#..#..#..#..#..##' '#####..#..#..#..#..#..#..#..##'
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

# benchmarks/ (reference models, samplers, metrics) is not installed with the package: it is
# imported from the repository this script belongs to.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import metrics, models, sampling
from pc_compile.runtime.history import extrapolate

PROMPTS = [(0, 100), (5, 101), (2, 102), (7, 103), (4, 104)]
WAYS = ("plain", "line", "wide", "wide-t")


def predict(computed: list, t: float, step: int, way: str):
    """The runtime's extrapolation through the last computed (t, output, step) and the earlier
    one ``way`` picks, at ``t``."""
    t_a, v_a, s_a = computed[-1]
    t_b, v_b, s_b = computed[-2]
    if way != "line":
        for t_b, v_b, s_b in reversed(computed[:-1]):
            if (s_a - s_b >= step - s_a) if way == "wide" else (t_b - t_a >= t_a - t):
                break
    return extrapolate([(t_b, v_b), (t_a, v_a)], t)


def replay(base, pattern: list[bool], way: str):
    """A transformer function that follows ``pattern``, filling reuses the ``way`` given."""
    history: dict[str, list] = {}

    def fn(hidden_states, timestep, encoder_hidden_states, ctx):
        computed = history.setdefault(ctx.name, [])
        t = float(timestep.reshape(-1)[0])
        if pattern[ctx.step_index] or len(computed) < 2:
            out = base(hidden_states, timestep, encoder_hidden_states, ctx)
            computed.append((t, out, ctx.step_index))
            del computed[:-4]
            return out
        if way == "plain":
            return computed[-1][1]
        return predict(computed, t, ctx.step_index, way)

    return fn


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("schedules", nargs="+", help="one character a step: # computes, . reuses")
    p.add_argument("--model", default="wan-tiny")
    p.add_argument("--scheduler", default="euler", choices=["euler", "unipc"])
    p.add_argument("--ways", default=",".join(WAYS), help=f"comma list of {', '.join(WAYS)}")
    p.add_argument("--prompts", type=int, default=len(PROMPTS), choices=range(1, 6))
    args = p.parse_args(argv)
    ways = args.ways.split(",")
    if any(w not in WAYS for w in ways):
        p.error(f"--ways takes {', '.join(WAYS)}; got {args.ways!r}")
    steps = len(args.schedules[0])
    for s in args.schedules:
        if len(s) != steps or set(s) - {"#", "."}:
            p.error(f"schedule {s!r}: every schedule needs {steps} characters, each # or .")
    model, info = models.load_reference(args.model)
    base = sampling.plain(model)
    prompts = PROMPTS[: args.prompts]
    with torch.no_grad():
        refs = [sampling.sample(base, info, lab, seed, args.scheduler, steps)
                for lab, seed in prompts]
        for s in args.schedules:
            pattern = [c == "#" for c in s]
            for way in ways:
                psnrs = [metrics.psnr(sampling.sample(replay(base, pattern, way), info, lab, seed,
                                                      args.scheduler, steps), ref)
                         for (lab, seed), ref in zip(prompts, refs)]
                mean = sum(float(x) for x in psnrs) / len(psnrs)
                print(f"{args.model} {args.scheduler} {s} computed {sum(pattern)}/{steps} "
                      f"{way:5s} {mean:6.2f} dB  " + " ".join(f"{float(x):.1f}" for x in psnrs),
                      flush=True)


if __name__ == "__main__":
    main()
