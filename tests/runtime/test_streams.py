"""Streams, generations, reset and isolation between compiled models (pieces run eagerly)."""

import json

import pytest
import torch

import pc_compile
from pc_compile.capture import find_roles
from pc_compile.passes import run_passes
from pc_compile.runtime.cached_graph import CachedGraph
from pc_compile.runtime.engine import Engine
from pc_compile.runtime.executor import Executor, PieceCompiler
from pc_compile.runtime.guards import Guards
from pc_compile.runtime.rules import Verdict
from pc_compile.runtime.state import named_stream
from tests.tiny_models import build, capture_graph, first_output

EAGER = {"preset": "off", "piece_compiler": "eager"}


def run_generation(compiled, tiny, timesteps=(900.0, 600.0, 300.0), conditions=(1, 2)):
    outputs = []
    with torch.no_grad():
        for t in timesteps:
            for c in conditions:
                outputs.append(first_output(compiled(**tiny.make_inputs(t, c))))
    return outputs


def test_guidance_streams_are_separate_and_generations_are_detected():
    torch._dynamo.reset()
    tiny = build("wan")
    # A caching preset: preset off counts steps without reading the timestep, so it does not
    # tell generations apart (nothing depends on them there).
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options=dict(EAGER, preset="turbo", compute_budget=None))
    run_generation(compiled, tiny)
    run_generation(compiled, tiny)  # the timestep rises: a second generation
    stats = pc_compile.stats(compiled)
    json.dumps(stats)  # JSON-serialisable
    assert stats["streams"] == 2
    assert stats["steps"] == 12 and stats["block_evals"] == 12 * 2
    for stream in stats["per_stream"].values():
        assert stream["steps"] == 6 and stream["generations"] == 2
        assert stream["full_steps"] == 6  # three steps a generation, all in the warm-up (five)
    for key in ("steps", "full_steps", "skipped_steps", "probe_evals", "block_evals",
                "block_bypasses", "streams", "compute_fraction"):
        assert key in stats


def test_reset_starts_afresh_and_models_do_not_share_state():
    torch._dynamo.reset()
    first, second = build("wan"), build("wan", seed=1)
    a = torch.compile(first.model, backend="precisecache", options=EAGER)
    b = torch.compile(second.model, backend="precisecache", options=EAGER)
    run_generation(a, first)
    run_generation(b, second, conditions=(1,))
    assert pc_compile.stats(a)["steps"] == 6
    assert pc_compile.stats(b)["steps"] == 3
    pc_compile.reset(a)
    assert pc_compile.stats(a)["steps"] == 0
    assert pc_compile.stats(b)["steps"] == 3


def test_named_streams():
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache", options=EAGER)
    with torch.no_grad():
        for t in (900.0, 500.0):
            compiled(**tiny.make_inputs(t, 1))
            with named_stream("cond"):  # the same tensor, but named: a stream of its own
                compiled(**tiny.make_inputs(t, 1))
    stats = pc_compile.stats(compiled)
    assert sorted(stats["per_stream"]) == ["cond", "stream0"]
    assert stats["per_stream"]["cond"]["steps"] == 2


def test_eviction_drops_caches_but_keeps_counters():
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(
        tiny.model, backend="precisecache", options={**EAGER, "max_streams": 1}
    )
    run_generation(compiled, tiny)  # two streams alternate; only one is kept at a time
    stats = pc_compile.stats(compiled)
    assert stats["steps"] == 6
    assert len(stats["per_stream"]) == 6
    assert all(s["steps"] == 1 for s in stats["per_stream"].values())


def test_a_new_shape_gets_a_fresh_state():
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache", options=EAGER, dynamic=False)
    run_generation(compiled, tiny, conditions=(1,))
    bigger = dict(tiny.make_inputs(300.0, 1), hidden_states=torch.randn(1, 4, 3, 8, 12))
    with torch.no_grad():
        compiled(**bigger)
    stats = pc_compile.stats(compiled)
    assert len(stats["per_stream"]) == 2
    new = [s for k, s in stats["per_stream"].items() if k.startswith("graph1/")]
    assert new and new[0]["steps"] == 1 and new[0]["generations"] == 1


