"""Tiny, randomly initialised denoisers of every architecture the backend supports.

Each entry builds a model small enough to compile on a CPU in seconds and a function that
returns the keyword arguments of one denoiser call for a given timestep and conditioning seed.
The shapes are those of a real call (a video latent, a timestep, text embeddings), only small.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.fx
from torch import nn

HEADS, HEAD_DIM, TEXT = 2, 8, 16


@dataclass
class TinyModel:
    name: str
    model: nn.Module
    make_inputs: Callable[[float, int], dict]  # (timestep, condition seed) -> forward kwargs
    timestep_scale: float = 1.0  # Flux takes t / 1000


def _latent(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1000 + seed))


@functools.lru_cache(maxsize=None)
def _text(seed, tokens=5, dim=TEXT):
    """Conditioning embeddings; like a pipeline, every step passes the same tensor."""
    return torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed))


def _wan_family(cls, name, num_layers):
    """Wan and SkyReels-V2 share their configuration and call."""
    model = cls(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        in_channels=4, out_channels=4, text_dim=TEXT, freq_dim=16, ffn_dim=32,
        num_layers=num_layers, cross_attn_norm=True, rope_max_seq_len=32,
    )
    x = _latent(1, 4, 3, 8, 8)

    def make_inputs(t, seed):
        return dict(hidden_states=x, timestep=torch.tensor([t]),
                    encoder_hidden_states=_text(seed), return_dict=False)

    return TinyModel(name, model, make_inputs)


def wan(num_layers=2):
    from diffusers import WanTransformer3DModel

    return _wan_family(WanTransformer3DModel, "wan", num_layers)


def skyreels_v2(num_layers=2):
    from diffusers import SkyReelsV2Transformer3DModel

    return _wan_family(SkyReelsV2Transformer3DModel, "skyreels_v2", num_layers)


def hunyuan_video(num_layers=2):
    from diffusers import HunyuanVideoTransformer3DModel

    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        num_layers=num_layers, num_single_layers=num_layers, num_refiner_layers=1,
        mlp_ratio=2.0, patch_size=2, patch_size_t=1, text_embed_dim=TEXT,
        pooled_projection_dim=8, rope_axes_dim=(2, 2, 4), guidance_embeds=True,
    )
    x = _latent(1, 4, 3, 8, 8)

    def make_inputs(t, seed):
        return dict(hidden_states=x, timestep=torch.tensor([t]),
                    encoder_hidden_states=_text(seed),
                    encoder_attention_mask=torch.ones(1, 5),
                    pooled_projections=_text(seed, tokens=1, dim=8)[:, 0],
                    guidance=torch.tensor([3500.0]), return_dict=False)

    return TinyModel("hunyuan_video", model, make_inputs)


def hunyuan_video15(num_layers=2):
    from diffusers import HunyuanVideo15Transformer3DModel

    model = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        num_layers=num_layers, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1,
        patch_size_t=1, text_embed_dim=TEXT, text_embed_2_dim=8, image_embed_dim=8,
        rope_axes_dim=(2, 2, 4), task_type="t2v",
    )
    x = _latent(1, 9, 3, 4, 4)

    def make_inputs(t, seed):
        return dict(hidden_states=x, timestep=torch.tensor([t]),
                    encoder_hidden_states=_text(seed),
                    encoder_attention_mask=torch.ones(1, 5),
                    encoder_hidden_states_2=_text(seed + 7, tokens=3, dim=8),
                    encoder_attention_mask_2=torch.ones(1, 3),
                    image_embeds=torch.zeros(1, 2, 8), return_dict=False)

    return TinyModel("hunyuan_video15", model, make_inputs)


def cogvideox(num_layers=2):
    from diffusers import CogVideoXTransformer3DModel

    model = CogVideoXTransformer3DModel(
        num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=4, out_channels=4,
        time_embed_dim=16, text_embed_dim=TEXT, num_layers=num_layers, sample_width=8,
        sample_height=8, sample_frames=9, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=5,
    )
    x = _latent(1, 3, 4, 8, 8)  # frames before channels

    def make_inputs(t, seed):
        return dict(hidden_states=x, encoder_hidden_states=_text(seed),
                    timestep=torch.tensor([t]), return_dict=False)

    return TinyModel("cogvideox", model, make_inputs)


def ltx_video(num_layers=2):
    from diffusers import LTXVideoTransformer3DModel

    model = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
        num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, cross_attention_dim=TEXT,
        num_layers=num_layers, caption_channels=TEXT,
    )
    x = _latent(1, 3 * 4 * 4, 8)  # packed tokens

    def make_inputs(t, seed):
        return dict(hidden_states=x, encoder_hidden_states=_text(seed),
                    timestep=torch.tensor([t]), encoder_attention_mask=torch.ones(1, 5),
                    num_frames=3, height=4, width=4, return_dict=False)

    return TinyModel("ltx_video", model, make_inputs)


def flux(num_layers=2):
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(
        patch_size=1, in_channels=8, num_layers=num_layers, num_single_layers=num_layers,
        attention_head_dim=HEAD_DIM, num_attention_heads=HEADS, joint_attention_dim=TEXT,
        pooled_projection_dim=8, axes_dims_rope=(2, 2, 4),
    )
    x = _latent(1, 16, 8)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(4.0), torch.arange(4.0),
                                         indexing="ij"), -1).reshape(16, 3)

    def make_inputs(t, seed):
        return dict(hidden_states=x, encoder_hidden_states=_text(seed),
                    pooled_projections=_text(seed, tokens=1, dim=8)[:, 0],
                    timestep=torch.tensor([t / 1000.0]), img_ids=img_ids,
                    txt_ids=torch.zeros(5, 3), return_dict=False)

    return TinyModel("flux", model, make_inputs, timestep_scale=1e-3)


def qwen_image(num_layers=2):
    from diffusers import QwenImageTransformer2DModel

    model = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=num_layers,
        attention_head_dim=HEAD_DIM, num_attention_heads=HEADS, joint_attention_dim=TEXT,
        axes_dims_rope=(2, 2, 4),
    )
    x = _latent(1, 16, 16)  # 4x4 patches of 2x2x4 channels

    def make_inputs(t, seed):
        return dict(hidden_states=x, encoder_hidden_states=_text(seed),
                    encoder_hidden_states_mask=torch.ones(1, 5),
                    timestep=torch.tensor([t / 1000.0]), img_shapes=[(1, 4, 4)],
                    return_dict=False)

    return TinyModel("qwen_image", model, make_inputs, timestep_scale=1e-3)


class PlainBlock(nn.Module):
    """A pre-norm transformer block with timestep modulation."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.modulation = nn.Linear(dim, 2 * dim)

    def forward(self, x, temb, context):
        shift, scale = self.modulation(temb).unsqueeze(1).chunk(2, dim=-1)
        h = self.norm(x) * (1 + scale) + shift
        x = x + self.attn(h, context, context, need_weights=False)[0]
        return x + self.mlp(self.norm(x))


