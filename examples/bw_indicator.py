"""BWCache's indicator over a generation: the relative L1 change of each block's output.

Runs a reference model with BWCache at a threshold no block reaches, so that every block runs
and is measured at every step, and reads the per-step trace (``stats(detail=True)``,
``block_metric``). The paper reports a U: large changes at the start and the end of sampling,
small in between. Prints a table and draws ``--out`` (default
``docs/bench/bwcache_indicator.png``).

    python examples/bw_indicator.py [--model cogvideox-tiny] [--scheduler euler]
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


def indicator(model_name: str, scheduler: str, steps: int) -> list[list[float | None]]:
    model, info = models.load_reference(model_name)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=pc_compile.backend(
        preset="bwcache", bw_threshold=1e-9, piece_compiler="eager"))
    sampling.sample(sampling.plain(compiled), info, 0, 100, scheduler, steps)
    trace = next(iter(pc_compile.stats(compiled, detail=True)["per_stream"].values()))["trace"]
    return [entry.get("block_metric") for entry in trace]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="wan-tiny,cogvideox-tiny")
    parser.add_argument("--scheduler", default="euler", choices=sampling.SCHEDULERS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="docs/bench/bwcache_indicator.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = args.models.split(",")
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = indicator(name, args.scheduler, args.steps)
        blocks = max(len(v) for v in values if v)
        print(f"\n{name}, {args.scheduler}, {args.steps} steps (cond branch): relative L1 change "
              "of each block's output since the step before\n")
        print("| step | " + " | ".join(f"block {j}" for j in range(blocks)) + " |")
        print("|---:|" + "---:|" * blocks)
        for step, row in enumerate(values):
            if row:
                cells = ("-" if v is None else f"{v:.3f}" for v in row)
                print(f"| {step} | " + " | ".join(cells) + " |")
        for j in range(blocks):
            xs = [s for s, row in enumerate(values) if row and row[j] is not None]
            ax.plot(xs, [values[s][j] for s in xs], marker=".", label=f"block {j}")
        ax.set_yscale("log")
        ax.set_title(f"{name}, {args.scheduler}")
        ax.set_xlabel("step")
        ax.set_ylabel("relative L1 change of the block output")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
