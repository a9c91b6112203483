"""Real diffusers pipelines (tiny, offline, random weights) through the sequences users run.

Every pipeline runs with guidance on. The pieces of the partitioned graph run eagerly
(``piece_compiler="eager"``) except in the Inductor tests: what is checked here is what
happens across calls (shapes, batch sizes, step counts, schedulers, interruptions), which
Dynamo and the runtime decide, not Inductor's kernels.

Tolerances, relative to the largest magnitude of the uncached output (max |a - b| / max |b|):
``off`` 1e-5 (the same computation, pieces regrouped); caching presets per scheduler in
``CACHED_TOLERANCE``, measured on these models at 12 steps with margin (docs/pipelines.md).
"""

from __future__ import annotations

import pytest
import torch

import pc_compile
from tests.pipelines import factory

PIPELINES = ["wan", "wan2.2", "cogvideox", "ltx", "flux", "qwenimage", "hunyuanvideo"]
EAGER = {"piece_compiler": "eager"}
OFF_TOLERANCE = 1e-5


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out - reference).abs().max() / reference.abs().max())


def fresh(name: str, scheduler: str | None = None):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    return factory.build(name, scheduler)


def unique_graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


# What users do on their second day: other resolutions, batch sizes, step counts, an
# interrupted generation. (size, batch, steps, interrupt after n steps or None)
SEQUENCE = [("A", 1, 3, None), ("B", 1, 3, None), ("A", 1, 3, None), ("C", 1, 3, None),
            ("A", 2, 3, None), ("A", 1, 3, None), ("A", 1, 7, 2), ("A", 1, 7, None)]


def play(tiny, calls):
    outputs = []
    for size, batch, steps, interrupt in calls:
        extra = {"callback_on_step_end": factory.interrupt_after(interrupt)} if interrupt else {}
        outputs.append(tiny.run(size, batch, steps, **extra))
    return outputs


@pytest.mark.parametrize("name", PIPELINES)
def test_preset_off_matches_the_uncompiled_pipeline_through_the_sequence(name):
    calls = SEQUENCE[:4]
    reference = play(factory.build(name), calls)
    tiny = fresh(name)
    compiled = factory.compile_transformers(tiny, options={"preset": "off", **EAGER})
    outputs = play(tiny, calls)
    for call, out, ref in zip(calls, outputs, reference):
        assert out.shape == ref.shape, call
        assert relative_error(out, ref) <= OFF_TOLERANCE, call
    stats = pc_compile.stats(compiled["transformer"])  # (Wan 2.2's second expert: no step)
    assert stats["compute_fraction"] == 1.0 and stats["skipped_steps"] == 0


@pytest.mark.parametrize("name", PIPELINES)
def test_turbo_runs_the_sequence_that_plain_compile_runs(name):
    """Resolutions A, B, A, C; batch 1, 2, 1; an interrupted generation then a full one."""
    tiny = fresh(name)  # plain torch.compile runs it (docs/pipelines.md)
    factory.compile_transformers(tiny, options={"preset": "turbo", **EAGER})
    reference = play(factory.build(name), SEQUENCE)
    outputs = play(tiny, SEQUENCE)
    for call, out, ref in zip(SEQUENCE, outputs, reference):
        # Turbo's budget reuses the middle step of three and three or four of seven: at most
        # 0.066 measured (wan, seven steps), the first and the last step always computed.
        assert relative_error(out, ref) <= 0.12, call
    # The same call gives the same output wherever it comes in the sequence: nothing of the
    # other resolutions and batch sizes leaks into it (on Flux and QwenImage the generation
    # after a change of resolution once reused its last step: 0.09 and 0.14 from 0.02).
    first = SEQUENCE.index(("A", 1, 3, None))
    for i, call in enumerate(SEQUENCE):
        if call == SEQUENCE[first]:
            assert relative_error(outputs[i], outputs[first]) <= OFF_TOLERANCE, i


