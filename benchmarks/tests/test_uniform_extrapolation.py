"""The uniform baselines: where the evenly spaced schedule puts its computed steps, and how the
skipped steps are filled (the last output, the line or the parabola in the timestep)."""

import pytest
import torch

from benchmarks import sampling
from benchmarks.methods import REGISTRY, Env
from benchmarks.peers.uniform import (
    UniformSkip,
    computed_count,
    extrapolate,
    full_steps,
    pattern,
    realised_fraction,
)

BUDGETS = (0.63, 0.465, 0.38)


def test_extrapolate_is_exact_on_polynomials_of_its_order():
    v = torch.tensor([1.0, -2.0])
    assert torch.equal(extrapolate([(900.0, v)], 100.0), v)
    line = [(t, 3.0 + 0.01 * t * v) for t in (900.0, 800.0)]
    assert torch.allclose(extrapolate(line, 650.0), 3.0 + 6.5 * v)
    para = [(t, (t / 100) ** 2 * v - t / 100) for t in (900.0, 750.0, 700.0)]
    assert torch.allclose(extrapolate(para, 500.0), 25.0 * v - 5.0, atol=1e-5)
    # A line through the last two points of the parabola misses it.
    assert not torch.allclose(extrapolate(para[1:], 500.0), 25.0 * v - 5.0, atol=0.1)
    with pytest.raises(ValueError, match="differ"):
        extrapolate([(5.0, v), (5.0, v)], 1.0)


@pytest.mark.parametrize("steps", [10, 20, 30, 50])
@pytest.mark.parametrize("fraction", BUDGETS + (0.3, 0.5, 0.75))
def test_the_schedule_computes_first_and_last_and_spaces_the_rest_evenly(steps, fraction):
    p = pattern(fraction, steps)
    n = round(fraction * steps)
    assert len(p) == steps and p.count("#") == n == computed_count(fraction, steps)
    assert p[0] == "#" and p[-1] == "#"
    on = [i for i, c in enumerate(p) if c == "#"]
    gaps = [b - a for a, b in zip(on, on[1:])]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced, up to rounding
    assert realised_fraction(fraction, steps) == n / steps
    assert abs(realised_fraction(fraction, steps) - fraction) <= 1 / (2 * steps) + 1e-12


def test_the_schedule_at_the_presets_budgets_30_steps():
    # round(i * 29 / (n - 1)), i = 0 .. n - 1, halves to the even index.
    assert pattern(0.63, 30) == "#.##.##.#.##.##.#.##.#.##.##.#"  # 19 computed
    assert pattern(0.465, 30) == "#.#.#..#.#.#.#..#.#.#.#..#.#.#"  # 14
    assert pattern(0.38, 30) == "#..#..#..#..#.#..#..#..#..#..#"  # 11
    assert full_steps(30, 14) == [round(i * 29 / 13) for i in range(14)]


class _Poly(torch.nn.Module):
    """Output ``e * p(t)``: ``p`` a polynomial in the timestep, ``e`` the conditioning's first
    entry, so that the two guidance branches differ; counts its calls."""

    def __init__(self, coeffs):
        super().__init__()
        self.coeffs = coeffs
        self.calls = 0

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        self.calls += 1
        t = timestep.view(-1, 1) / 1000
        p = sum(c * t**k for k, c in enumerate(self.coeffs))
        return (hidden_states * 0 + encoder_hidden_states.reshape(-1, 1)[:1] * p,)


def _drive(u, steps, timesteps):
    """Call ``u.fn`` as the sampler does (cond, then uncond); return per step the pair of
    outputs and the pair of true model outputs."""
    got, true = [], []
    x = torch.zeros(1, 3)
    branches = {"cond": torch.tensor([[2.0]]), "uncond": torch.tensor([[-1.0]])}
    for i, t in enumerate(timesteps):
        ts = torch.tensor([t])
        pair, ref = [], []
        for name, e in branches.items():
            ctx = sampling.CallContext(name, i, steps, t / 1000)
            pair.append(u.fn(x, ts, e, ctx))
            ref.append(u.model.__class__(u.model.coeffs)(x, ts, e)[0])
        got.append(pair)
        true.append(ref)
    return got, true


