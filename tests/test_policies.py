"""SenCache and BWCache end to end on the tiny models, alone and combined with LFCache."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch

import pc_compile
from pc_compile.config import PRESETS, config_from_options
from pc_compile.runtime.engine import build_engine
from pc_compile.runtime.rules import RuleUnsupported
from tests.test_presets import EAGER, SUPPORTED, TIMESTEPS
from tests.test_presets import generate as generate_fixed
from tests.tiny_models import build

generate = partial(generate_fixed, moving=True)


@pytest.mark.parametrize("name", SUPPORTED)
@pytest.mark.parametrize("preset", ["sencache", "bwcache"])
def test_each_policy_runs_on_every_model(name, preset):
    torch._dynamo.reset()
    tiny = build(name)
    # Loose thresholds, so that both rules act on these untrained models.
    options = {"sen_epsilon": 1.0} if preset == "sencache" else {"bw_threshold": 2.0}
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": preset, **options, **EAGER})
    outputs = generate(compiled, tiny)
    assert all(torch.isfinite(o).all() for o in outputs)
    stats = pc_compile.stats(compiled, detail=True)
    assert stats["probe_evals"] == 0  # neither rule runs the probe
    trace = stats["per_stream"]["stream0"]["trace"]
    assert trace[0]["computed"] and trace[-1]["computed"]
    if preset == "sencache":
        assert stats["skipped_steps"] > 0 and stats["block_bypasses"] == 0
        # Measured from the step after warm-up on, up to the last step the lookahead expects
        # to be free (``runtime/lookahead.py``; fitted here, the schedule is no tensor).
        measured = [e["step"] for e in trace if "sensitivity" in e]
        assert measured == list(range(2, len(measured) + 2)) and len(measured) >= 3
    else:
        assert stats["skipped_steps"] == 0 and stats["block_bypasses"] > 0
        assert any(e.get("block_metric") for e in trace)


@pytest.mark.parametrize("options", [
    {"preset": "sencache", "sen_epsilon": 1.0, "block_rule": "bwcache", "bw_threshold": 2.0},
    {"preset": "bwcache", "bw_threshold": 2.0, "bw_scope": "mean"},
    {"preset": "turbo", "compute_budget": None, "alpha": 2.0, "block_rule": "bwcache",
     "bw_threshold": 2.0},
])
def test_the_same_inputs_give_the_same_schedule_and_outputs(options):
    tiny = build("wan")
    results = []
    for _ in range(2):
        torch._dynamo.reset()
        compiled = torch.compile(tiny.model, backend="precisecache",
                                 options={**options, **EAGER})
        outputs = generate(compiled, tiny)
        trace = pc_compile.stats(compiled, detail=True)["per_stream"]["stream0"]["trace"]
        results.append((outputs, [(e["computed"], e["blocks"]) for e in trace]))
    assert results[0][1] == results[1][1]
    assert any(not c or not all(b) for c, b in results[0][1])  # something was reused
    for a, b in zip(results[0][0], results[1][0]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("options", [
    {"preset": "sencache", "sen_epsilon": 1e-9},
    {"preset": "bwcache", "bw_threshold": 1e-9},
])
def test_thresholds_that_never_reuse_equal_preset_off_exactly(options):
    tiny = build("wan")
    torch._dynamo.reset()
    off = generate(torch.compile(tiny.model, backend="precisecache",
                                 options={"preset": "off", **EAGER}), tiny)
    torch._dynamo.reset()
    compiled = torch.compile(tiny.model, backend="precisecache", options={**options, **EAGER})
    outputs = generate(compiled, tiny)
    stats = pc_compile.stats(compiled)
    assert stats["skipped_steps"] == 0 and stats["block_bypasses"] == 0
    assert stats["steps"] == 2 * len(TIMESTEPS)
    for a, b in zip(off, outputs):
        assert torch.equal(a, b)


def test_the_guidance_branches_follow_one_sencache_decision():
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "sencache", "sen_epsilon": 1.0, **EAGER})
    generate(compiled, tiny)
    streams = pc_compile.stats(compiled, detail=True)["per_stream"]
    cond, uncond = (s["trace"] for s in streams.values())
    assert [e["computed"] for e in cond] == [e["computed"] for e in uncond]
    assert all(e.get("followed") for e in uncond if e["step"] >= 2)


def test_bad_thresholds_are_clear_errors():
    with pytest.raises(ValueError, match=r"sen_epsilon must be a number in \(0.0, 10.0\]"):
        config_from_options({"preset": "sencache", "sen_epsilon": 0})
    with pytest.raises(ValueError, match=r"bw_threshold must be a number in \(0.0, 10.0\]"):
        config_from_options({"preset": "bwcache", "bw_threshold": -0.1})
    with pytest.raises(ValueError, match="bw_reuse_steps must be an integer >= 1"):
        config_from_options({"preset": "bwcache", "bw_reuse_steps": 0})
    with pytest.raises(ValueError, match="bw_scope='all' is not valid; choose one of block, mean"):
        config_from_options({"bw_scope": "all"})
    with pytest.raises(ValueError, match="max_reuse must be an integer >= 0"):
        config_from_options({"max_reuse": -1})


def _spec(bypassable):
    pieces = [SimpleNamespace(state_slots=((0, 0),) if ok else ()) for ok in bypassable]
    return SimpleNamespace(pieces=pieces, blocks=list(range(len(pieces))))


def test_a_block_rule_on_blocks_that_cannot_be_bypassed_says_so():
    for rule in ("bwcache", "blockcache"):
        config = config_from_options({"preset": "off", "block_rule": rule})
        with pytest.raises(RuleUnsupported, match=f"block_rule='{rule}' cannot work"):
            build_engine(config, _spec([False, False]), None)
        assert build_engine(config, _spec([False, True]), None).block_rule is not None


def test_sencache_without_a_latent_input_says_so():
    roles = SimpleNamespace(hidden=None)
    with pytest.raises(RuleUnsupported, match="no input of this graph was recognised"):
        build_engine(PRESETS["sencache"], _spec([True, True]), None, roles)