# Relative error allowed for a cached generation of 12 steps, per (pipeline, scheduler, preset):
# about twice what was measured (docs/pipelines.md). Turbo spends 0.465 of the work and flash
# 0.38 (budgets), reusing five or six steps of twelve; bwcache bypasses blocks.
CACHED_TOLERANCE = {
    ("wan", "unipc", "turbo"): 0.07,  # measured 3.5e-2
    ("wan", "euler", "turbo"): 0.055,  # 2.7e-2
    ("wan", "heun", "turbo"): 0.02,  # 9.6e-3 (Heun evaluates each step twice)
    ("wan", "dpm", "turbo"): 0.075,  # 3.7e-2
    ("wan", "unipc", "flash"): 0.18,  # 9.0e-2
    ("wan", "unipc", "bwcache"): 0.02,  # 6.3e-3
    ("cogvideox", "ddim", "turbo"): 0.066,  # 3.3e-2
    ("cogvideox", "cogdpm", "turbo"): 0.4,  # 0.247: the multistep DPM carries each reuse on
    ("flux", "euler", "turbo"): 0.03,  # 1.5e-2
}


@pytest.mark.parametrize("name,scheduler,preset", list(CACHED_TOLERANCE))
def test_caching_presets_stay_close_to_the_uncached_output(name, scheduler, preset):
    steps = 12
    reference = factory.build(name, scheduler).run("A", 1, steps)
    tiny = fresh(name, scheduler)
    compiled = factory.compile_transformers(tiny, options={"preset": preset, **EAGER})
    out = tiny.run("A", 1, steps)
    stats = pc_compile.stats(compiled["transformer"])
    assert relative_error(out, reference) <= CACHED_TOLERANCE[name, scheduler, preset]
    assert stats["compute_fraction"] <= 1.0
    assert all(s["generations"] == 1 for s in stats["per_stream"].values())


# Known open bug (issue 16, "short schedules cost more than no caching"): at 10 CogVideoX DDIM
# steps turbo's probe runs on steps whose decision is forced (warm-up, end of schedule, run cap)
# and the generation spends 1.067 of the uncached work. strict: this fails once it is fixed.
@pytest.mark.parametrize("name", ["wan", "cogvideox"])
def test_step_counts_30_10_50_never_cost_more_than_no_caching(name):
    """Forced steps are probed only for the free steps after them, and only while the reuses
    still allowed are worth the probes (``runtime/lookahead.py``): a 10-step schedule with
    turbo's five warm-up steps and four end steps costs no more than computing every step."""
    tiny = fresh(name)
    compiled = factory.compile_transformers(tiny, options={"preset": "turbo", **EAGER})
    fractions = []
    for steps in (30, 10, 50):
        tiny.run("A", 1, steps)
        stats = pc_compile.stats(compiled["transformer"])
        assert all(s["generations"] == 1 for s in stats["per_stream"].values())
        fractions.append(stats["compute_fraction"])
        pc_compile.reset(compiled["transformer"])
    print(f"{name} turbo compute_fraction at 30, 10, 50 steps: {fractions}")
    assert fractions[0] < 1.0 and fractions[2] < 1.0, fractions
    assert max(fractions) <= 1.0, fractions


@pytest.mark.parametrize("dynamic", [None, True, False])
def test_dynamic_settings_run_what_plain_compile_runs(dynamic):
    calls = [("A", 1, 3, None), ("B", 1, 3, None), ("A", 1, 3, None)]
    reference = play(factory.build("wan"), calls)
    tiny = fresh("wan")
    factory.compile_transformers(tiny, options={"preset": "turbo", **EAGER}, dynamic=dynamic)
    outputs = play(tiny, calls)
    for call, out, ref in zip(calls, outputs, reference):
        assert relative_error(out, ref) <= 0.12, (dynamic, call)  # turbo reuses one of three
    # A again gives what A gave, whichever graph Dynamo serves it from.
    assert relative_error(outputs[2], outputs[0]) <= OFF_TOLERANCE, dynamic