TIMES = [1000.0, 960.0, 910.0, 850.0, 780.0, 700.0, 600.0, 480.0, 330.0, 150.0]


@pytest.mark.parametrize("order,coeffs", [(1, [0.5, -2.0]), (2, [0.5, -2.0, 3.0])])
def test_skipped_steps_are_exact_on_a_model_of_the_forms_order(order, coeffs):
    model = _Poly(coeffs)
    u = UniformSkip(model, 0.5, order=order)
    got, true = _drive(u, 10, TIMES)
    on = full_steps(10, 5)
    assert on == [0, 2, 4, 7, 9]
    assert model.calls == 2 * len(on)  # both branches compute exactly the scheduled steps
    decisions = [(step, ran) for _, step, ran in u.calls]
    for i in range(10):  # both branches of a step take the same decision
        assert decisions[2 * i] == decisions[2 * i + 1] == (i, i in on)
    for i in range(10):
        for b in range(2):
            if i == 1:  # one computed output so far: it is reused
                assert torch.equal(got[i][b], got[0][b])
            elif i == 3 and order == 2:  # two so far: the line, not exact on a parabola
                assert not torch.allclose(got[i][b], true[i][b], atol=1e-3)
            else:
                assert torch.allclose(got[i][b], true[i][b], atol=1e-5), (i, b)


def test_plain_reuse_returns_the_last_computed_output_per_branch():
    model = _Poly([0.5, -2.0])
    u = UniformSkip(model, 0.5, order=0)
    got, true = _drive(u, 10, TIMES)
    assert torch.equal(got[3][0], got[2][0]) and torch.equal(got[3][1], got[2][1])
    assert not torch.allclose(got[3][0], got[3][1])  # each branch its own history
    assert not torch.allclose(got[3][0], true[3][0])
    u.reset()
    assert u.stats()["calls"] == 0 and u.history == {}


def test_the_order_must_be_known():
    with pytest.raises(ValueError, match="order"):
        UniformSkip(_Poly([1.0]), 0.5, order=3)


def test_the_baselines_are_registered_over_the_presets_budgets():
    for name in ("uniform+linear", "uniform+quadratic"):
        m = REGISTRY[name]
        assert m.mode == "eager" and not m.self_counted
        assert set(BUDGETS) <= set(m.sweep)
        assert all(0.3 <= s <= 0.75 for s in m.sweep)
    assert "uniform" in REGISTRY


@torch.no_grad()
def test_the_baselines_run_in_the_bench_and_differ_by_form():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=12,
                              in_channels=4, out_channels=4, text_dim=8, freq_dim=16, ffn_dim=16,
                              num_layers=2, rope_max_seq_len=16).eval()
    info = {"arch": "wan", "blocks_attr": "blocks", "name": "tiny", "layout": "BCFHW",
            "latent_shape": (4, 2, 4, 4),
            "class_embeddings": torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1)),
            "null_embedding": torch.zeros(3, 8)}
    env = Env(info=info, scheduler="euler", steps=8, base_model=m)
    ref = sampling.sample(sampling.plain(m), info, 1, 0, "euler", 8)
    outs = {}
    for name in ("uniform", "uniform+linear", "uniform+quadratic"):
        run = REGISTRY[name].make(env.fresh_model(), 0.5, env)
        first = sampling.sample(run.fn, info, 1, 0, "euler", 8)
        run.reset()
        assert torch.equal(sampling.sample(run.fn, info, 1, 0, "euler", 8), first), name
        assert not torch.equal(first, ref), name
        assert run.stats()["full_calls"] == 2 * 4
        outs[name] = first
    assert not torch.equal(outs["uniform"], outs["uniform+linear"])
    assert not torch.equal(outs["uniform+linear"], outs["uniform+quadratic"])
