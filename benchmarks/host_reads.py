"""Host reads per denoising step, per preset and per step/block rule combination (CPU).

A GPU synchronises at every read of a device tensor by the host; DESIGN.md allows at most one
per step, none on the second guidance branch of a step, and none where the decision is fixed in
advance. This script measures (it asserts nothing) the reads that the runtime makes today, on a
pipeline-shaped loop (``benchmarks/loop.py``: tiny Wan transformer, the timestep passed as a
tensor, guidance as two calls per step inside ``cache_context``), with the counting harness of
``tests/host_reads.py``. Each configuration compiles and runs one generation, then the counted
one follows. Columns:

* reads/step: all reads of the counted generation over its steps (both guidance calls);
* cond, uncond: the reads of each guidance call, per step (uncond is the second branch);
* warm-up: reads per step over the first ``warmup_steps`` steps (decided in advance);
* computed, reused: reads per step over the steps the first branch computed / reused.

Then, per configuration, where the reads come from (call site <- caller, reads per step).

    python benchmarks/host_reads.py [--steps 20] [--piece-compiler eager] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.loop import WAN_SIZES, Loop, build_wan, make_inputs  # noqa: E402
from tests.host_reads import HostReads  # noqa: E402

PRESET_NAMES = ("off", "base", "turbo", "flash", "sencache", "bwcache")
# Step rule x block rule on top of preset off's defaults (warm-up 2, end span 1.5).
COMBINATIONS = [
    (step, block)
    for step in ("none", "lfcache", "sencache")
    for block in ("none", "blockcache", "bwcache")
    if (step, block) != ("none", "none")
]


def configurations(names=None) -> list[tuple[str, dict]]:
    configs = [(p, {"preset": p}) for p in PRESET_NAMES]
    configs += [
        (f"{step}+{block}", {"preset": "off", "step_rule": step, "block_rule": block})
        for step, block in COMBINATIONS
    ]
    configs.append(("lfcache residual", {"preset": "flash", "step_reuse": "residual"}))
    configs += [  # the threshold rule alone, and other rules under a compute budget
        ("lfcache threshold", {"preset": "turbo", "compute_budget": None, "max_reuse": 1}),
        ("trajectory budget", {"preset": "off", "step_rule": "trajectory",
                               "compute_budget": 0.5}),
        ("blind budget", {"preset": "off", "step_rule": "none", "compute_budget": 0.5}),
    ]
    if names:
        configs = [c for c in configs if c[0] in names]
    return configs


def measure(label: str, options: dict, steps: int, piece_compiler: str, size="tiny") -> dict:
    import pc_compile

    torch._dynamo.reset()
    wan = WAN_SIZES[size]
    model = build_wan(wan)
    inputs = make_inputs(wan)
    options = dict(options, piece_compiler=piece_compiler)
    compiled = torch.compile(model, backend="precisecache", options=options)
    start = time.perf_counter()
    with torch.no_grad():
        Loop(steps=steps)(compiled, inputs)  # compiles every piece on the way
        pc_compile.reset(compiled)
        reads = HostReads(stack_depth=4)
        loop = Loop(steps=steps, around=lambda i, b: reads.scope(step=i, branch=b))
        with reads:
            loop(compiled, inputs)
    detail = pc_compile.stats(compiled, detail=True)
    first = next(iter(detail["per_stream"].values()))
    computed = {e["step"] for e in first["trace"] if e["computed"]}
    if not first["trace"] and first["skipped_steps"] == 0:  # preset off keeps no trace
        computed = set(range(steps))
    warmup = pc_compile.PRESETS[options["preset"]].warmup_steps
    warmup = options.get("warmup_steps", warmup)

    def per_step(selected, **labels):
        selected = list(selected)
        if not selected:
            return None
        n = sum(len(reads.where(step=i, **labels)) for i in selected)
        return n / len(selected)

    all_steps = range(steps)
    sites = reads.sites(callers=3)
    return {
        "config": label,
        "options": options,
        "steps": steps,
        "reads": reads.count,
        "reads_per_step": reads.count / steps,
        "cond_per_step": per_step(all_steps, branch="cond"),
        "uncond_per_step": per_step(all_steps, branch="uncond"),
        "warmup_per_step": per_step(range(min(warmup, steps))),
        "computed_per_step": per_step(sorted(computed)),
        "reused_per_step": per_step(sorted(set(all_steps) - computed)),
        "per_step": [len(reads.where(step=i)) for i in all_steps],
        "computed_steps": len(computed),
        "compute_fraction": detail["compute_fraction"],
        "kinds": dict(reads.kinds()),
        "sites": {site: n / steps for site, n in sites.most_common()},
        "seconds": time.perf_counter() - start,
    }


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| config | reads/step | cond | uncond | warm-up | computed | reused | computed steps "
        "| compute fraction |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['reads_per_step']:.2f} | {_fmt(r['cond_per_step'])} "
            f"| {_fmt(r['uncond_per_step'])} | {_fmt(r['warmup_per_step'])} "
            f"| {_fmt(r['computed_per_step'])} | {_fmt(r['reused_per_step'])} "
            f"| {r['computed_steps']}/{r['steps']} | {r['compute_fraction']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--piece-compiler", default="eager", choices=("eager", "inductor"),
                        help="how the pieces run (the reads do not depend on it; eager is "
                        "quick on a CPU)")
    parser.add_argument("--only", nargs="*", help="configuration labels to run")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows = []
    for label, options in configurations(args.only):
        row = measure(label, options, args.steps, args.piece_compiler)
        rows.append(row)
        print(f"{label}: {row['reads_per_step']:.2f} reads/step ({row['seconds']:.0f} s)",
              flush=True)
    print()
    print(table(rows))
    print()
    for r in rows:
        print(f"{r['config']}: reads per step by site")
        for site, n in r["sites"].items():
            print(f"  {n:5.2f}  {site}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
