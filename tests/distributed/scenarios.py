"""What each rank runs in the context-parallel tests (``harness.run_ranks`` calls these).

A scenario builds a tiny denoiser, enables diffusers' context parallelism on it (Ulysses over
the gloo group), compiles it and samples a few Euler steps; it returns plain data and tensors.
The same weights run single-process afterwards as the reference (after the last collective, so
neither rank waits on the other; the reference runs are shared out over the ranks).

diffusers' context-parallel split hooks learn a block's forward signature on their first call
(``inspect.signature``), which Dynamo cannot trace on Wan's blocks: on a cold compile the first
call runs the forward eagerly and the backend has Dynamo translate it again at the second call.
The runs in ``cold`` do that; the others call the model once eagerly first (``warm_up``), so
that every step is compiled and the decisions compare with the single-process run's.
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
    stats when the backend registered a graph, and the messages of the backend's warnings."""
    import time
    import warnings

    from pc_compile.errors import UnsupportedGraphWarning

    start = time.perf_counter()
    torch._dynamo.reset()
    tiny = model(name, parallel)
    if parallel and warm:
        warm_up(tiny)
    compiled = tiny.model
    if options is not None:
        compiled = torch.compile(tiny.model, backend="precisecache", options=options)
    with CountCollectives() as counted, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sample(counted.wrap(compiled), tiny, steps)
    result = {"out": out, "collectives": counted.per_call,
              "warnings": [str(w.message) for w in caught
                           if issubclass(w.category, UnsupportedGraphWarning)]}
    if options is not None:
        try:
            stats = pc_compile.stats(compiled, detail=True)
        except ValueError:  # no graph of the model itself: its blocks were never found
            stats = None
        if stats is not None:
            (stream,) = stats["per_stream"].values()
            result.update(stats={k: v for k, v in stats.items() if k != "per_stream"},
                          decisions=decisions(stream))
    result["seconds"] = time.perf_counter() - start
    return result


def without_retrace(name: str, options: dict) -> str:
    """A cold compile where Dynamo's per-code state cannot be cleared (a torch that moved it),
    under ``on_unsupported="error"``: the blocks stay lost, and the reason says how to get
    them. The message of what the first call raised (no Inductor compile on the way)."""
    from pc_compile.capture import dynamo

    saved = dynamo.CODE_STATE
    dynamo.CODE_STATE = (saved[0], "no_such_function", saved[2])
    try:
        run(name, {**options, "on_unsupported": "error"}, 1, parallel=True, warm=False)
    except Exception as error:  # noqa: BLE001 - Dynamo wraps the backend's error
        return str(error)
    finally:
        dynamo.CODE_STATE = saved
    return ""


def configs(rank: int, world: int, name: str, parallel: dict, single: tuple, steps: int,
            cold: tuple = (), hint: str | None = None) -> dict:
    """Each of ``parallel`` (key -> options; None: eager) under context parallelism, the keys
    in ``cold`` compiled without the eager call first; ``hint``: the error of one more cold
    run of that key where the retrace is unavailable. Then ``single`` single-process, shared out
    over the ranks (rank r runs every world-th key from the r-th): merge the ranks' "single"."""
    import tests.distributed.skewed_rule  # noqa: F401 - registers the step rule "skewed"

    result = {"parallel": {}, "single": {}}
    for key, options in parallel.items():
        result["parallel"][key] = run(name, options, steps, parallel=True, warm=key not in cold)
    if hint is not None:
        result["hint"] = without_retrace(name, parallel[hint])
    dist.barrier()
    for key in single[rank::world]:
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
