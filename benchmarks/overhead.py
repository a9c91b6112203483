"""The runtime's CPU overhead: wall time against plain torch.compile and against the ideal time.

On a mid-size Wan transformer (``benchmarks/loop.py`` size ``mid``: 6 blocks, width 768, 1,280
tokens; float32) and a pipeline-shaped loop (20 flow-matching Euler steps, the timestep as a
tensor, guidance as two calls per step), on 2 threads:

* plain torch.compile's generation wall time;
* preset off's ratio to it (the partitioned graph with nothing cached);
* turbo's, flash's and sencache's ratio to their ideal time, plain step time x the realised
  ``compute_fraction`` (probe included in block-equivalents by its token share).

Every configuration compiles its own copy of the model (so that ``pc_compile.stats`` tells
them apart), runs one warm generation, then the timed generations run in rounds, one generation
of each configuration per round, so that a change in the machine's load falls on all of them;
the minimum over rounds is reported (and the median).

``--profile`` then runs one generation of each caching configuration under cProfile and one
under torch.profiler and reports where the time that is not the network goes: the runtime's own
Python per call, the compiled pieces, the probe (its input resize, its network, its spectra),
the reuse (copies of cached outputs, the extrapolation), the policy's arithmetic and its host
read; and the eager aten ops that run outside the compiled pieces, by self time.

A benchmark, not a test: CPU timings on a shared machine are noisy; run it on a quiet one.

    python benchmarks/overhead.py [--steps 20] [--rounds 3] [--profile] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import os
import pstats
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.loop import WAN_SIZES, Loop, build_wan, make_inputs  # noqa: E402

CONFIGS = ("plain", "off", "turbo", "flash", "sencache")

# What the profile groups by: (label, file suffix, function name); cumulative time per step.
PROFILE_GROUPS = (
    ("runtime call, all (main graph)", "runtime/cached_graph.py", "__call__"),
    ("compiled piece calls", "runtime/executor.py", "call_piece"),
    ("run_full (pieces + bypass adds)", "runtime/cached_graph.py", "run_full"),
    ("probe (resize + network + output)", "runtime/probe.py", "__call__"),
    ("probe input resize", "runtime/probe.py", "probe_call"),
    ("low-frequency spectra (FFT)", "runtime/lfd.py", "low_frequencies"),
    ("LFD", "runtime/lfd.py", "lfd"),
    ("step rule decide (LFCache)", "policies/lfcache.py", "decide"),
    ("step rule decide (SenCache)", "policies/sencache.py", "decide"),
    ("the host read (read_host)", "policies/base.py", "read_host"),
    ("reuse output", "policies/precisecache.py", "reuse_output"),
    ("extrapolation", "policies/lfcache.py", "extrapolate"),
    ("copy of a cached output", "runtime/cached_graph.py", "copy_output"),
    ("after a full step (cache refresh)", "policies/precisecache.py", "after_full_step"),
    ("SenCache re-anchor (clone, rms)", "policies/sencache.py", "after_full_step"),
    ("plan_step", "policies/precisecache.py", "plan_step"),
    ("timestep read", "runtime/cached_graph.py", "_timestep"),
    ("stream lookup", "runtime/state.py", "lookup"),
)


def compiled_configs(model, names):
    import pc_compile  # noqa: F401  (the backend's entry point needs the package)

    out = {}
    for name in names:
        copy_of = copy.deepcopy(model)  # its own weights: its own stats
        if name == "plain":
            out[name] = torch.compile(copy_of)
        else:
            out[name] = torch.compile(copy_of, backend="precisecache", options={"preset": name})
    return out


def generation(compiled, inputs, steps: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        Loop(steps=steps)(compiled, inputs)
    return time.perf_counter() - start


def profile_config(compiled, inputs, steps: int, top: int = 12) -> dict:
    """cProfile groups and the eager ops' self time, one generation each, per step."""
    profiler = cProfile.Profile()
    with torch.no_grad():
        profiler.enable()
        Loop(steps=steps)(compiled, inputs)
        profiler.disable()
    stats = pstats.Stats(profiler)
    groups = {}
    for label, suffix, function in PROFILE_GROUPS:
        calls = cum = 0.0
        for (file, _, name), (cc, nc, tt, ct, callers) in stats.stats.items():
            if name == function and file.replace(os.sep, "/").endswith(suffix):
                calls += nc
                cum += ct
        if calls:
            groups[label] = {"ms_per_step": 1000 * cum / steps, "calls_per_step": calls / steps}
    own = sorted(
        ((tt, nc, f"{os.path.relpath(file, ROOT) if file.startswith(ROOT) else file}:{line} "
          f"({name})")
         for (file, line, name), (cc, nc, tt, ct, callers) in stats.stats.items()
         if "pc_compile" in file),
        reverse=True)[:top]
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) \
            as prof:
        Loop(steps=steps)(compiled, inputs)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    eager_ops = [
        {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / steps,
         "calls_per_step": e.count / steps}
        for e in ops if e.key.startswith("aten::")
    ][:top]
    return {
        "groups": groups,
        "own_time": [{"ms_per_step": 1000 * tt / steps, "calls_per_step": nc / steps,
                      "where": where} for tt, nc, where in own],
        "eager_ops": eager_ops,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="mid", choices=sorted(WAN_SIZES))
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-configs", nargs="*", default=None,
                        help="configurations to profile (plain: its ops only; default: all)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import diffusers

    import pc_compile

    diffusers.utils.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch._dynamo.config.cache_size_limit = 64
    size = WAN_SIZES[args.size]
    model = build_wan(size)
    inputs = make_inputs(size)
    names = ["plain"] + [c for c in args.configs if c != "plain"]
    compiled = compiled_configs(model, names)
    report = {"size": args.size, "note": size.note, "steps": args.steps, "threads": args.threads,
              "rounds": args.rounds, "configs": {}}
    for name in names:  # compile and warm
        seconds = generation(compiled[name], inputs, args.steps)
        print(f"warm {name}: {seconds:.1f} s", flush=True)
    times = {name: [] for name in names}
    fractions = {}
    for r in range(args.rounds):
        for name in names:
            if name != "plain":
                pc_compile.reset(compiled[name])
            times[name].append(generation(compiled[name], inputs, args.steps))
            if name != "plain":
                fractions[name] = pc_compile.stats(compiled[name])["compute_fraction"]
        print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
    plain_min = min(times["plain"], default=None)
    plain_median = statistics.median(times["plain"]) if times["plain"] else None
    for name in names if args.rounds else ():
        fraction = fractions.get(name, 1.0)
        best, median = min(times[name]), statistics.median(times[name])
        report["configs"][name] = {
            "generation_s": times[name],
            "step_ms_min": 1000 * best / args.steps,
            "compute_fraction": fraction,
            "ratio_to_plain": best / plain_min,
            "ratio_to_ideal": best / (plain_min * fraction),
            "ratio_to_plain_median": median / plain_median,
            "ratio_to_ideal_median": median / (plain_median * fraction),
        }
    print()
    print(table(report) if args.rounds else "(no timed rounds)")
    if args.profile:
        report["profile"] = {}
        for name in names:
            if args.profile_configs is not None and name not in args.profile_configs:
                continue
            if name != "plain":
                pc_compile.reset(compiled[name])
            prof = report["profile"][name] = profile_config(compiled[name], inputs, args.steps)
            unprofiled = "" if plain_min is None else (
                f"; plain step {1000 * plain_min / args.steps:.1f} ms unprofiled")
            print(f"\n{name}: where a step's time goes (cProfile cumulative, ms per step"
                  f"{unprofiled})")
            print_profile(prof)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


