import json
import math

import pytest
import torch

from benchmarks import data, metrics, models, sampling
from benchmarks.peers.teacache import TeaCache
from benchmarks.peers.uniform import UniformSkip, every_kth, full_steps

# ----------------------------------------------------------------------------------------- data


def test_data_is_deterministic_and_labelled():
    a, la = data.make_video(7)
    b, lb = data.make_video(7)
    assert torch.equal(a, b) and la == lb
    c, _ = data.make_video(8)
    assert not torch.equal(a, c)
    v, lab = data.make_video(3, label=5, frames=5, size=16)
    assert lab == 5 and v.shape == (data.CHANNELS, 5, 16, 16)
    assert v.min() >= -1 and v.max() <= 1
    batch, labels = data.make_batch([1, 2, 3], labels=[0, 1, 7])
    assert batch.shape == (3, 4, 9, 32, 32) and labels.tolist() == [0, 1, 7]
    assert torch.equal(batch[0], data.make_video(1, 0)[0])


def test_data_has_motion():
    v, _ = data.make_video(11)
    assert (v[:, 0] - v[:, -1]).abs().mean() > 0.01


# -------------------------------------------------------------------------------------- metrics


def test_psnr_ssim_identical():
    x = torch.randn(1, 4, 3, 16, 16)
    assert metrics.psnr(x, x) == math.inf
    assert metrics.ssim(x, x) == pytest.approx(1.0)


def test_psnr_constructed():
    ref = torch.zeros(2, 4, 3, 8, 8)
    x = ref + 0.1  # MSE 0.01 on a data range of 2: 10 log10(4 / 0.01)
    assert metrics.psnr(x, ref) == pytest.approx(10 * math.log10(400), abs=1e-6)


def test_ssim_constructed_constant_images():
    # Constant images: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.5, 0.25
    c1 = (0.01 * 2) ** 2
    expect = (2 * a * b + c1) / (a * a + b * b + c1)
    got = metrics.ssim(torch.full((1, 1, 2, 16, 16), a), torch.full((1, 1, 2, 16, 16), b))
    assert got == pytest.approx(expect, rel=1e-9)


def test_ssim_decreases_with_noise():
    g = torch.Generator().manual_seed(0)
    ref = data.make_video(1)[0]
    small = metrics.ssim(ref + 0.05 * torch.randn(ref.shape, generator=g), ref)
    large = metrics.ssim(ref + 0.3 * torch.randn(ref.shape, generator=g), ref)
    assert 1 > small > large > 0


# ------------------------------------------------------------------------------------- uniform


def test_uniform_full_steps():
    s = full_steps(30, 15)
    assert len(s) == 15 and s[0] == 0 and s[-1] == 29
    assert full_steps(10, 10) == list(range(10))
    assert full_steps(10, 1) == [0]
    assert every_kth(10, 3) == [0, 3, 6, 9]


class _CountingModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        self.calls += 1
        return (hidden_states * 0 + timestep.view(-1, 1),)


def test_uniform_skip_counts_and_reuse():
    m = _CountingModel()
    u = UniformSkip(m, fraction=0.5)
    x = torch.zeros(1, 3)
    outs = []
    for i in range(10):
        for branch in ("cond", "uncond"):
            ctx = sampling.CallContext(branch, i, 10, 1 - i / 10)
            outs.append(u.fn(x, torch.tensor([float(i)]), None, ctx))
    assert m.calls == 2 * 5
    assert u.stats()["compute_fraction"] == pytest.approx(0.5)
    # Step 1 is skipped: it returns step 0's output.
    assert torch.equal(outs[2], outs[0])
    u.reset()
    assert u.stats()["calls"] == 0


# ---------------------------------------------------------------------------------- teacache


def _tiny_wan():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=12,
                              in_channels=4, out_channels=4, text_dim=8, freq_dim=16, ffn_dim=16,
                              num_layers=3, rope_max_seq_len=16).eval()
    info = {"arch": "wan", "blocks_attr": "blocks"}
    return m, info