@pytest.mark.parametrize("name,dynamic", [("wan", None), ("flux", None), ("wan", True)])
def test_resolutions_a_b_a_with_inductor_match_plain_compile(name, dynamic):
    """Dynamo serves B (and A again) from a dynamic graph; each piece must compile again
    without reusing a GraphModule Inductor rewrote in place. Under dynamic=True the pieces
    are specialised per concrete layout (those Inductor cannot specialise run uncompiled)."""
    calls = [("A", 1, 2, None), ("B", 1, 2, None), ("A", 1, 2, None)]
    tiny = fresh(name)
    factory.compile_transformers(tiny, backend="inductor", dynamic=dynamic)
    reference = play(tiny, calls)
    tiny = fresh(name)
    factory.compile_transformers(tiny, options={"preset": "off"}, dynamic=dynamic)
    for call, out, ref in zip(calls, play(tiny, calls), reference):
        assert relative_error(out, ref) <= 1e-4, call


def test_six_resolutions_in_a_row_take_no_recompile_slot_of_the_model():
    """dynamic=False: plain torch.compile compiles the forward once per resolution; ours must
    compile the forward exactly as often (the probe has code objects of its own) and serve
    every call from the cached graph, never hitting Dynamo's recompile limit."""
    from tests.pipelines.matrix import resolutions_in_a_row

    result = resolutions_in_a_row(6, "flash", "wan", dynamic=False, steps=6)
    plain, ours = result["eager"], result["precisecache"]
    assert plain["per_resolution"] == [1] * 6 and plain["limit_hit"] is None
    assert ours["limit_hit"] is None
    assert ours["cached_calls"] == ours["expected_calls"] == 6 * 2 * 6
    assert ours["probe_evals"] >= 6  # the probe ran at every resolution
    # One graph of the forward and one of the probe per resolution.
    assert ours["per_resolution"] == [2] * 6


def test_streams_are_named_by_the_pipelines_cache_context_without_a_recompile():
    tiny = fresh("flux")
    factory.compile_transformers(tiny, backend="eager")
    tiny.run("A", 1, 3)
    plain = unique_graphs()
    tiny = fresh("flux")
    compiled = factory.compile_transformers(tiny, options={"preset": "off", **EAGER})
    tiny.run("A", 1, 3)
    tiny.run("A", 1, 3)
    stats = pc_compile.stats(compiled["transformer"])
    assert sorted(stats["per_stream"]) == ["cond", "uncond"]
    assert all(s["steps"] == 6 and s["generations"] == 2 for s in stats["per_stream"].values())
    assert unique_graphs() == plain


def test_a_generation_cut_after_its_first_step_is_followed_by_a_clean_one():
    """The next generation starts at the same timestep the cut one stopped at; the pipeline's
    return (``maybe_free_model_hooks``) tells the streams the generation ended."""
    tiny = fresh("wan")
    compiled = factory.compile_transformers(tiny, options={"preset": "turbo", **EAGER})
    tiny.run("A", 1, 10, callback_on_step_end=factory.interrupt_after(1))
    tiny.run("A", 1, 10)
    streams = pc_compile.stats(compiled["transformer"], detail=True)["per_stream"]
    # The very first call ran while the model compiled, before its name could be read: its
    # stream ("stream0") keeps that call; every later call is in a named stream.
    assert streams["uncond"]["generations"] == 2 and streams["uncond"]["steps"] == 11
    for name in ("cond", "uncond"):
        assert [e["step"] for e in streams[name]["trace"]] == list(range(10)), name
        assert not any(e.get("evaluation") for e in streams[name]["trace"]), name


def test_the_second_expert_served_by_the_first_experts_graph_names_its_streams_too():
    """Wan 2.2: Dynamo serves transformer_2 from the graph compiled for transformer (same
    class, parameters are graph inputs), so the backend never sees transformer_2 compile."""
    tiny = fresh("wan2.2")
    compiled = factory.compile_transformers(tiny, options={"preset": "off", **EAGER})
    tiny.run("A", 1, 6)
    tiny.run("A", 1, 6)
    assert unique_graphs() == 1
    for name in ("transformer", "transformer_2"):
        assert {"cond", "uncond"} <= set(pc_compile.stats(compiled[name])["per_stream"]), name
