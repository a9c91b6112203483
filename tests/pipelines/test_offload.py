"""``pipe.enable_model_cpu_offload()``: accelerate's hooks around the compiled transformer.

On a CPU-only machine the offload runs with ``device="cpu"``: accelerate's execution device is
then ``cpu:0``, which never equals a CPU tensor's device, so every call copies the weights (new
storage for the same Parameter objects) and every tensor argument. On a GPU the weights move at
every generation instead (to the GPU at the first call, back to the CPU when the pipeline
returns). Either way the model's state must follow the model, not its storage.

Compiling in place after enabling the offload, or compiling before it, keeps the model
compiled; assigning ``torch.compile(pipe.transformer)`` after enabling it does not (accelerate
unwraps the compiled wrapper when the pipeline re-adds its hooks), which a warning says.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

import pc_compile
from pc_compile.errors import OffloadWarning, UnsupportedGraphWarning
from tests.pipelines import factory
from tests.pipelines.test_pipelines import OFF_TOLERANCE, fresh, relative_error

STEPS = 12
OPTIONS = {"piece_compiler": "eager"}
# Turbo's reuses at 12 UniPC steps against the uncached pipeline (measured 3.5e-2 without the
# offload; test_pipelines allows 0.07 at this setting).
TURBO_TOLERANCE = 0.07


def offload_and_compile(tiny, order: str, preset: str):
    pipe = tiny.pipe
    options = {"preset": preset, **OPTIONS}
    if order == "offload, compile in place":
        pipe.enable_model_cpu_offload(device="cpu")
        pipe.transformer.compile(backend="precisecache", options=options)
    else:  # "compile, offload"
        pipe.transformer = torch.compile(pipe.transformer, backend="precisecache",
                                         options=options)
        pipe.enable_model_cpu_offload(device="cpu")
    assert getattr(pipe.transformer, "_hf_hook", None) is not None


@contextlib.contextmanager
def strict():
    """Any fallback or offload warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedGraphWarning)
        warnings.simplefilter("error", OffloadWarning)
        yield


def assert_cached_in_both_generations(stats, reused: int = 8):
    assert stats["fallbacks"] == []
    # Every call of both generations reached the cached graph, in the named streams (the
    # first call runs while compiling, before the names can be heard).
    assert stats["steps"] == 2 * 2 * STEPS
    assert {"cond", "uncond"} <= set(stats["per_stream"])
    assert stats["per_stream"]["uncond"]["generations"] == 2
    assert stats["skipped_steps"] >= reused and stats["compute_fraction"] < 1.0


@pytest.mark.parametrize("order", ["offload, compile in place", "compile, offload"])
def test_enable_model_cpu_offload_keeps_the_transformer_cached(order):
    reference = factory.build("wan").run("A", 1, STEPS)
    tiny = fresh("wan")
    offload_and_compile(tiny, order, "turbo")
    with strict():
        tiny.run("A", 1, STEPS)
        second = tiny.run("A", 1, STEPS)
    # With a CPU execution device accelerate copies the latent at every call; the branches,
    # named by the pipeline, still take one decision per step (grouped by the latent's shape
    # and the timestep, not its address: before, 0.135 from the uncached output where the
    # allocator put uncond's copy elsewhere, and the reused steps varied from run to run).
    stats = pc_compile.stats(tiny.pipe.transformer, detail=True)
    assert_cached_in_both_generations(stats)
    assert all(e.get("followed") for e in stats["per_stream"]["uncond"]["trace"][1:])
    assert relative_error(second, reference) <= TURBO_TOLERANCE


def test_an_offload_hook_that_moves_the_weights_between_generations_changes_nothing():
    """As on a GPU: the hook leaves arguments already on the execution device alone, and the
    weights get new storage between generations (offloaded, then loaded again)."""
    from accelerate import cpu_offload_with_hook

    reference = factory.build("wan").run("A", 1, STEPS)
    tiny = fresh("wan")
    transformer = tiny.pipe.transformer
    cpu_offload_with_hook(transformer, torch.device("cpu"))
    transformer.compile(backend="precisecache", options={"preset": "turbo", **OPTIONS})
    storage = transformer.patch_embedding.weight.data_ptr()
    with strict():
        first = tiny.run("A", 1, STEPS)
        transformer.to(torch.float64).to(torch.float32)  # new storage, same Parameters
        assert transformer.patch_embedding.weight.data_ptr() != storage
        second = tiny.run("A", 1, STEPS)
    stats = pc_compile.stats(transformer, detail=True)
    assert_cached_in_both_generations(stats)
    # The guidance branches took one decision per step: uncond followed cond.
    assert any(e.get("followed") for e in stats["per_stream"]["uncond"]["trace"])
    assert relative_error(first, reference) <= TURBO_TOLERANCE
    assert relative_error(second, reference) <= TURBO_TOLERANCE


@pytest.mark.parametrize("preset,tolerance", [("off", OFF_TOLERANCE),
                                              ("sencache", TURBO_TOLERANCE)])
def test_enable_model_cpu_offload_runs_each_preset_without_a_fallback(preset, tolerance):
    reference = factory.build("wan").run("A", 1, 6)
    tiny = fresh("wan")
    offload_and_compile(tiny, "offload, compile in place", preset)
    with strict():
        out = tiny.run("A", 1, 6)
    stats = pc_compile.stats(tiny.pipe.transformer)
    assert stats["fallbacks"] == [] and stats["steps"] == 2 * 6
    assert relative_error(out, reference) <= tolerance


def test_compiling_a_wrapper_after_the_offload_is_warned():
    tiny = fresh("wan")
    tiny.pipe.enable_model_cpu_offload(device="cpu")
    tiny.pipe.transformer = torch.compile(tiny.pipe.transformer, backend="precisecache",
                                          options={"preset": "turbo", **OPTIONS})
    with pytest.warns(OffloadWarning, match=r"pipe\.transformer\.compile\(backend="):
        tiny.run("A", 1, 2)
    assert pc_compile.stats(tiny.pipe.transformer)["steps"] == 2 * 2
