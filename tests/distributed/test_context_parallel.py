"""The backend under diffusers' context parallelism (Ulysses), on two CPU processes over gloo.

One run of two processes (``harness.run_ranks``, killed and failed past its timeout: a rank
left waiting in a collective fails the test instead of hanging CI) compiles each model under
each configuration, samples a few Euler steps, and hands back per rank the output, ``stats``,
each step's decision and the engine's collectives per call; rank 0 then runs the same weights
single-process as the reference. Pieces run eagerly (``piece_compiler="eager"``): what is
tested is the partition, the decisions and the collectives, not Inductor.

Wan's plan splits the sequence at block 0 (its hook), Flux's at the model's root. Wan's preset
"off" is compiled cold (no eager call first: the first call runs eagerly, the next ones whole);
the other runs call the model once eagerly first, so that every step is compiled.
"""

from __future__ import annotations

import pytest

from tests.distributed import scenarios
from tests.distributed.harness import run_ranks

EAGER = scenarios.EAGER
STEPS = 10
WAN = {
    "off": {"preset": "off", **EAGER},
    "turbo": {"preset": "turbo", **EAGER},  # LFCache: the probe, replicated measurements
    "sencache": {"preset": "sencache", "sen_epsilon": 0.5, **EAGER},
    "trajectory": {"preset": "off", "step_rule": "trajectory", "traj_epsilon": 0.5,
                   "end_span": 1.0, **EAGER},
    "bwcache": {"preset": "bwcache", "bw_threshold": 0.5, **EAGER},  # sharded measurements
    "blockcache": {"preset": "off", "block_rule": "blockcache", "warmup_steps": 2, **EAGER},
    "skewed": {"preset": "off", "step_rule": "skewed", **EAGER},
    "skewed_sharded": {"preset": "off", "step_rule": "skewed", "skew_sharded": True, **EAGER},
}
STEP_RULES = ("turbo", "sencache", "trajectory")  # replicated measurements
BLOCK_RULES = ("bwcache", "blockcache")  # sharded measurements
CACHING = STEP_RULES + BLOCK_RULES
# Flux: the sharded block metric with every block bypassable (LFCache's probe is Wan's test).
FLUX = {"off": {"preset": "off", **EAGER},
        "bwcache": {"preset": "bwcache", "bw_threshold": 0.5, **EAGER}}


@pytest.fixture(scope="module")
def runs():
    jobs = {"wan": {"parallel": WAN, "single": ("off", *CACHING), "cold": ("off",),
                    "hint": "off"},
            "flux": {"parallel": FLUX, "single": tuple(FLUX)}}
    ranks = run_ranks(scenarios.suite, world=2, timeout=150, jobs=jobs, steps=STEPS)
    for name in jobs:  # the single-process references were shared out over the ranks
        merged = {k: v for rank in ranks for k, v in rank[name]["single"].items()}
        for rank in ranks:
            rank[name]["single"] = merged
    return ranks


@pytest.fixture(scope="module")
def wan(runs):
    return [rank["wan"] for rank in runs]


@pytest.fixture(scope="module")
def flux(runs):
    return [rank["flux"] for rank in runs]


def max_difference(a, b) -> float:
    return (a - b).abs().max().item()


def test_a_cold_compile_finds_the_blocks_from_the_second_call(wan):
    # No eager call before compiling: the first call runs the forward eagerly (diffusers'
    # split hook learns block 0's signature, which Dynamo cannot trace), the backend has
    # Dynamo translate the forward again, and every later call runs the whole graph.
    reference = wan[0]["single"]["off"]["out"]
    for rank in wan:
        run = rank["parallel"]["off"]
        assert max_difference(run["out"], reference) < 1e-5
        assert run["warnings"] == []
        assert run["stats"]["fallbacks"] == []  # blocks found
        assert run["stats"]["full_steps"] == STEPS - 1  # the first call ran eagerly


