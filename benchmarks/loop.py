"""A pipeline-shaped denoising loop over a Wan transformer, shared by the GPU and CPU scripts.

What it mirrors of diffusers' WanPipeline (0.42.1): the timesteps are one device tensor and each
step passes ``t.expand(batch)``; guidance is two calls per step, cond then uncond, each inside
``transformer.cache_context(name)``, with the same latent (cast to the transformer's dtype) and
the same conditioning tensors at every step; the latent is kept in float32 and moved by a
flow-matching Euler step on the guided prediction. No scheduler object: the sigmas are the
shifted flow-matching schedule as Python floats, so the loop itself never reads the device.

Model sizes (``WAN_SIZES``), all WanTransformer3DModel with random weights:

* ``1.3b``: Wan2.1-T2V-1.3B's configuration (30 blocks, 12 heads x 128, ffn 8960, text 4096),
  latent 1x16x21x60x104 (480x832, 81 frames: 32,760 tokens), 512 text tokens;
* ``small``: the same network on a 1x16x9x30x52 latent (3,510 tokens), 512 text tokens;
* ``mid``: 6 blocks, 6 heads x 128 (width 768), ffn 3072, latent 1x16x5x32x32 (1,280 tokens),
  128 text tokens of 4096: the CPU overhead measurement;
* ``tiny``: 2 blocks, width 16: CPU smoke runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class WanSize:
    config: dict
    latent: tuple[int, int, int, int, int]  # (B, C, F, H, W)
    text_tokens: int
    note: str = ""

    @property
    def tokens(self) -> int:
        _, _, f, h, w = self.latent
        pt, ph, pw = self.config["patch_size"]
        return (f // pt) * (h // ph) * (w // pw)


_WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)

WAN_SIZES = {
    "1.3b": WanSize(_WAN_1_3B, (1, 16, 21, 60, 104), 512, "Wan2.1-1.3B, 480x832x81"),
    "small": WanSize(_WAN_1_3B, (1, 16, 9, 30, 52), 512, "Wan2.1-1.3B, 240x416x33"),
    "mid": WanSize(
        dict(_WAN_1_3B, num_attention_heads=6, ffn_dim=3072, num_layers=6),
        (1, 16, 5, 32, 32), 128, "6 blocks, width 768, 1,280 tokens",
    ),
    "tiny": WanSize(
        dict(_WAN_1_3B, num_attention_heads=2, attention_head_dim=8, in_channels=4,
             out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
             rope_max_seq_len=32),
        (1, 4, 3, 8, 8), 5, "2 blocks, width 16",
    ),
}


def build_wan(size: WanSize, device="cpu", dtype=torch.float32, seed: int = 0):
    """A randomly initialised WanTransformer3DModel of ``size``, in eval mode, on ``device``.

    In a lower precision, the parameters of the modules the class keeps in float32
    (``_keep_in_fp32_modules``: norms, the time embedder, rope) stay in float32, as
    ``from_pretrained(torch_dtype=...)`` leaves them."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = WanTransformer3DModel(**size.config)
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    for name, param in model.named_parameters():
        if dtype == torch.float32 or any(k in name.split(".") for k in keep):
            param.data = param.data.float()
        else:
            param.data = param.data.to(dtype)
    # Anything the constructor made outside the device context (buffers made on the CPU).
    model = model.to(device).eval().requires_grad_(False)
    if hasattr(model, "cache_context"):
        # The first cache_context() attaches diffusers' hook registry to the module: do it
        # before any compilation, so that no later call changes the module's attributes.
        with model.cache_context("cond"):
            pass
    return model


@dataclass
class Inputs:
    """One generation's starting noise and conditioning (made once, passed at every step)."""

    noise: torch.Tensor  # float32, the latent at sigma = 1
    cond: torch.Tensor
    uncond: torch.Tensor


def make_inputs(size: WanSize, device="cpu", dtype=torch.float32, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(1000 + seed)
    noise = torch.randn(*size.latent, generator=g)
    dim = size.config["text_dim"]
    cond = torch.randn(1, size.text_tokens, dim, generator=g)
    uncond = torch.randn(1, size.text_tokens, dim, generator=g) * 0.5
    return Inputs(noise.to(device), cond.to(device, dtype), uncond.to(device, dtype))


def flow_sigmas(steps: int, shift: float = 3.0) -> list[float]:
    """The shifted flow-matching schedule, from 1 to 0 (steps + 1 values)."""
    sigmas = [1.0 - i / steps for i in range(steps + 1)]
    return [shift * s / (1 + (shift - 1) * s) for s in sigmas]


@dataclass
class Loop:
    """Runs one generation: ``loop(model, inputs)`` returns the final latent (float32).

    ``around(step, branch)`` returns a context manager entered around each denoiser call
    (counting, timing); ``mark_step`` calls ``torch.compiler.cudagraph_mark_step_begin()``
    before each call (CUDA-graph trees: the previous call's outputs were consumed)."""

    steps: int = 20
    guidance: float = 5.0
    shift: float = 3.0
    mark_step: bool = False
    around: Callable[[int, str], contextlib.AbstractContextManager] | None = None
    after_step: Callable[[int], None] | None = None
    calls: int = field(default=0, init=False)

    def __call__(self, model, inputs: Inputs, dtype=None) -> torch.Tensor:
        dtype = dtype or inputs.cond.dtype
        sigmas = flow_sigmas(self.steps, self.shift)
        device = inputs.noise.device
        timesteps = torch.tensor([s * 1000.0 for s in sigmas[:-1]], device=device)
        x = inputs.noise.clone()
        names = hasattr(model, "cache_context")
        for i in range(self.steps):
            t = timesteps[i].expand(x.shape[0])
            latent = x.to(dtype)
            predictions = []
            for branch, text in (("cond", inputs.cond), ("uncond", inputs.uncond)):
                with contextlib.ExitStack() as stack:
                    if names:
                        stack.enter_context(model.cache_context(branch))
                    if self.around is not None:
                        stack.enter_context(self.around(i, branch))
                    if self.mark_step:
                        torch.compiler.cudagraph_mark_step_begin()
                    out = model(hidden_states=latent, timestep=t, encoder_hidden_states=text,
                                return_dict=False)[0]
                    # Consumed before the next call, as a pipeline does with its guidance
                    # arithmetic (a CUDA-graph replay may reuse the output's memory).
                    if out.dtype != torch.float32:
                        out = out.float()
                    elif self.mark_step:
                        out = out.clone()
                    predictions.append(out)
                self.calls += 1
            cond, uncond = predictions
            v = uncond + self.guidance * (cond - uncond)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
            if self.after_step is not None:
                self.after_step(i)
        return x


def compiled_wan(options: dict, size: str = "tiny"):
    """``(model, inputs, compiled)``: a fresh Wan transformer of ``WAN_SIZES[size]`` compiled
    by the precisecache backend with ``options`` (Dynamo reset first, so nothing of an earlier
    model is reused)."""
    torch._dynamo.reset()
    wan = WAN_SIZES[size]
    model, inputs = build_wan(wan), make_inputs(wan)
    return model, inputs, torch.compile(model, backend="precisecache", options=options)