def table(report: dict) -> str:
    lines = ["| config | step ms (min) | compute fraction | x plain | x ideal | x plain (median) "
             "| x ideal (median) |", "|---|---|---|---|---|---|---|"]
    for name, c in report["configs"].items():
        lines.append(
            f"| {name} | {c['step_ms_min']:.1f} | {c['compute_fraction']:.3f} "
            f"| {c['ratio_to_plain']:.3f} | {c['ratio_to_ideal']:.3f} "
            f"| {c['ratio_to_plain_median']:.3f} | {c['ratio_to_ideal_median']:.3f} |")
    return "\n".join(lines)


def print_profile(prof: dict) -> None:
    for label, g in prof["groups"].items():
        print(f"  {g['ms_per_step']:8.2f} ms  {g['calls_per_step']:5.1f} calls  {label}")
    print("  own time in pc_compile (tottime):")
    for o in prof["own_time"]:
        print(f"  {o['ms_per_step']:8.3f} ms  {o['calls_per_step']:5.1f} calls  {o['where']}")
    print("  aten ops by self time (eager ops, and the extern ops of compiled pieces):")
    for o in prof["eager_ops"]:
        print(f"  {o['self_ms_per_step']:8.3f} ms  {o['calls_per_step']:5.1f} calls  {o['op']}")


if __name__ == "__main__":
    main()