class PlainDiT(nn.Module):
    """A DiT written with plain torch modules: patchify, blocks, unpatchify."""

    def __init__(self, channels=4, dim=16, depth=3, patch=2):
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.time = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.text = nn.Linear(TEXT, dim)
        self.blocks = nn.ModuleList(PlainBlock(dim) for _ in range(depth))
        self.out = nn.Linear(dim, channels * patch * patch)

    def forward(self, hidden_states, timestep, encoder_hidden_states):
        b, c, h, w = hidden_states.shape
        x = self.embed(hidden_states).flatten(2).transpose(1, 2)
        temb = self.time(timestep.reshape(-1, 1) / 1000.0)
        context = self.text(encoder_hidden_states)
        for block in self.blocks:
            x = block(x, temb, context)
        x = self.out(x).reshape(b, h // self.patch, w // self.patch, c, self.patch, self.patch)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def plain_dit(num_layers=3):
    model = PlainDiT(depth=num_layers)
    x = _latent(1, 4, 8, 8)

    def make_inputs(t, seed):
        return dict(hidden_states=x, timestep=torch.tensor([t]),
                    encoder_hidden_states=_text(seed))

    return TinyModel("plain_dit", model, make_inputs)


ALL = {
    f.__name__: f
    for f in (wan, skyreels_v2, hunyuan_video, hunyuan_video15, cogvideox, ltx_video, flux,
              qwen_image, plain_dit)
}


def build(name: str, num_layers: int | None = None, seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    factory = ALL[name]
    tiny = factory() if num_layers is None else factory(num_layers=num_layers)
    tiny.model.eval()
    return tiny


def first_output(result):
    """The denoiser's prediction from a ``return_dict=False`` call or a bare tensor."""
    return result[0] if isinstance(result, (tuple, list)) else result


@dataclass
class Captured:
    gm: torch.fx.GraphModule
    example_inputs: list
    names: list  # forward argument name per graph input (None: parameter or buffer)
    weights: tuple  # (input index, module path) of one parameter


def capture_graph(model: nn.Module, inputs: dict) -> Captured:
    """The Dynamo graph of ``model(**inputs)`` (one graph expected), with what the backend
    reads while Dynamo still has it (argument sources are gone once the backend returns)."""
    from pc_compile.capture import input_names, weights_input

    captured = []

    def record(gm, example_inputs):
        names = input_names(gm, model)
        captured.append(Captured(gm, list(example_inputs), names,
                                 weights_input(gm, example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=record, fullgraph=True)(**inputs)
    assert len(captured) == 1, f"expected one graph, Dynamo produced {len(captured)}"
    return captured[0]