@pytest.mark.parametrize("key", [*CACHING, "skewed", "skewed_sharded"])
def test_every_rank_takes_the_same_decision_at_every_step(wan, key):
    first, second = (rank["parallel"][key] for rank in wan)
    assert first["stats"]["fallbacks"] == []
    assert first["decisions"] == second["decisions"]
    assert first["stats"] == second["stats"]
    assert max_difference(first["out"], second["out"]) == 0.0


@pytest.mark.parametrize("key", CACHING)
def test_caching_takes_the_single_process_decisions_and_error(wan, key):
    parallel = wan[0]["parallel"][key]
    single = wan[0]["single"][key]
    reference = wan[0]["single"]["off"]["out"]
    stats = parallel["stats"]
    assert stats["skipped_steps"] + stats["block_bypasses"] > 0, stats
    # Same weights, same inputs; replicated measurements, or sharded ones summed over the
    # ranks: the single-process decisions, so the single-process cached run's error.
    assert parallel["decisions"] == single["decisions"]
    error, single_error = (max_difference(o, reference) for o in (parallel["out"],
                                                                   single["out"]))
    assert error <= single_error * 1.01 + 1e-5, (error, single_error)
    assert max_difference(parallel["out"], single["out"]) < 1e-4


@pytest.mark.parametrize("key", BLOCK_RULES)
def test_block_0_is_bypassed_though_the_plan_splits_the_sequence_in_its_hook(wan, key):
    # Wan's plan splits the latent tokens in blocks.0's hook; the partition puts that split
    # before the block, so block 0 takes a shard and returns one, like the others.
    decisions = wan[0]["parallel"][key]["decisions"]
    assert any(not blocks[0] for computed, _, blocks in decisions if computed)


def test_a_rule_that_sees_a_different_number_on_each_rank_decides_as_one(wan):
    replicated = [r["parallel"]["skewed"]["stats"] for r in wan]
    sharded = [r["parallel"]["skewed_sharded"]["stats"] for r in wan]
    # Replicated: every rank reads the first rank's 0 and reuses where the guards allow it.
    assert replicated[0]["skipped_steps"] > 0
    # Sharded: every rank reads 0 + 1 = 1 and computes every step.
    assert sharded[0]["skipped_steps"] == 0 and sharded[0]["full_steps"] == STEPS


def test_one_collective_per_measured_step_and_none_uncached(wan):
    for rank in wan:
        assert rank["parallel"]["off"]["collectives"] == [0] * STEPS
        for key in CACHING:
            counted = rank["parallel"][key]["collectives"]
            assert set(counted) <= {0, 1} and sum(counted) > 0, (key, counted)
    assert all(wan[0]["parallel"][k]["collectives"] == wan[1]["parallel"][k]["collectives"]
               for k in WAN)


def test_where_the_retrace_is_unavailable_the_fallback_says_how_to_get_the_blocks(wan):
    for rank in wan:
        assert "no repeated transformer blocks found" in rank["hint"]
        assert "Call the model once (eagerly) after enable_parallelism" in rank["hint"]


def test_flux_splits_at_its_root_and_caches_alike_on_both_ranks(flux):
    single = flux[0]["single"]
    for rank in flux:
        assert max_difference(rank["parallel"]["off"]["out"], single["off"]["out"]) < 1e-5
        assert rank["parallel"]["off"]["stats"]["fallbacks"] == []
    for key in ("bwcache",):
        first, second = (rank["parallel"][key] for rank in flux)
        # Every block state is a shard here: the sums over the ranks give the single-process
        # decisions.
        assert first["decisions"] == second["decisions"] == single[key]["decisions"]
        assert first["stats"]["skipped_steps"] + first["stats"]["block_bypasses"] > 0
        assert max_difference(first["out"], single[key]["out"]) < 1e-4


def test_the_harness_fails_a_run_that_hangs():
    with pytest.raises(AssertionError, match="did not finish"):
        run_ranks(scenarios.hang, world=2, timeout=5)