@torch.no_grad()
def test_teacache_rule_constructed():
    m, info = _tiny_wan()
    plain = sampling.plain(m)
    # Identity polynomial: accumulate the raw relative L1 of the modulated input.
    tc = TeaCache(m, info, threshold=0.01, coeffs=[1.0, 0.0])
    x = torch.randn(1, 4, 2, 4, 4)
    t = torch.tensor([500.0])
    e = torch.randn(1, 3, 8)
    ctx = sampling.CallContext("cond", 0, 5, 0.5)
    first = tc.fn(x, t, e, ctx)
    assert torch.allclose(first, plain(x, t, e, ctx), atol=1e-6)
    # Same input again at step 1: relative change 0 < threshold, the blocks are skipped and
    # the cached residual reproduces the computed output.
    again = tc.fn(x, t, e, sampling.CallContext("cond", 1, 5, 0.4))
    assert tc.state.trace[-1]["skip"] and tc.state.trace[-1]["rel_l1"] == 0.0
    assert torch.allclose(again, first, atol=1e-5)
    # A very different timestep: the modulated input changes a lot, the blocks run.
    out = tc.fn(x, torch.tensor([50.0]), e, sampling.CallContext("cond", 2, 5, 0.3))
    assert not tc.state.trace[-1]["skip"]
    assert torch.allclose(out, plain(x, torch.tensor([50.0]), e, ctx), atol=1e-5)
    # The last step always computes.
    tc.fn(x, torch.tensor([50.0]), e, sampling.CallContext("cond", 4, 5, 0.0))
    assert not tc.state.trace[-1]["skip"]
    # Branches keep separate state: the first uncond call computes.
    tc.fn(x, t, e, sampling.CallContext("uncond", 1, 5, 0.4))
    assert not tc.state.trace[-1]["skip"]


# ---------------------------------------------------------------------------- reference models


def test_reference_models_load_and_forward():
    names = models.list_reference()
    assert {"wan-tiny", "cogvideox-tiny"} <= set(names)
    for name in names:
        model, info = models.load_reference(name)
        assert not model.training
        assert info["class_embeddings"].shape[0] == info["num_classes"] == data.NUM_CLASSES
        assert info["null_embedding"].shape == info["class_embeddings"].shape[1:]
        x = torch.randn(1, *info["model_input_shape"])
        with torch.no_grad():
            out = model(hidden_states=x, timestep=torch.tensor([500.0]),
                        encoder_hidden_states=models.encoder_hidden_states(info, [1]),
                        return_dict=False)[0]
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_quick_bench(tmp_path):
    from benchmarks import run

    run.main(["--quick", "--out", str(tmp_path), "--threads", "1"])
    res = json.loads((tmp_path / "results.json").read_text())
    assert {"meta", "rows"} <= set(res)
    rows = res["rows"]
    keys = {"model", "scheduler", "steps", "method", "setting", "compute_fraction", "psnr", "ssim",
            "wall_s", "mode"}
    assert all(keys <= set(r) for r in rows)
    methods = {r["method"] for r in rows}
    assert {"none", "uniform", "teacache-style", "first-block-cache"} <= methods
    uni = [r for r in rows if r["method"] == "uniform"]
    assert all(0 < r["compute_fraction"] < 1 for r in uni)
    assert (tmp_path / "pareto.png").is_file()


@torch.no_grad()
def test_hook_methods_start_fresh_each_generation():
    from benchmarks.methods import REGISTRY, Env

    m, info = _tiny_wan()
    c = torch.zeros(2, 3, 8)
    info = dict(info, name="tiny", layout="BCFHW", latent_shape=(4, 2, 4, 4),
                class_embeddings=torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1)),
                null_embedding=c[0])
    ref = sampling.sample(sampling.plain(m), info, 1, 0, "euler", 6)
    env = Env(info=info, scheduler="euler", steps=6, base_model=m)
    for name, setting in [("first-block-cache", 0.3), ("uniform", 0.5)]:
        run = REGISTRY[name].make(env.fresh_model(), setting, env)
        outs = []
        for _ in range(2):
            run.reset()
            outs.append(sampling.sample(run.fn, info, 1, 0, "euler", 6))
        assert torch.equal(outs[0], outs[1]), name
        assert not torch.equal(outs[0], ref), name  # the method did skip something
