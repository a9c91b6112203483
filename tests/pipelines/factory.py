"""Diffusers pipelines built offline from tiny configurations, with random weights.

No text encoder, tokenizer or VAE is loaded: each pipeline gets its prompt embeddings (and the
negative ones, so that guidance runs) as tensors, and returns latents (``output_type="latent"``),
so nothing is decoded. The transformers are those of ``tests/tiny_models.py``; the schedulers are
the ones users pair with each pipeline. ``Tiny.run`` calls the pipeline with a resolution, batch
size and step count and returns the latents.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch

from tests import tiny_models

TEXT = tiny_models.TEXT
TOKENS = 5


@functools.lru_cache(maxsize=None)
def _embedding(seed: int, tokens: int = TOKENS, dim: int = TEXT) -> torch.Tensor:
    return torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed))


def schedulers() -> dict[str, Callable[[], object]]:
    """The flow-matching schedulers a user may pick for Wan-like pipelines, by short name."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        FlowMatchHeunDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    return {
        "unipc": lambda: UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                 use_flow_sigmas=True, flow_shift=3.0),
        "euler": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
        "heun": lambda: FlowMatchHeunDiscreteScheduler(shift=3.0),
        "dpm": lambda: DPMSolverMultistepScheduler(prediction_type="flow_prediction",
                                                   use_flow_sigmas=True, flow_shift=3.0),
    }


def cogvideox_schedulers() -> dict[str, Callable[[], object]]:
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    common = dict(prediction_type="v_prediction", timestep_spacing="trailing",
                  rescale_betas_zero_snr=True, snr_shift_scale=1.0)
    return {
        "ddim": lambda: CogVideoXDDIMScheduler(**common),
        "cogdpm": lambda: CogVideoXDPMScheduler(**common),
    }


@dataclass
class Tiny:
    """A pipeline and how to call it: ``sizes`` are the (height, width[, frames]) of the
    resolutions A, B, C in pixels, ``call(pipe, size, batch, steps, **extra)`` returns latents."""

    name: str
    pipe: object
    sizes: dict[str, tuple]
    call: Callable
    scheduler: str
    transformers: tuple[str, ...] = ("transformer",)
    extra: dict = field(default_factory=dict)

    def run(self, size: str = "A", batch: int = 1, steps: int = 4, seed: int = 0, **extra):
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return self.call(self.pipe, self.sizes[size], batch, steps, generator=generator,
                             **extra)


def _guided(pipe_kwargs: dict, batch: int) -> dict:
    """Prompt embeddings for ``batch`` prompts, repeated from one (same tensor every step)."""
    return {k: (v.repeat(batch, *[1] * (v.dim() - 1)) if isinstance(v, torch.Tensor) else v)
            for k, v in pipe_kwargs.items()}


def wan(scheduler: str = "unipc", two_experts: bool = False) -> Tiny:
    from diffusers import WanPipeline

    transformer = tiny_models.build("wan").model
    extra = {}
    if two_experts:
        extra = dict(transformer_2=tiny_models.build("wan", seed=1).model, boundary_ratio=0.6)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                       scheduler=schedulers()[scheduler](), **extra)
    pipe.set_progress_bar_config(disable=True)
    embeds = dict(prompt_embeds=_embedding(1), negative_prompt_embeds=_embedding(2))

    def call(pipe, size, batch, steps, **kw):
        h, w, f = size
        return pipe(height=h, width=w, num_frames=f, guidance_scale=5.0,
                    num_inference_steps=steps, output_type="latent",
                    **_guided(embeds, batch), **kw).frames

    names = ("transformer", "transformer_2") if two_experts else ("transformer",)
    # Latent (F, H, W) = ((f - 1) / 4 + 1, h / 8, w / 8); a multiple of 16 pixels per patch.
    return Tiny("wan2.2" if two_experts else "wan", pipe,
                {"A": (64, 64, 9), "B": (48, 80, 9), "C": (32, 96, 5)}, call, scheduler, names)


def cogvideox(scheduler: str = "ddim") -> Tiny:
    from diffusers import CogVideoXPipeline

    transformer = tiny_models.build("cogvideox").model
    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None,
                             transformer=transformer,
                             scheduler=cogvideox_schedulers()[scheduler]())
    pipe.set_progress_bar_config(disable=True)
    embeds = dict(prompt_embeds=_embedding(1), negative_prompt_embeds=_embedding(2))

    def call(pipe, size, batch, steps, **kw):
        h, w, f = size
        return pipe(height=h, width=w, num_frames=f, guidance_scale=6.0,
                    num_inference_steps=steps, output_type="latent",
                    **_guided(embeds, batch), **kw).frames

    return Tiny("cogvideox", pipe, {"A": (64, 64, 9), "B": (48, 80, 9), "C": (32, 96, 5)},
                call, scheduler)


def ltx(scheduler: str = "euler") -> Tiny:
    from diffusers import LTXPipeline

    transformer = tiny_models.build("ltx_video").model
    pipe = LTXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                       scheduler=schedulers()[scheduler]())
    pipe.set_progress_bar_config(disable=True)
    mask = torch.ones(1, TOKENS)
    embeds = dict(prompt_embeds=_embedding(1), negative_prompt_embeds=_embedding(2),
                  prompt_attention_mask=mask, negative_prompt_attention_mask=mask)

    def call(pipe, size, batch, steps, **kw):
        h, w, f = size
        return pipe(height=h, width=w, num_frames=f, guidance_scale=3.0,
                    num_inference_steps=steps, output_type="latent",
                    **_guided(embeds, batch), **kw).frames

    # Without a VAE the pipeline compresses 32x in space and 8x in time.
    return Tiny("ltx", pipe, {"A": (128, 128, 17), "B": (96, 160, 17), "C": (64, 192, 9)},
                call, scheduler)


