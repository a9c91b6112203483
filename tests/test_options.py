"""Options, presets, the fallback for graphs that cannot be partitioned, and the entry point."""

import subprocess
import sys
import textwrap

import pytest
import torch

import pc_compile
from pc_compile.backend import UnsupportedGraphWarning
from pc_compile.config import PRESETS, PreciseCacheConfig, config_from_options


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown precisecache option\(s\) 'alhpa'.*valid options are preset, step_rule"):
        config_from_options({"alhpa": 0.5})


def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="unknown preset 'fast'; choose one of off"):
        config_from_options({"preset": "fast"})
    with pytest.raises(ValueError, match="piece_compiler='tvm' is not valid; choose one of inductor, eager"):
        config_from_options({"piece_compiler": "tvm"})
    with pytest.raises(ValueError, match="max_streams must be an integer >= 1"):
        PreciseCacheConfig(max_streams=0)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0.0, 100.0\], got -1"):
        config_from_options({"alpha": -1})
    with pytest.raises(ValueError, match=r"pivotal_fraction must be a number in \(0.0, 1.0\]"):
        config_from_options({"preset": "flash", "pivotal_fraction": 1.5})
    with pytest.raises(ValueError, match="probe_downsample must be three integers >= 1"):
        config_from_options({"probe_downsample": (2, 0, 4)})
    with pytest.raises(ValueError, match="pivotal_steps must be an integer >= 1"):
        config_from_options({"pivotal_steps": 0})
    with pytest.raises(ValueError, match=r"end_span must be a number in \[0.0, 1000.0\]"):
        config_from_options({"end_span": -1.0})
    assert config_from_options({"probe_downsample": [1, 2, 2]}).probe_downsample == (1, 2, 2)


def test_options_that_are_not_a_dict_and_booleans_for_integers_are_refused():
    with pytest.raises(TypeError, match=r"options must be a dict, got str 'turbo'; for a preset "
                                        r"write options=\{'preset': 'turbo'\}"):
        config_from_options("turbo")
    with pytest.raises(TypeError, match="options must be a dict, got list"):
        config_from_options([("preset", "off")])
    for name in ("max_streams", "warmup_steps", "max_reuse"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= .*, got True"):
            config_from_options({name: True})


def test_presets_and_overrides():
    assert config_from_options(None) == PRESETS["turbo"]  # the default
    flash = config_from_options({"preset": "flash"})
    assert (flash.step_rule, flash.alpha, flash.block_rule) == ("lfcache", 1.0, "none")
    turbo = config_from_options({})
    assert (turbo.alpha, turbo.warmup_steps, turbo.max_reuse, turbo.end_span) == (1.0, 5, 0, 4.5)
    # The presets are the paper's speed-ups as compute budgets.
    assert [PRESETS[p].compute_budget for p in ("base", "turbo", "flash")] == [0.63, 0.465, 0.38]
    assert [PRESETS[p].budget_placement for p in ("base", "turbo", "flash")] == [
        "score", "even", "even"]
    assert config_from_options({"preset": "base"}).lfd_reference == "previous"
    assert config_from_options({"lfd_reference": "cache"}).lfd_reference == "cache"
    with pytest.raises(ValueError, match="lfd_reference='next' is not valid; choose one of cache"):
        config_from_options({"lfd_reference": "next"})
    base = config_from_options({"preset": "base"})
    assert (base.alpha, base.warmup_steps, base.max_reuse, base.end_span) == (1.0, 5, 0, 4.5)
    # A block rule cannot run under a preset's budget: a clear error, and the way out.
    with pytest.raises(ValueError, match="preset 'turbo' spends compute_budget=0.465, which cannot "
                                         "be combined with block_rule='bwcache'; add "
                                         "compute_budget=None"):
        config_from_options({"block_rule": "bwcache"})
    both = config_from_options({"block_rule": "bwcache", "compute_budget": None})
    assert (both.step_rule, both.block_rule, both.compute_budget) == ("lfcache", "bwcache", None)
    assert config_from_options({"preset": "off", "max_streams": 3}).max_streams == 3
    with pytest.raises(ValueError, match="either a PreciseCacheConfig or options"):
        pc_compile.backend(PreciseCacheConfig(), max_streams=2)


class NoBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_unsupported_graph_falls_back_with_one_warning():
    torch._dynamo.reset()
    model = NoBlocks()
    x = torch.randn(2, 4)
    compiled = torch.compile(model, backend="precisecache")
    with pytest.warns(UnsupportedGraphWarning, match="no repeated transformer blocks"):
        out = compiled(x)
    torch.testing.assert_close(out, model(x))


def test_unsupported_graph_raises_when_asked():
    torch._dynamo.reset()
    compiled = torch.compile(NoBlocks(), backend="precisecache",
                             options={"on_unsupported": "error"})
    with pytest.raises(Exception, match="no repeated transformer blocks"):
        compiled(torch.randn(2, 4))


def test_backend_name_works_in_a_fresh_process_without_importing_pc_compile():
    code = textwrap.dedent(
        """
        import sys, torch
        from tests.tiny_models import build, first_output
        tiny = build("plain_dit")
        assert "pc_compile" not in sys.modules
        compiled = torch.compile(tiny.model, backend="precisecache",
                                 options={"preset": "off", "piece_compiler": "eager"})
        with torch.no_grad():
            out = first_output(compiled(**tiny.make_inputs(500.0, 1)))
            ref = first_output(tiny.model(**tiny.make_inputs(500.0, 1)))
        assert "pc_compile" in sys.modules
        torch.testing.assert_close(out, ref)
        import pc_compile
        print(pc_compile.stats(compiled)["block_evals"])
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "3"
