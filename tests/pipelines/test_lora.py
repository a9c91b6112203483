"""LoRA adapters (peft) on a compiled transformer, loaded the way users load them.

``pipe.load_lora_weights(state_dict)`` wraps the targeted ``nn.Linear`` layers of every block in
peft's ``lora.Linear`` (the base layer plus ``lora_A``/``lora_B``); the partition must still
find the blocks, and caching must work on them. Dynamo guards the adapters' Python state
(scales, the merged flag, which adapters are active), so ``set_adapters``, ``fuse_lora``,
``unfuse_lora`` and ``unload_lora_weights`` after compiling recompile the model, as with plain
torch.compile, and each new graph must compute the weights as they are now.

The pipeline-level LoRA methods look for the adapters on ``pipe.transformer`` itself:
``pipe.set_adapters`` raises on a ``torch.compile`` wrapper in diffusers 0.42.1 whatever the
backend, so these tests compile in place (``pipe.transformer.compile(...)``).
"""

from __future__ import annotations

import pytest
import torch

import pc_compile
from tests.pipelines import factory
from tests.pipelines.test_pipelines import EAGER, OFF_TOLERANCE, fresh, relative_error

TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")


def lora_state_dict(transformer, seed: int, rank: int = 4) -> dict:
    """A LoRA for Wan's self-attention in diffusers' format, with random A and B."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if name.endswith(TARGETS):
            state[f"transformer.{name}.lora_A.weight"] = 0.3 * torch.randn(
                rank, module.in_features, generator=generator)
            state[f"transformer.{name}.lora_B.weight"] = 0.3 * torch.randn(
                module.out_features, rank, generator=generator)
    return state


def with_lora(tiny, seed: int = 1, name: str = "style"):
    tiny.pipe.load_lora_weights(lora_state_dict(tiny.pipe.transformer, seed), adapter_name=name)
    return tiny


@pytest.mark.parametrize("preset,steps,tolerance", [("off", 3, OFF_TOLERANCE),
                                                    ("turbo", 12, 0.07)])
def test_a_lora_loaded_before_compiling_is_partitioned_and_cached(preset, steps, tolerance):
    reference = with_lora(factory.build("wan")).run("A", 1, steps)
    plain = factory.build("wan").run("A", 1, steps)
    assert relative_error(reference, plain) > 0.1  # the LoRA changes the output
    tiny = with_lora(fresh("wan"))
    transformer = tiny.pipe.transformer
    assert "lora" in type(transformer.blocks[0].attn1.to_q).__module__
    transformer.compile(backend="precisecache", options={"preset": preset, **EAGER})
    out = tiny.run("A", 1, steps)
    stats = pc_compile.stats(transformer)
    assert stats["fallbacks"] == []
    assert all(s["blocks"] == len(transformer.blocks) for s in stats["per_stream"].values())
    assert relative_error(out, reference) <= tolerance
    if preset == "turbo":
        assert stats["skipped_steps"] > 0 and stats["compute_fraction"] < 1.0


def test_lora_changes_after_compiling_recompile_and_follow_the_weights():
    """Load after compiling, a second adapter with weights, fuse, unfuse and unload: each
    generation equals the uncompiled pipeline put through the same changes."""
    steps = 3
    reference, tiny = factory.build("wan"), fresh("wan")
    tiny.pipe.transformer.compile(backend="precisecache", options={"preset": "off", **EAGER})
    changes = [
        ("no LoRA", lambda t: None),
        ("load after compiling", lambda t: with_lora(t, 1, "a")),
        ("two adapters", lambda t: (with_lora(t, 2, "b"),
                                    t.pipe.set_adapters(["a", "b"], adapter_weights=[1.0, 0.5]))),
        ("fuse", lambda t: t.pipe.fuse_lora(lora_scale=0.7)),
        ("unfuse, unload", lambda t: (t.pipe.unfuse_lora(), t.pipe.unload_lora_weights())),
    ]
    previous = None
    for what, change in changes:
        change(reference)
        change(tiny)
        expected = reference.run("A", 1, steps)
        assert relative_error(tiny.run("A", 1, steps), expected) <= OFF_TOLERANCE, what
        if previous is not None:
            assert relative_error(expected, previous) > 1e-2, what  # the change matters
        previous = expected
    stats = pc_compile.stats(tiny.pipe.transformer)
    assert stats["fallbacks"] == [] and stats["steps"] == len(changes) * 2 * steps
