"""Flat option names routed to the rules' options dataclasses, validated, and registered."""

import dataclasses

import pytest

import pc_compile
from pc_compile.config import PRESETS, PreciseCacheConfig, config_from_options
from pc_compile.runtime.rules import register_block_rule, registry
from pc_compile.runtime.rules.blockcache import BlockCacheOptions
from pc_compile.runtime.rules.lfcache import LFCacheOptions
from pc_compile.runtime.rules.sencache import SenCacheOptions


@pytest.fixture
def scratch_registry():
    """Rules registered inside a test are gone after it."""
    saved = {kind: dict(rules) for kind, rules in registry._rules.items()}
    yield
    for kind, rules in saved.items():
        registry._rules[kind].clear()
        registry._rules[kind].update(rules)


def test_flat_options_reach_the_selected_rules_options():
    config = config_from_options({"preset": "turbo", "alpha": 0.6})
    assert config.options_for("lfcache") == LFCacheOptions(alpha=0.6)
    assert (config.alpha, config.warmup_steps, config.max_reuse) == (0.6, 5, 0)
    config = config_from_options({"preset": "flash", "compute_budget": None,
                                  "block_rule": "blockcache", "pivotal_fraction": 0.3,
                                  "pivotal_steps": 2})
    assert config.options_for("blockcache") == BlockCacheOptions(0.3, 2)
    assert callable(pc_compile.backend(preset="flash", compute_budget=None,
                                       block_rule="blockcache", pivotal_fraction=0.4))


def test_an_option_of_a_rule_not_selected_is_kept_for_when_it_is():
    config = config_from_options({"preset": "turbo", "sen_epsilon": 0.2})
    assert config.step_rule == "lfcache" and config.sen_epsilon == 0.2
    switched = dataclasses.replace(config, step_rule="sencache")
    assert switched.options_for("sencache") == SenCacheOptions(0.2)
    assert switched.options_for("lfcache").alpha == 1.0  # turbo's, kept too


def test_rules_at_their_defaults_are_not_stored_so_equal_configs_compare_equal():
    assert config_from_options({"alpha": 1.0}) == PRESETS["turbo"]
    assert PreciseCacheConfig(alpha=0.7) == PreciseCacheConfig()
    assert PRESETS["off"].rule_options == ()
    assert dict(PRESETS["flash"].rule_options) == {"lfcache": LFCacheOptions(alpha=1.0)}
    assert hash(config_from_options({"alpha": 1.0})) == hash(PRESETS["turbo"])


def test_names_that_are_not_rules_or_options_are_clear_errors():
    with pytest.raises(ValueError, match="step_rule='fast' is not valid; choose one of none, "
                                         "lfcache, sencache"):
        config_from_options({"step_rule": "fast"})
    with pytest.raises(ValueError, match="block_rule='x' is not valid; choose one of none, "
                                         "blockcache, bwcache"):
        PreciseCacheConfig(block_rule="x")
    with pytest.raises(TypeError, match="unknown option.*'alhpa'.*valid options are step_rule"):
        PreciseCacheConfig(alhpa=0.5)
    with pytest.raises(AttributeError, match="no field or rule option 'alhpa'"):
        PRESETS["turbo"].alhpa  # noqa: B018
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0.0, 100.0\]"):
        PreciseCacheConfig(step_rule="lfcache", alpha=0)


@dataclasses.dataclass(frozen=True)
class SharedNameOptions:
    pivotal_steps: int = 7  # also BlockCache's


class SharedName:
    pass


def test_an_option_two_rules_declare_goes_to_the_selected_one(scratch_registry):
    register_block_rule("shared-name", SharedName, options=SharedNameOptions)
    config = config_from_options({"preset": "off", "block_rule": "shared-name",
                                  "pivotal_steps": 2})
    assert config.options_for("shared-name").pivotal_steps == 2
    assert config.options_for("blockcache").pivotal_steps == 3  # untouched
    assert config.pivotal_steps == 2
    # Neither selected: both get it.
    config = config_from_options({"preset": "off", "pivotal_steps": 5})
    assert config.options_for("shared-name").pivotal_steps == 5
    assert config.options_for("blockcache").pivotal_steps == 5


def test_registration_refuses_what_could_not_be_routed(scratch_registry):
    @dataclasses.dataclass
    class Mutable:
        x: int = 1

    with pytest.raises(TypeError, match="must be a frozen dataclass"):
        register_block_rule("mutable", SharedName, options=Mutable)

    @dataclasses.dataclass(frozen=True)
    class NoDefault:
        x: int

    with pytest.raises(TypeError, match="need defaults: x"):
        register_block_rule("no-default", SharedName, options=NoDefault)

    @dataclasses.dataclass(frozen=True)
    class Clash:
        warmup_steps: int = 1

    with pytest.raises(ValueError, match=r"option names \['warmup_steps'\] are config fields"):
        register_block_rule("clash", SharedName, options=Clash)
    with pytest.raises(ValueError, match="already registered"):
        register_block_rule("bwcache", SharedName, options=SharedNameOptions)
    with pytest.raises(ValueError, match="a step rule is already named 'lfcache'"):
        register_block_rule("lfcache", SharedName, options=SharedNameOptions)
