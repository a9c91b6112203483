"""``python -m benchmarks.candidates``: option sets under a compute budget against uniform + linear.

    python -m benchmarks.candidates --models cogvideox-tiny,wan-tiny --schedulers euler,unipc \\
        --steps 20,30 --prompts 4 --budgets 0.38,0.465 \\
        --candidate 'probe={"step_rule": "lfcache", "alpha": 1.0, "budget_placement": "even"}' \\
        --candidate 'blind={"step_rule": "none", "budget_placement": "even"}' \\
        --out bench_out/candidates.json

The tuning rows of the design measurements come from this command: it answers "which of these
options is better at this budget" on a few prompts, quickly, where ``benchmarks.compare`` runs
the presets beside every peer. For every model x scheduler x step count x budget it samples the
uncached output of each prompt once, then uniform + linear extrapolation at the budget (the
baseline every choice must beat) and each candidate: the backend with the candidate's options,
``preset="off"`` unless the candidate names a preset, and ``compute_budget`` set to the budget.
A line per row gives the mean realised compute (and the largest), PSNR and SSIM against the
uncached output, and the first prompt's trace: ``#`` a computed step, ``p`` a partial one
(some blocks bypassed), ``e`` a reuse extrapolated, ``o`` the last output reused, ``r`` a
residual reused. ``--out`` writes every row, per prompt, as JSON.

The pieces run uncompiled (``piece_compiler="eager"``), as in the benchmark: the numbers are
fidelity, not speed. A few prompts decide little: on four prompts a single reuse-form choice
moves the mean by several dB, so differences under about 1 dB are noise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from pc_compile.config import config_from_options

from . import metrics, models, ours, sampling
from .peers.uniform import UniformSkip
from .run import SETTINGS, prompts_for

TRACE_CHARS = {"extrapolate": "e", "output": "o", "residual": "r", "residual_extrapolate": "r"}


def parse_candidate(text: str) -> tuple[str, dict]:
    """``NAME=JSON`` -> (name, options); a clear error for anything else."""
    name, sep, body = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"--candidate must be NAME=JSON, got {text!r}")
    try:
        options = json.loads(body)
    except json.JSONDecodeError as e:
        raise ValueError(f"--candidate {name!r}: options are not JSON ({e})") from None
    if not isinstance(options, dict):
        raise ValueError(f"--candidate {name!r}: options must be a JSON object, got {body!r}")
    if "compute_budget" in options:
        raise ValueError(f"--candidate {name!r}: the budget comes from --budgets, not the options")
    try:  # the options a run would pass, at some budget: an unknown or bad option fails here
        config_from_options({"preset": "off", **options, "compute_budget": 0.5})
    except (TypeError, ValueError) as e:
        raise ValueError(f"--candidate {name!r}: {e}") from None
    return name.strip(), options


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.candidates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cogvideox-tiny")
    p.add_argument("--schedulers", default="euler")
    p.add_argument("--steps", default="20")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--budgets", default="0.465")
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=JSON",
                   help="backend options (JSON object) of one candidate; repeat for several")
    p.add_argument("--setting", default="default", choices=sorted(SETTINGS),
                   help="guidance and shift (default: guidance 5, shift 3)")
    p.add_argument("--out", default=None, help="write every row, per prompt, to this JSON file")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    if not args.candidate:
        p.error("give at least one --candidate NAME=JSON")
    try:
        args.candidates = dict(parse_candidate(c) for c in args.candidate)
        args.budgets = [float(b) for b in args.budgets.split(",")]
        args.steps = [int(s) for s in args.steps.split(",")]
    except ValueError as e:
        p.error(str(e))
    if not all(0.0 < b <= 1.0 for b in args.budgets):
        p.error(f"--budgets must lie in (0, 1], got {args.budgets}")
    if args.prompts < 1:
        p.error("--prompts must be at least 1")
    return args


def trace_pattern(trace: list[dict]) -> str:
    """The deciding stream's steps as characters (module docstring), from a run's trace in the
    benchmark's per-call format (``ours._trace``)."""
    chars = []
    for entry in trace:
        if entry["branch"] != "cond":
            continue
        if not entry["skip"]:
            chars.append("#" if all(entry.get("blocks") or [True]) else "p")
        else:
            chars.append(TRACE_CHARS.get(entry.get("reuse"), "?"))
    return "".join(chars)


def _row(label, budget, outputs, refs, fractions, patterns) -> dict:
    return {"method": label, "budget": budget, "compute": fractions, "patterns": patterns,
            "psnr": [metrics.psnr(x, r) for x, r in zip(outputs, refs)],
            "ssim": [metrics.ssim(x, r) for x, r in zip(outputs, refs)]}


def run_setting(model, info, scheduler, steps, args, candidates) -> list[dict]:
    """The rows of one model x scheduler x step count: uniform + linear and each candidate, at
    each budget."""
    setting = SETTINGS[args.setting]
    kw = {"scheduler": scheduler, "steps": steps, "guidance": setting["guidance"],
          "shift": setting["shift"]}
    prompts = prompts_for(info, args.prompts)
    refs = [sampling.sample(sampling.plain(model), info, label, seed, **kw)
            for label, seed in prompts]
    rows = []
    for budget in args.budgets:
        uniform = UniformSkip(model, budget, order=1)
        outputs, fractions = [], []
        for label, seed in prompts:
            uniform.reset()
            outputs.append(sampling.sample(uniform.fn, info, label, seed, **kw))
            fractions.append(uniform.stats()["compute_fraction"])
        rows.append(_row("uniform+linear", budget, outputs, refs, fractions, []))
        for name, options in candidates.items():
            # The benchmark's own factory for our methods: a fresh compile, pieces eager.
            method = ours._make("compute_budget", **{"preset": "off", **options})(
                model, budget, None)
            outputs, fractions, patterns = [], [], []
            for label, seed in prompts:
                method.reset()
                outputs.append(sampling.sample(method.fn, info, label, seed, **kw))
                stats = method.stats()
                fractions.append(stats["compute_fraction"])
                patterns.append(trace_pattern(stats["trace"]))
            rows.append(_row(name, budget, outputs, refs, fractions, patterns))
    for row in rows:
        row.update(model=info["name"], scheduler=scheduler, steps=steps)
    return rows


def format_row(row: dict) -> str:
    n = len(row["psnr"])
    return (f"{row['model']} {row['scheduler']} {row['steps']} budget {row['budget']:.3f} "
            f"{row['method']:<16} compute {sum(row['compute']) / n:.3f} "
            f"(max {max(row['compute']):.3f})  PSNR {sum(row['psnr']) / n:6.2f}  "
            f"SSIM {sum(row['ssim']) / n:.4f}  {row['patterns'][0] if row['patterns'] else ''}")


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    start = time.time()
    for name in args.models.split(","):
        model, info = models.load_reference(name)
        for scheduler in args.schedulers.split(","):
            for steps in args.steps:
                for row in run_setting(model, info, scheduler, steps, args, args.candidates):
                    print(format_row(row), flush=True)
                    rows.append(row)
    print(f"{len(rows)} rows in {time.time() - start:.0f} s", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": "python -m benchmarks.candidates " + shlex.join(
            sys.argv[1:] if argv is None else argv), "rows": rows}
        out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
