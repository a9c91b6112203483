"""A rule registered from outside the package runs by its name, with its own options."""

import pytest
import torch

import pc_compile
from pc_compile.config import config_from_options
from tests.runtime import toy_rule  # noqa: F401  (registers the step rule "toy")
from tests.test_presets import TIMESTEPS, generate
from tests.tiny_models import build


def test_a_step_rule_registered_outside_the_package_runs_by_name():
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "off", "step_rule": "toy", "toy_period": 3,
                                      "piece_compiler": "eager"})
    outputs = generate(compiled, tiny)
    stats = pc_compile.stats(compiled, detail=True)
    cond, uncond = (s["trace"] for s in stats["per_stream"].values())
    n = len(TIMESTEPS)
    wish = [(i + 1) % 3 == 0 for i in range(n)]
    # Preset off's guards: two warm-up steps, and the steps within 1.5 step sizes of t = 0.
    near_end = [i > 0 and TIMESTEPS[i] < 1.5 * (TIMESTEPS[i - 1] - TIMESTEPS[i])
                for i in range(n)]
    free = [i >= 2 and not near_end[i] for i in range(n)]
    reused = [w and f for w, f in zip(wish, free)]
    assert sum(reused) >= 2
    # The rule measures every step up to the last free one: the forced steps after it (the
    # end of the schedule) have nothing to decide for (``runtime/lookahead.py``).
    measured = [any(free[i:]) for i in range(n)]
    assert not all(measured)
    assert [e.get("toy_wish") for e in cond] == [w if m else None
                                                 for w, m in zip(wish, measured)]
    assert [not e["computed"] for e in cond] == reused
    # The rule's own state counted the computed steps before each decision.
    assert [e.get("toy_computed") for e in cond] == [i - sum(reused[:i]) if measured[i] else None
                                                     for i in range(n)]
    # The uncond branch follows without asking the rule.
    assert [not e["computed"] for e in uncond] == reused
    assert all(e["followed"] and "toy_wish" not in e for e in uncond)
    assert stats["skipped_steps"] == 2 * sum(reused) and stats["probe_evals"] == 0
    # A reused step returns the last computed output (the rule never asks to extrapolate).
    for i in range(n):
        if reused[i]:
            assert cond[i]["reuse"] == "output"
            last = max(j for j in range(i) if not reused[j])
            assert torch.equal(outputs[2 * i], outputs[2 * last])


def test_the_toy_rules_option_is_routed_and_validated():
    config = config_from_options({"preset": "off", "step_rule": "toy", "toy_period": 4})
    assert config.options_for("toy") == toy_rule.ToyOptions(toy_period=4)
    assert config.toy_period == 4
    with pytest.raises(ValueError, match="toy_period must be an integer >= 2, got 1"):
        config_from_options({"step_rule": "toy", "toy_period": 1})