def test_stats_of_an_uncompiled_model_is_a_clear_error():
    with pytest.raises(ValueError, match="no graph compiled by the precisecache backend"):
        pc_compile.stats(torch.nn.Linear(2, 2))


class ReuseEveryOtherStep:
    """A step rule: computes even steps, reuses the stream's last output on odd ones."""

    needs_probe = False

    def new_state(self):
        return None

    def measure(self, ctx, state):
        return []

    def conclude(self, ctx, state, numbers):
        return Verdict(reuse=ctx.step % 2 == 1)

    def after_full_step(self, ctx, state, output):
        pass


def test_a_reused_step_returns_its_own_streams_cache():
    tiny = build("wan")
    captured = capture_graph(tiny.model, tiny.make_inputs(900.0, 1))
    split, spec = run_passes(captured.gm, None)
    pieces = [getattr(split, p.name) for p in spec.pieces]
    names, example_inputs = captured.names, captured.example_inputs
    roles = find_roles(names, captured.weights)
    engine = Engine(ReuseEveryOtherStep(), step_reuse="output", guards=Guards(),
                    num_blocks=len(spec.blocks))
    graph = CachedGraph(spec, Executor(spec, pieces, PieceCompiler("eager")), roles, engine,
                        max_streams=4)

    def call(t, c):
        kwargs = tiny.make_inputs(t, c)
        args = list(example_inputs)
        for i in roles.user_inputs:
            args[i] = kwargs[names[i]]
        return graph(*args)[0]

    with torch.no_grad():
        cond_0, uncond_0 = call(900.0, 1), call(900.0, 2)
        cond_1, uncond_1 = call(600.0, 1), call(600.0, 2)
        cond_2 = call(300.0, 1)
    assert not torch.equal(cond_0, uncond_0)
    assert torch.equal(cond_1, cond_0) and torch.equal(uncond_1, uncond_0)
    assert not torch.equal(cond_2, cond_0)
    counters = {s.name: s.counters for s in next(iter(graph.tables.values())).all_streams()}
    assert counters["stream0"].skipped_steps == 1 and counters["stream0"].full_steps == 2


def test_a_repeated_timestep_is_another_evaluation_of_the_same_step():
    from pc_compile.runtime.state import StreamTable

    table = StreamTable(max_streams=2)
    state = table.lookup(("single",), ())
    seen = []
    for t in (900.0, 600.0, 600.0, 300.0, 300.0, 900.0, 900.0, 500.0):
        table.enter_step(state, t)
        seen.append((state.counters.generations, state.step_in_generation,
                     state.evaluation_in_step))
    assert seen == [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 2, 0), (1, 2, 1),
                    (2, 0, 0), (2, 0, 1), (2, 1, 0)]
    assert state.step_size() == 400.0  # from the step before, not from the repeated call


def heun_timesteps(steps=10):
    """FlowMatchHeun's order of evaluations: the first timestep once, every other twice."""
    ts = [1000.0 * (1 - i / steps) for i in range(steps)]
    return [ts[0]] + [t for t in ts[1:] for _ in range(2)]


@pytest.mark.parametrize("preset", ["flash", "sencache", "bwcache"])
def test_second_order_schedules_keep_one_generation_and_compute_second_evaluations(preset):
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": preset, "piece_compiler": "eager"})
    timesteps = heun_timesteps()
    direction = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for t in timesteps:  # the latent moves along a straight line as t falls
            inputs = tiny.make_inputs(t, 1)
            moved = inputs["hidden_states"] + 0.1 * (t / 1000.0) * direction
            compiled(**dict(inputs, hidden_states=moved))
    stats = pc_compile.stats(compiled, detail=True)
    (stream,) = stats["per_stream"].values()
    assert stream["generations"] == 1 and stream["steps"] == len(timesteps)
    trace = stream["trace"]
    assert [e.get("evaluation", 0) for e in trace] == [0] + [0, 1] * 9
    assert all(e["computed"] and all(e["blocks"]) for e in trace if e.get("evaluation"))
    assert stats["compute_fraction"] <= 1.0
    if preset != "sencache":  # SenCache predicts too large a change on this tiny model
        assert stats["compute_fraction"] < 1.0  # the first evaluations still reuse
