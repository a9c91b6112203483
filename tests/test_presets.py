"""PreciseCache end to end on the tiny models (pieces run eagerly, so this is fast)."""

import math

import pytest
import torch

import pc_compile
from tests.tiny_models import ALL, PlainDiT, build, first_output

# Tiny latents: let the probe shrink to a token per frame so that it is cheaper than a step.
EAGER = {"piece_compiler": "eager", "probe_min_tokens": 1}


def _schedule(steps=12):
    """A shifted flow-matching schedule (shift 3), as WanPipeline's scheduler gives it."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.tolist()


TIMESTEPS = _schedule()


def generate(compiled, tiny, conditions=(1, 2), moving=False):
    """One generation over TIMESTEPS, one call per guidance condition and step. ``moving``: the
    latent moves from step to step as a sampler's does (SenCache reads how far it moved); both
    guidance branches of a step then get the same latent tensor."""
    outputs = []
    with torch.no_grad():
        for t in TIMESTEPS:
            latent = None
            for c in conditions:
                inputs = tiny.make_inputs(t, c)  # Flux's and QwenImage's divide by 1000
                if moving:
                    if latent is None:
                        latent = inputs["hidden_states"] * (0.5 + t / 2000)
                    inputs["hidden_states"] = latent
                outputs.append(first_output(compiled(**inputs)))
    return outputs


SUPPORTED = sorted(set(ALL) - {"hunyuan_video15"})


@pytest.mark.parametrize("name", SUPPORTED)
@pytest.mark.parametrize("preset", ["base", "turbo", "flash", "turbo+blockcache"])
def test_every_preset_runs_on_every_model(name, preset):
    torch._dynamo.reset()
    tiny = build(name)
    options = {"preset": "turbo", "block_rule": "blockcache", "compute_budget": None} \
        if preset == "turbo+blockcache" else {"preset": preset}
    compiled = torch.compile(tiny.model, backend="precisecache", options={**options, **EAGER})
    outputs = generate(compiled, tiny)
    assert all(torch.isfinite(o).all() for o in outputs)
    stats = pc_compile.stats(compiled, detail=True)
    assert stats["steps"] == 2 * len(TIMESTEPS) and stats["streams"] == 2
    # At most one probe per step, on every free step; forced steps are probed only for free
    # steps to come (exact where the schedule is known: tests/runtime/test_lookahead.py; here
    # the timesteps are fitted as they come). The uncond branch follows the cond branch.
    config = pc_compile.PRESETS["turbo" if preset == "turbo+blockcache" else preset]
    trace = stats["per_stream"]["stream0"]["trace"]
    if preset == "turbo+blockcache":
        free = [i >= config.warmup_steps and not (
            i > 0 and TIMESTEPS[i] < config.end_span * (TIMESTEPS[i - 1] - TIMESTEPS[i]))
            for i in range(len(TIMESTEPS))]
    else:  # under the preset's budget: the steps the controller left to the rule
        free = [e.get("budget_call") == "free" for e in trace]
    assert any(free)
    assert sum(free) <= stats["probe_evals"] <= len(TIMESTEPS)
    assert 0 < stats["compute_fraction"] < 1.2
    assert [e["step"] for e in trace] == list(range(len(TIMESTEPS)))
    assert trace[0]["computed"] and trace[-1]["computed"]  # warm-up and final step
    if preset == "turbo+blockcache" and stats["full_steps"] > 2:
        assert stats["block_bypasses"] > 0


@pytest.mark.parametrize("preset", ["base", "turbo", "flash"])
def test_base_turbo_and_flash_spend_their_budget(preset):
    # The presets are budgets, the paper's speed-ups: each generation lands within 0.02 of
    # 0.63, 0.465 and 0.38 of the uncached work, probes included, and no run of reuses is
    # more than one step longer than the longest of the evenly spaced layout (here the
    # timesteps are fitted as they come, and base's guards take room: ``###..#.#.###``).
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache", options={"preset": preset,
                                                                          **EAGER})
    budget = pc_compile.PRESETS[preset].compute_budget
    for _ in range(2):  # the timestep rises: a second generation
        generate(compiled, tiny)
    stats = pc_compile.stats(compiled, detail=True)
    assert stats["budget"]["asked"] == budget
    assert len(stats["budget"]["generations"]) == 2
    assert all(abs(f - budget) <= 0.02 + 1e-9 for f in stats["budget"]["generations"])
    trace = stats["per_stream"]["stream0"]["trace"][-len(TIMESTEPS):]
    pattern = "".join("#" if e["computed"] else "." for e in trace)
    computed = round(budget * len(TIMESTEPS))
    longest = math.ceil((len(TIMESTEPS) - computed) / (computed - 1))
    assert pattern[0] == "#" and pattern[-1] == "#" and "." * (longest + 2) not in pattern
    assert all(e["reuse"] in ("extrapolate", "output") for e in trace if not e["computed"])


def test_the_same_inputs_give_the_same_schedule_and_outputs():
    tiny = build("wan")
    results = []
    for _ in range(2):
        torch._dynamo.reset()
        compiled = torch.compile(tiny.model, backend="precisecache",
                                 options={"preset": "turbo", "block_rule": "blockcache",
                                          "compute_budget": None, "alpha": 2.0, **EAGER})
        outputs = generate(compiled, tiny)
        trace = pc_compile.stats(compiled, detail=True)["per_stream"]["stream0"]["trace"]
        results.append((outputs, [(e["computed"], e["blocks"]) for e in trace]))
    assert results[0][1] == results[1][1]
    assert any(not computed for computed, _ in results[0][1])
    for a, b in zip(results[0][0], results[1][0]):
        assert torch.equal(a, b)


def test_guards_forced_to_compute_equal_preset_off_exactly():
    tiny = build("wan")
    torch._dynamo.reset()
    off = generate(torch.compile(tiny.model, backend="precisecache",
                                 options={"preset": "off", **EAGER}), tiny)
    torch._dynamo.reset()
    forced = torch.compile(tiny.model, backend="precisecache",
                           options={"preset": "turbo", "compute_budget": None,
                                    "alpha": 1e-12, **EAGER})
    outputs = generate(forced, tiny)
    assert pc_compile.stats(forced)["skipped_steps"] == 0
    for a, b in zip(off, outputs):
        assert torch.equal(a, b)


class NaNAtLowResolution(PlainDiT):
    """Returns NaN whenever the latent is smaller than the full 8x8: the probe is broken."""

    def forward(self, hidden_states, timestep, encoder_hidden_states):
        out = super().forward(hidden_states, timestep, encoder_hidden_states)
        if hidden_states.shape[-1] < 8:
            out = out * math.nan
        return out


def test_a_non_finite_probe_forces_full_steps_and_is_counted():
    torch._dynamo.reset()
    tiny = build("plain_dit")
    model = NaNAtLowResolution()
    model.load_state_dict(tiny.model.state_dict())
    model.eval()
    compiled = torch.compile(model, backend="precisecache",
                             options={"preset": "turbo", "compute_budget": None,
                                      "alpha": 50.0, **EAGER})
    outputs = generate(compiled, tiny)
    stats = pc_compile.stats(compiled)
    assert stats["skipped_steps"] == 0
    # Every probe after the first (which has nothing to compare with) is non-finite.
    assert stats["probe_evals"] >= 3
    assert stats["per_stream"]["stream0"]["nonfinite_probes"] == stats["probe_evals"] - 1
    assert all(torch.isfinite(o).all() for o in outputs)


def test_reuse_forms():
    tiny = build("wan")
    allowed = {"output": {"output"}, "residual": {"residual", "residual_extrapolate"},
               "extrapolate": {"extrapolate", "output"}}
    for reuse in ("output", "residual", "extrapolate"):
        torch._dynamo.reset()
        compiled = torch.compile(tiny.model, backend="precisecache",
                                 options={"preset": "turbo", "compute_budget": None,
                                          "alpha": 3.0, "step_reuse": reuse, **EAGER})
        outputs = generate(compiled, tiny, conditions=(1,))
        stats = pc_compile.stats(compiled, detail=True)
        assert stats["skipped_steps"] > 0
        trace = stats["per_stream"]["stream0"]["trace"]
        last_computed = None
        for i, entry in enumerate(trace):
            if entry["computed"]:
                assert entry["reuse"] is None
                last_computed = i
                continue
            assert entry["reuse"] in allowed[reuse]
            # Plain reuse returns the last computed output; the other forms build a new one.
            same = torch.equal(outputs[i], outputs[last_computed])
            assert same == (entry["reuse"] == "output")


def test_residual_reuse_on_two_block_lists_is_a_clear_error():
    torch._dynamo.reset()
    tiny = build("hunyuan_video")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "turbo", "step_reuse": "residual", **EAGER})
    with pytest.raises(Exception, match="step_reuse='residual' needs one list of identical"):
        generate(compiled, tiny)


def test_a_probe_as_costly_as_a_step_is_reported():
    torch._dynamo.reset()
    tiny = build("flux")  # 4x4 tokens: at 16 tokens per frame the probe cannot shrink
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "turbo", "piece_compiler": "eager",
                                      "probe_min_tokens": 16})
    with pytest.warns(UserWarning, match="the probe costs 100% of a step"):
        generate(compiled, tiny, conditions=(1,))
