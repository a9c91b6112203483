"""``python -m benchmarks.compare``: the presets at their budgets against the baselines and peers.

    python -m benchmarks.compare --models wan-tiny,cogvideox-tiny,cogvideox-deep \\
        --schedulers euler,unipc,dpm --steps 20,30,50 --prompts 8 --held-out cogvideox-deep \\
        --out bench_out/compare

For every model x scheduler x step count it runs the benchmark (``python -m benchmarks``) with
the presets (base, turbo, flash: ``precisecache-base``, ``precisecache-turbo``,
``precisecache-flash``), uniform skipping with each reuse form (``uniform``, ``uniform+linear``,
``uniform+quadratic``) and the peers (``--peers``, default SeaCache and TaylorSeer, the
strongest of the earlier runs), one result file per setting under
``<out>/<setting>/<model>-<scheduler>-<steps>/results.json``. A result file that is already
there is kept (the run resumes where it stopped; ``--force`` reruns). Then it prints, through
``benchmarks.report`` (``--presets``), each preset's budget, realised compute and PSNR / SSIM,
the three uniform forms and every peer interpolated at the same compute, the margins over
uniform + linear extrapolation and over the best peer, and whether the preset meets the bar;
with ``--held-out`` the held-out models apart from those the choices were made on.
``--report-only`` prints the report of the files already there without running anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import report, run

PRESETS = ["precisecache-base", "precisecache-turbo", "precisecache-flash"]
BASELINES = ["uniform", "uniform+linear", "uniform+quadratic"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="wan-tiny,cogvideox-tiny,cogvideox-deep")
    p.add_argument("--schedulers", default="euler,unipc,dpm")
    p.add_argument("--steps", default=None,
                   help="comma list of step counts (default: the setting's)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--setting", default="default", choices=sorted(run.SETTINGS))
    p.add_argument("--peers", default="seacache,taylorseer",
                   help="comma list of the peers besides the uniform baselines")
    p.add_argument("--presets", default=",".join(PRESETS),
                   help="comma list of the project's methods to run")
    p.add_argument("--held-out", default=None, help="models reported apart (leave one out)")
    p.add_argument("--design-models", default=None)
    p.add_argument("--out", default="bench_out/compare")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true", help="rerun settings already in --out")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def plan(args) -> list[tuple[str, str, int, Path]]:
    """(model, scheduler, steps, result file) of every setting the comparison needs."""
    steps = ([int(s) for s in args.steps.split(",")] if args.steps
             else run.SETTINGS[args.setting]["steps"])
    root = Path(args.out) / args.setting
    return [(m, s, n, root / f"{m}-{s}-{n}" / "results.json")
            for m in args.models.split(",") for s in args.schedulers.split(",") for n in steps]


def bench_argv(args, model: str, scheduler: str, steps: int, out: Path) -> list[str]:
    """The ``python -m benchmarks`` arguments of one setting."""
    methods = BASELINES + [m for m in args.peers.split(",") if m] + [
        m for m in args.presets.split(",") if m]
    return ["--models", model, "--schedulers", scheduler, "--steps", str(steps),
            "--prompts", str(args.prompts), "--setting", args.setting,
            "--methods", ",".join(methods), "--threads", str(args.threads),
            "--out", str(out.parent), "--no-plots"]


def main(argv=None) -> None:
    args = parse_args(argv)
    files = []
    for model, scheduler, steps, path in plan(args):
        if not args.report_only and (args.force or not path.is_file()):
            bench = bench_argv(args, model, scheduler, steps, path)
            print("python -m benchmarks " + " ".join(bench), flush=True)
            run.run(run.parse_args(bench), command="python -m benchmarks " + " ".join(bench))
        if path.is_file():
            files.append(str(path))
    if not files:
        sys.exit(f"no result files under {Path(args.out) / args.setting}")
    rargv = files + ["--presets"]
    if args.held_out:
        rargv += ["--held-out", args.held_out]
        if args.design_models:
            rargv += ["--design-models", args.design_models]
    report.main(rargv)


if __name__ == "__main__":
    main()
