"""The registry of latent layouts: built-in classes, registered classes, and the name guess."""

import warnings

import pytest
import torch
from torch import nn

import pc_compile
from pc_compile.capture import layout_registry
from pc_compile.capture.layout_registry import guess_layout, layout_for, register_layout
from pc_compile.capture.layouts import DenseLayout, Grid, PackedLayout
from pc_compile.errors import LayoutGuessWarning, UnsupportedGraphWarning
from tests.test_fallback import TokenDiT, token_inputs
from tests.tiny_models import build


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(layout_registry, "_REGISTRY", dict(layout_registry._REGISTRY))
    monkeypatch.setattr(layout_registry, "_guessed", set())


def guess_warnings(caught):
    return [w for w in caught if issubclass(w.category, LayoutGuessWarning)]


@pytest.mark.parametrize("name, kind, frames_first", [
    ("wan", DenseLayout, False), ("skyreels_v2", DenseLayout, False),
    ("hunyuan_video", DenseLayout, False), ("cogvideox", DenseLayout, True),
    ("ltx_video", PackedLayout, None), ("flux", PackedLayout, None),
    ("qwen_image", PackedLayout, None),
])
def test_diffusers_classes_are_registered_and_agree_with_the_old_guess(fresh_registry, name,
                                                                       kind, frames_first):
    tiny = build(name)
    call = tiny.make_inputs(500.0, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layout = layout_for(tiny.model, call, "hidden_states")
    assert guess_warnings(caught) == []
    assert type(layout) is kind
    guessed = guess_layout(tiny.model, call, "hidden_states")
    assert layout.grid(call) == guessed.grid(call)
    if kind is DenseLayout:
        assert layout == guessed and layout.frames_first == frames_first
    else:
        assert (layout.grid_of, layout.with_grid) == (guessed.grid_of, guessed.with_grid)


def test_a_registered_class_wins_over_the_name_guess(fresh_registry):
    class Video(nn.Module):
        config = type("Config", (), {"in_channels": 4, "patch_size": 2})()

    class Subclass(Video):
        pass

    call = {"hidden_states": torch.zeros(1, 4, 3, 8, 8)}
    assert guess_layout(Video(), call, "hidden_states").frames_first is False
    register_layout(Video, lambda module, call, hidden: DenseLayout(hidden, (1, 2, 2),
                                                                    frames_first=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert layout_for(Subclass(), call, "hidden_states").frames_first is True  # MRO
    assert guess_warnings(caught) == []
    fixed = DenseLayout("hidden_states", (1, 4, 4))
    register_layout("Subclass", fixed)  # by name, nearer in the MRO: wins over Video's
    assert layout_for(Subclass(), call, "hidden_states") is fixed
    with pytest.raises(TypeError, match="a class or a class name"):
        register_layout(3, fixed)


def test_the_name_guess_warns_once_per_class(fresh_registry):
    class Unknown(nn.Module):
        pass

    call = {"hidden_states": torch.zeros(1, 4, 3, 8, 8)}
    with pytest.warns(LayoutGuessWarning, match="no latent layout is registered for .*Unknown"):
        layout = layout_for(Unknown(), call, "hidden_states")
    assert layout == DenseLayout("hidden_states", (1, 1, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layout_for(Unknown(), call, "hidden_states")
    assert guess_warnings(caught) == []


def test_a_registered_layout_lets_the_probe_run_where_the_guess_cannot(fresh_registry):
    # TokenDiT's packed latent has no grid in its call: unregistered it runs without caching
    # (tests/test_fallback.py); with its grid registered, the probe runs.
    pc_compile.register_layout(TokenDiT, PackedLayout(
        "hidden_states", lambda call: Grid(1, 4, 4),
        lambda call, grid: call))
    torch._dynamo.reset()
    compiled = torch.compile(TokenDiT().eval(), backend="precisecache",
                             options={"preset": "turbo", "piece_compiler": "eager",
                                      "probe_min_tokens": 1})
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for t in (900.0, 700.0):
            compiled(**token_inputs(t, tokens=16))
    assert [w for w in caught if issubclass(w.category, UnsupportedGraphWarning)] == []
    stats = pc_compile.stats(compiled)
    assert stats["fallbacks"] == [] and stats["probe_evals"] == 2
