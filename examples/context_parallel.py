"""Caching under diffusers' context parallelism: collectives per step, and the probe's cost.

Runs on two CPU processes over gloo (the two-process harness of tests/distributed), Wan tiny
(two blocks, a 3x8x8 latent, Ulysses degree 2), ten Euler steps per preset, pieces compiled
eagerly. For each preset it counts, per step, the collectives the backend of
``torch.distributed`` ran (``gloo:*`` events of the profiler: the model's all-to-alls and its
output gather, the probe's, and the engine's decision collective) and the engine's decision
collectives alone; and it compares the probe run under context parallelism (sharded: each rank
runs its half of the probe's tokens, with the probe's own all-to-alls) with the probe run
whole on each rank (replicated: the same weights, no parallelism) in time per call and in the
low-frequency distances LFCache reads from it. Design measurement 21
(docs/design/21-context-parallelism.md) has the numbers.

    python examples/context_parallel.py
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.distributed import scenarios  # noqa: E402
from tests.distributed.harness import run_ranks  # noqa: E402

STEPS = 10
PRESETS = {
    "off": {"preset": "off"},
    "turbo": {"preset": "turbo"},
    "flash": {"preset": "flash"},
    "sencache": {"preset": "sencache"},
    "trajectory": {"preset": "off", "step_rule": "trajectory", "traj_epsilon": 0.5},
    "bwcache": {"preset": "bwcache", "bw_threshold": 0.5},
    "turbo+blockcache": {"preset": "turbo", "compute_budget": None, "block_rule": "blockcache"},
}


def collectives(rank: int, world: int) -> dict:
    import pc_compile

    result = {}
    for key, options in PRESETS.items():
        torch._dynamo.reset()
        tiny = scenarios.model("wan", True)
        scenarios.warm_up(tiny)
        compiled = torch.compile(tiny.model, backend="precisecache",
                                 options={**options, **scenarios.EAGER})
        per_step = []

        def counted(**kwargs):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
                out = compiled(**kwargs)
            names = collections.Counter(e.name for e in p.events() if e.name.startswith("gloo:"))
            per_step.append(dict(names))
            return out

        with scenarios.CountCollectives() as engine:
            scenarios.sample(engine.wrap(counted), tiny, STEPS)
        stats = pc_compile.stats(compiled)
        result[key] = {"gloo": per_step, "engine": engine.per_call,
                       "skipped": stats["skipped_steps"], "probes": stats["probe_evals"],
                       "bypasses": stats["block_bypasses"]}
    return result


def probe(rank: int, world: int) -> dict:
    """The probe's call, sharded (the model under context parallelism) and replicated (a copy
    without it), at the probe's shape of the tiny Wan latent: time and the LFDs."""
    from pc_compile.runtime.lfd import lfd, low_frequencies

    timings, lfds = {}, {}
    for how in ("sharded", "replicated"):
        torch._dynamo.reset()
        tiny = scenarios.model("wan", how == "sharded")
        if how == "sharded":
            scenarios.warm_up(tiny)
        compiled = torch.compile(tiny.model, backend="precisecache",
                                 options={"preset": "off", **scenarios.EAGER})
        # The probe's input: the latent downsampled as LFCache's probe does it (2 frames, 2x2
        # tokens per frame after patching for this latent, with probe_min_tokens=1).
        call = tiny.make_inputs(900.0, 1)
        call["hidden_states"] = call["hidden_states"][:, :, :2, ::2, ::2].contiguous()
        spectra = []
        with torch.no_grad():
            for t in scenarios.timesteps(STEPS):
                call["timestep"] = torch.tensor([t])
                spectra.append(low_frequencies(compiled(**call)[0], 0.2))
            start = time.perf_counter()
            for _ in range(20):
                compiled(**call)
        timings[how] = (time.perf_counter() - start) / 20
        lfds[how] = [lfd(a, b).item() for a, b in zip(spectra[1:], spectra[:-1])]
    return {"time": timings, "lfd": lfds}


def main() -> None:
    ranks = run_ranks(collectives, world=2, timeout=600)
    print("collectives per step (rank 0; the model's, the probe's and the engine's)")
    for key, row in ranks[0].items():
        totals = [sum(step.values()) for step in row["gloo"]]
        same = row == ranks[1][key]
        print(f"  {key:18s} gloo per step {totals}  engine {row['engine']}  skipped "
              f"{row['skipped']} probes {row['probes']} bypasses {row['bypasses']}  "
              f"ranks agree {same}")
        print(f"  {'':18s} kinds at step 0 {row['gloo'][0]}, at the last "
              f"{row['gloo'][-1]}")
    ranks = run_ranks(probe, world=2, timeout=600)
    for r, result in enumerate(ranks):
        sharded, replicated = result["lfd"]["sharded"], result["lfd"]["replicated"]
        worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(sharded, replicated))
        print(f"rank {r}: probe call sharded {1e3 * result['time']['sharded']:.2f} ms, "
              f"replicated {1e3 * result['time']['replicated']:.2f} ms; LFD relative "
              f"difference at most {worst:.2e}")


if __name__ == "__main__":
    main()
