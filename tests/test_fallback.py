"""The tiers a model steps down when it cannot do what was asked, and how each is reported.

Tier 1 is the requested caching, tier 2 the partitioned graph without caching, tier 3 plain
Inductor with the user's mode. Pieces run eagerly where the test is about the decision only.
"""

import logging
import warnings

import pytest
import torch
from torch import nn

import pc_compile
from pc_compile import assemble
from pc_compile.errors import (
    PolicyUnsupported,
    PreciseCacheUnsupported,
    ProbeUnsupported,
    UnsupportedGraph,
    UnsupportedGraphWarning,
)
from pc_compile.runtime.inductor import mode_options
from tests.tiny_models import TEXT, PlainBlock, build, first_output

EAGER = {"piece_compiler": "eager", "probe_min_tokens": 1}


class TokenDiT(nn.Module):
    """Blocks over a packed latent (B, N, C) whose grid the call does not describe: the
    passes partition it, but the probe cannot tell its frames, height and width."""

    def __init__(self, dim=16, depth=3):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.time = nn.Linear(1, dim)
        self.text = nn.Linear(TEXT, dim)
        self.blocks = nn.ModuleList(PlainBlock(dim) for _ in range(depth))
        self.out = nn.Linear(dim, 4)

    def forward(self, hidden_states, timestep, encoder_hidden_states):
        x = self.embed(hidden_states)
        temb = self.time(timestep.reshape(-1, 1) / 1000.0)
        context = self.text(encoder_hidden_states)
        for block in self.blocks:
            x = block(x, temb, context)
        return self.out(x)


class NoBlocks(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def token_inputs(t, tokens=6):
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(1, tokens, 4, generator=g),
                timestep=torch.tensor([t]),
                encoder_hidden_states=torch.randn(1, 5, TEXT, generator=g))


def fallback_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, UnsupportedGraphWarning)]


def test_tier_one_runs_the_requested_caching_and_reports_no_fallback():
    torch._dynamo.reset()
    tiny = build("wan")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "turbo", **EAGER})
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for t in (900.0, 700.0, 500.0):
            compiled(**tiny.make_inputs(t, 1))
    assert fallback_warnings(caught) == []
    stats = pc_compile.stats(compiled)
    assert stats["fallbacks"] == [] and stats["probe_evals"] > 0


def test_tier_two_runs_the_partitioned_graph_without_caching(caplog):
    torch._dynamo.reset()
    model = TokenDiT().eval()
    compiled = torch.compile(model, backend="precisecache", options={"preset": "turbo", **EAGER})
    caplog.set_level(logging.DEBUG, logger="pc_compile")
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        outputs = [compiled(**token_inputs(t)) for t in (900.0, 700.0, 500.0, 300.0)]
        expected = [model(**token_inputs(t)) for t in (900.0, 700.0, 500.0, 300.0)]
    messages = fallback_warnings(caught)
    assert len(messages) == 1, messages
    assert "computes every step and block" in messages[0]
    assert "cannot tell the grid of a latent of shape (1, 6, 4)" in messages[0]
    for a, b in zip(outputs, expected):
        torch.testing.assert_close(a, b)
    stats = pc_compile.stats(compiled)
    assert stats["steps"] == 4 and stats["full_steps"] == 4 and stats["probe_evals"] == 0
    assert [f["ran"] for f in stats["fallbacks"]] == ["partitioned without caching"]
    assert "cannot tell the grid" in stats["fallbacks"][0]["reason"]
    logged = [r.getMessage() for r in caplog.records if r.name == "pc_compile"]
    assert any(m.startswith("partition: 5 pieces, 3 blocks in 1 list(s) (blocks)") for m in logged), logged
    assert any("fallback to partitioned without caching (ProbeUnsupported)" in m
               for m in logged), logged


def test_one_warning_per_model_and_reason_not_per_graph():
    torch._dynamo.reset()
    model = TokenDiT().eval()
    compiled = torch.compile(model, backend="precisecache",
                             options={"preset": "turbo", **EAGER}, dynamic=False)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for tokens in (6, 8, 10):  # three shapes: Dynamo hands over three graphs
            compiled(**token_inputs(900.0, tokens))
    assert len(fallback_warnings(caught)) == 1
    assert len(pc_compile.stats(compiled)["per_stream"]) == 3  # three graphs ran
    # Another instance runs the class's graphs (Dynamo shares them): nothing new to say, but
    # its stats tell the same story.
    other = torch.compile(TokenDiT().eval(), backend="precisecache",
                          options={"preset": "turbo", **EAGER}, dynamic=False)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        other(**token_inputs(900.0))
    assert fallback_warnings(caught) == []
    stats = pc_compile.stats(other)
    assert stats["steps"] == 1 and stats["fallbacks"][0]["ran"] == "partitioned without caching"


