"""What each rank runs in the context-parallel tests (``harness.run_ranks`` calls these).

A scenario builds a tiny denoiser, enables diffusers' context parallelism on it (Ulysses over
the gloo group), compiles it and samples a few Euler steps; it returns plain data and tensors.
The same weights run single-process on rank 0 afterwards (after the last collective, so rank 1
never waits on it) as the reference.

diffusers' context-parallel split hooks learn a block's forward signature on their first call
(``inspect.signature``), which Dynamo cannot trace on Wan's blocks; a graph break there, inside
the block loop, makes Dynamo run the whole forward eagerly. One eager call before compiling
fills that cache (README, "Many GPUs"): ``warm_up``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import pc_compile
from tests.tiny_models import build, first_output

EAGER = {"piece_compiler": "eager", "probe_min_tokens": 1}


def flux_inputs(tiny):
    """Flux's call with four text tokens: its plan splits the text over the ranks too."""
    make = tiny.make_inputs
    text = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(7))

    def make_inputs(t, seed):
        inputs = make(t, seed)
        inputs.update(encoder_hidden_states=text, txt_ids=torch.zeros(4, 3))
        return inputs

    tiny.make_inputs = make_inputs
    return tiny


def model(name: str, parallel: bool, layers: int = 2):
    tiny = build(name, num_layers=layers, seed=0)
    if name == "flux":
        tiny = flux_inputs(tiny)
    tiny.model.set_attention_backend("native")
    if parallel:
        from diffusers import ContextParallelConfig

        tiny.model.enable_parallelism(
            config=ContextParallelConfig(ulysses_degree=dist.get_world_size()))
    return tiny


def timesteps(steps: int) -> list[float]:
    """A shifted flow-matching schedule (shift 3), as Wan's scheduler gives it."""
    sigmas = torch.linspace(1.0, 1.0 / steps, steps)
    return (1000 * 3 * sigmas / (1 + 2 * sigmas)).tolist()


def sample(compiled, tiny, steps: int):
    """Euler over ``timesteps(steps)``; the final latent."""
    ts = timesteps(steps) + [0.0]
    inputs = tiny.make_inputs(ts[0] * tiny.timestep_scale, 1)
    x = inputs["hidden_states"].clone()
    with torch.no_grad():
        for t, after in zip(ts[:-1], ts[1:]):
            inputs = tiny.make_inputs(t * tiny.timestep_scale, 1)
            inputs["hidden_states"] = x
            v = first_output(compiled(**inputs))
            x = x + (after - t) / 1000 * v
    return x


def warm_up(tiny) -> None:
    with torch.no_grad():
        tiny.model(**tiny.make_inputs(500.0 * tiny.timestep_scale, 1))


def decisions(stats: dict) -> list:
    """Per step: computed, the reuse form, the blocks computed."""
    return [(row["computed"], row["reuse"], row["blocks"]) for row in stats["trace"]]


class CountCollectives:
    """Counts the engine's decision collectives (``all_gather_into_tensor`` calls) per call."""

    def __init__(self):
        self.per_call: list[int] = []
        self._count = 0
        self._original = dist.all_gather_into_tensor

    def __enter__(self):
        def counting(*args, **kwargs):
            self._count += 1
            return self._original(*args, **kwargs)

        dist.all_gather_into_tensor = counting
        return self

    def __exit__(self, *exc):
        dist.all_gather_into_tensor = self._original

    def wrap(self, compiled):
        def call(**kwargs):
            before = self._count
            out = compiled(**kwargs)
            self.per_call.append(self._count - before)
            return out

        return call


def run(name: str, options: dict | None, steps: int, parallel: bool, warm: bool = True):
    """Sample ``steps`` steps of ``name`` compiled with ``options`` (None: eagerly); with its
    stats when the backend registered a graph (a cold compile may not)."""
    import time

    start = time.perf_counter()
    torch._dynamo.reset()
    tiny = model(name, parallel)
    if parallel and warm:
        warm_up(tiny)
    compiled = tiny.model
    if options is not None:
        compiled = torch.compile(tiny.model, backend="precisecache", options=options)
    with CountCollectives() as counted:
        out = sample(counted.wrap(compiled), tiny, steps)
    result = {"out": out, "collectives": counted.per_call}
    if options is not None and warm:
        stats = pc_compile.stats(compiled, detail=True)
        (stream,) = stats["per_stream"].values()
        result.update(stats={k: v for k, v in stats.items() if k != "per_stream"},
                      decisions=decisions(stream))
    result["seconds"] = time.perf_counter() - start
    return result


def configs(rank: int, world: int, name: str, parallel: dict, single: tuple, steps: int,
            cold: bool = False) -> dict:
    """Each of ``parallel`` (key -> options; None: eager) under context parallelism; then, on
    rank 0 only, the keys in ``single`` single-process. ``cold``: one more run of preset off
    compiled without the eager call first, its warnings."""
    import warnings

    import tests.distributed.skewed_rule  # noqa: F401 - registers the step rule "skewed"
    from pc_compile.errors import UnsupportedGraphWarning

    result = {"parallel": {}, "single": {}}
    for key, options in parallel.items():
        result["parallel"][key] = run(name, options, steps, parallel=True)
    if cold:
        import time

        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(name, {"preset": "off", **EAGER}, 1, parallel=True, warm=False)
        result["cold_warnings"] = [str(w.message) for w in caught
                                   if issubclass(w.category, UnsupportedGraphWarning)]
        result["cold_seconds"] = time.perf_counter() - start
    dist.barrier()
    if rank == 0:
        for key in single:
            result["single"][key] = run(name, parallel[key], steps, parallel=False)
    return result


def hang(rank: int, world: int):
    """Rank 0 waits in a collective that rank 1 never joins (the harness must fail it)."""
    if rank == 0:
        dist.all_reduce(torch.ones(1))
    else:
        import time

        time.sleep(120)


def suite(rank: int, world: int, jobs: dict, steps: int) -> dict:
    """``configs`` for each model of ``jobs`` (name -> its keyword arguments), in one run of
    the processes (starting them costs more than a model's run)."""
    return {name: configs(rank, world, name=name, steps=steps, **job)
            for name, job in jobs.items()}