def flux(scheduler: str = "euler") -> Tiny:
    from diffusers import FluxPipeline

    transformer = tiny_models.build("flux").model
    pipe = FluxPipeline(tokenizer=None, text_encoder=None, tokenizer_2=None, text_encoder_2=None,
                        vae=None, transformer=transformer, scheduler=schedulers()[scheduler]())
    pipe.set_progress_bar_config(disable=True)
    pooled = _embedding(3, tokens=1, dim=8)[:, 0]
    embeds = dict(prompt_embeds=_embedding(1), pooled_prompt_embeds=pooled,
                  negative_prompt_embeds=_embedding(2), negative_pooled_prompt_embeds=-pooled)

    def call(pipe, size, batch, steps, **kw):
        h, w = size
        return pipe(height=h, width=w, true_cfg_scale=4.0, num_inference_steps=steps,
                    output_type="latent", max_sequence_length=TOKENS,
                    **_guided(embeds, batch), **kw).images

    # in_channels 8 = 2 x 2 packing of 2 latent channels; latent is h / 8, packed / 2.
    return Tiny("flux", pipe, {"A": (64, 64), "B": (48, 80), "C": (32, 96)}, call, scheduler)


def qwen_image(scheduler: str = "euler") -> Tiny:
    from diffusers import QwenImagePipeline

    transformer = tiny_models.build("qwen_image").model
    pipe = QwenImagePipeline(tokenizer=None, text_encoder=None, vae=None,
                             transformer=transformer, scheduler=schedulers()[scheduler]())
    pipe.set_progress_bar_config(disable=True)
    mask = torch.ones(1, TOKENS, dtype=torch.long)
    embeds = dict(prompt_embeds=_embedding(1), prompt_embeds_mask=mask,
                  negative_prompt_embeds=_embedding(2), negative_prompt_embeds_mask=mask)

    def call(pipe, size, batch, steps, **kw):
        h, w = size
        return pipe(height=h, width=w, true_cfg_scale=4.0, num_inference_steps=steps,
                    output_type="latent", **_guided(embeds, batch), **kw).images

    return Tiny("qwenimage", pipe, {"A": (64, 64), "B": (48, 80), "C": (32, 96)}, call,
                scheduler)


def hunyuan_video(scheduler: str = "euler") -> Tiny:
    from diffusers import HunyuanVideoPipeline

    transformer = tiny_models.build("hunyuan_video").model
    pipe = HunyuanVideoPipeline(tokenizer=None, text_encoder=None, tokenizer_2=None,
                                text_encoder_2=None, vae=None, transformer=transformer,
                                scheduler=schedulers()[scheduler]())
    pipe.set_progress_bar_config(disable=True)
    pooled = _embedding(3, tokens=1, dim=8)[:, 0]
    mask = torch.ones(1, TOKENS)
    embeds = dict(prompt_embeds=_embedding(1), pooled_prompt_embeds=pooled,
                  prompt_attention_mask=mask, negative_prompt_embeds=_embedding(2),
                  negative_pooled_prompt_embeds=-pooled, negative_prompt_attention_mask=mask)

    def call(pipe, size, batch, steps, **kw):
        h, w, f = size
        return pipe(height=h, width=w, num_frames=f, true_cfg_scale=4.0, guidance_scale=6.0,
                    num_inference_steps=steps, output_type="latent",
                    **_guided(embeds, batch), **kw).frames

    return Tiny("hunyuanvideo", pipe, {"A": (64, 64, 9), "B": (48, 80, 9), "C": (32, 96, 5)},
                call, scheduler)


PIPELINES = {
    "wan": wan,
    "wan2.2": functools.partial(wan, two_experts=True),
    "cogvideox": cogvideox,
    "ltx": ltx,
    "flux": flux,
    "qwenimage": qwen_image,
    "hunyuanvideo": hunyuan_video,
}


def build(name: str, scheduler: str | None = None) -> Tiny:
    factory = PIPELINES[name]
    return factory() if scheduler is None else factory(scheduler)


def compile_transformers(tiny: Tiny, backend="precisecache", options=None, dynamic=None,
                         in_place: bool = False):
    """Replace each transformer of the pipeline by its compiled form, or compile it in place
    (``module.compile``: what accelerate's offload hooks and diffusers' LoRA methods need);
    returns them by name."""
    compiled = {}
    for name in tiny.transformers:
        module = getattr(tiny.pipe, name)
        kwargs = {"options": options} if options is not None else {}
        if in_place:
            module.compile(backend=backend, dynamic=dynamic, **kwargs)
            compiled[name] = module
            continue
        compiled[name] = torch.compile(module, backend=backend, dynamic=dynamic, **kwargs)
        setattr(tiny.pipe, name, compiled[name])
    return compiled


def interrupt_after(steps: int):
    """A ``callback_on_step_end`` that interrupts the generation after ``steps`` steps."""

    def callback(pipe, step, timestep, kwargs):
        if step + 1 >= steps:
            pipe._interrupt = True
        return kwargs

    return callback
