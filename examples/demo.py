"""Demo: accelerate a trained reference video DiT with the precisecache backend.

Samples one video with classifier-free guidance (cond and uncond as two calls per step, as
WanPipeline does), uncached and through ``torch.compile(model, backend="precisecache")`` with
each preset, and prints what each computed and how close it stays to the uncached video. The
frames are written to ``demo_out/``. Runs on a CPU in a few minutes (compilation included).

    python examples/demo.py [--model wan-tiny] [--steps 30] [--presets off,turbo,flash]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# benchmarks/ (reference models, samplers, metrics) is not installed with the package: it is
# imported from the repository this script belongs to.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pc_compile
from benchmarks import data, models, sampling
from benchmarks.metrics import psnr, ssim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = models.list_reference()
    parser.add_argument("--model", default="wan-tiny" if "wan-tiny" in available else available[0],
                        choices=available)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--scheduler", default="unipc", choices=sampling.SCHEDULERS)
    parser.add_argument("--presets", default="off,base,turbo,flash")
    parser.add_argument("--label", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="demo_out")
    args = parser.parse_args()

    model, info = models.load_reference(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def generate(fn):
        start = time.perf_counter()
        video = sampling.sample(fn, info, args.label, args.seed, args.scheduler, args.steps)
        return video, time.perf_counter() - start

    print(f"model {args.model}: latent {tuple(info['latent_shape'])}, {args.steps} steps "
          f"({args.scheduler}), class {data.class_name(args.label)!r}, two guidance calls/step")
    reference, seconds = generate(sampling.plain(model))
    print(f"{'uncached (eager)':<18} compute 1.000  {seconds:6.1f} s")
    rows = [("uncached", reference)]
    header = f"{'preset':<18} {'compute':>7} {'full steps':>10} {'PSNR dB':>8} {'SSIM':>6} " \
             f"{'1st run s':>9} {'2nd run s':>9}"
    print(header)
    for preset in args.presets.split(","):
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="precisecache", options={"preset": preset})
        _, first = generate(sampling.plain(compiled))  # includes compilation
        pc_compile.reset(compiled)
        video, second = generate(sampling.plain(compiled))
        stats = pc_compile.stats(compiled)
        full = stats["full_steps"] / max(stats["steps"], 1)
        print(f"{preset:<18} {stats['compute_fraction']:7.3f} {full:10.2f} "
              f"{psnr(video, reference):8.2f} {ssim(video, reference):6.3f} {first:9.1f} "
              f"{second:9.1f}")
        rows.append((preset, video))
    grid = out / f"{args.model}_presets.png"
    data.save_grid(torch.cat([v for _, v in rows]), str(grid), titles=[n for n, _ in rows])
    print(f"frames: {grid}")


if __name__ == "__main__":
    main()