def test_tier_three_is_plain_inductor_with_the_users_mode(monkeypatch):
    torch._dynamo.reset()
    compiled_with = []

    def spy(gm, example_inputs, options=None):
        compiled_with.append(options)
        return gm.forward

    monkeypatch.setattr(torch._inductor, "compile", spy)
    model = NoBlocks()
    compiled = torch.compile(model, backend="precisecache", mode="reduce-overhead")
    x = torch.randn(2, 4)
    with pytest.warns(UnsupportedGraphWarning,
                      match=r"plain Inductor \(mode='reduce-overhead'\).*no repeated"):
        out = compiled(x)
    torch.testing.assert_close(out, model(x))
    assert compiled_with == [mode_options("reduce-overhead")]
    assert compiled_with[0]["triton.cudagraphs"] is True


def test_stats_of_a_model_that_fell_back_says_so_and_why():
    torch._dynamo.reset()
    compiled = torch.compile(NoBlocks(), backend="precisecache")
    with pytest.warns(UnsupportedGraphWarning):
        compiled(torch.randn(2, 4))
    stats = pc_compile.stats(compiled)
    assert stats["steps"] == 0 and stats["streams"] == 0
    assert len(stats["fallbacks"]) == 1
    assert stats["fallbacks"][0]["ran"] == "plain inductor"
    assert "no repeated transformer blocks" in stats["fallbacks"][0]["reason"]
    pc_compile.reset(compiled)  # nothing to reset, and no error


def test_tier_two_failing_steps_down_to_tier_three(monkeypatch):
    torch._dynamo.reset()

    def refuse(*args, **kwargs):
        raise PolicyUnsupported("refused by the test")

    monkeypatch.setattr(assemble, "build_graph", refuse)
    tiny = build("plain_dit")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "turbo", **EAGER})
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        out = first_output(compiled(**tiny.make_inputs(900.0, 1)))
        expected = first_output(tiny.model(**tiny.make_inputs(900.0, 1)))
    torch.testing.assert_close(out, expected)
    messages = fallback_warnings(caught)
    assert len(messages) == 2
    assert "computes every step and block" in messages[0] and "plain Inductor" in messages[1]
    assert [f["ran"] for f in pc_compile.stats(compiled)["fallbacks"]] == [
        "partitioned without caching", "plain inductor"]


@pytest.mark.parametrize("model_and_error", ["probe", "graph"])
def test_on_unsupported_error_raises_the_base_exception(model_and_error):
    torch._dynamo.reset()
    if model_and_error == "probe":
        model, inputs, error = TokenDiT().eval(), token_inputs(900.0), ProbeUnsupported
    else:
        model, inputs, error = NoBlocks(), {"x": torch.randn(2, 4)}, UnsupportedGraph
    compiled = torch.compile(model, backend="precisecache",
                             options={"preset": "turbo", "on_unsupported": "error", **EAGER})
    with pytest.raises(Exception) as raised, torch.no_grad():
        compiled(**inputs)
    # Dynamo wraps what a backend raises (BackendCompilerFailed); ours is the cause.
    cause = raised.value
    while not isinstance(cause, PreciseCacheUnsupported):
        cause = getattr(cause, "inner_exception", None) or cause.__cause__
    assert isinstance(cause, PreciseCacheUnsupported) and isinstance(cause, error)


def test_the_users_mode_reaches_the_pieces_of_the_model_and_of_its_probe(monkeypatch):
    torch._dynamo.reset()
    modes = []
    real = assemble.PieceCompiler

    def recording(kind, inductor_mode=None, cuda_graphs=False):
        modes.append(inductor_mode)
        return real(kind, inductor_mode, cuda_graphs)

    monkeypatch.setattr(assemble, "PieceCompiler", recording)
    tiny = build("wan")
    # LFCache's threshold rule with five warm-up steps probes both steps (a budget would not
    # probe the last one).
    compiled = torch.compile(tiny.model, backend=pc_compile.backend(
        preset="turbo", compute_budget=None, max_reuse=1, **EAGER),
        mode="max-autotune-no-cudagraphs")
    with torch.no_grad():
        for t in (900.0, 700.0):
            compiled(**tiny.make_inputs(t, 1))
    assert modes == ["max-autotune-no-cudagraphs"] * 2  # the model's graph, the probe's graph
    assert pc_compile.stats(compiled)["probe_evals"] == 2
