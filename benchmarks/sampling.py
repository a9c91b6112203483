"""Sampling loops on the reference models.

``sample(fn, info, label, seed, scheduler, steps)`` denoises one latent video with
classifier-free guidance done as two separate transformer calls per step, conditional first and
then unconditional, on the same latent and timestep (as diffusers' ``WanPipeline`` does).

``fn`` is a *transformer callable*: ``fn(hidden_states, timestep, encoder_hidden_states, ctx)``
returning the model's prediction in the model's own latent layout. ``ctx`` is a ``CallContext``
(branch name ``"cond"``/``"uncond"``, step index, number of steps, sigma): methods that keep per-
branch state (diffusers' cache hooks key their state on it) read it, the others ignore it. The same
loop therefore runs every method; ``plain(model)`` is the uncached callable.

Schedulers (all flow matching, shift 3 unless ``shift`` says otherwise):
- ``euler``: ``FlowMatchEulerDiscreteScheduler(shift=3.0)``,
- ``unipc``: ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
  flow_shift=3.0)``, the configuration Wan 2.1 ships with,
- ``dpm``: DPM-Solver++ (flow), ``DPMSolverMultistepScheduler(prediction_type="flow_prediction",
  use_flow_sigmas=True, flow_shift=3.0, algorithm_type="dpmsolver++")``, second order, its last
  step first order (diffusers' defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import models

SCHEDULERS = ("euler", "unipc", "dpm")


@dataclass(frozen=True)
class CallContext:
    name: str  # "cond" or "uncond"
    step_index: int
    num_inference_steps: int
    sigma: float


TransformerFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, CallContext], torch.Tensor]


def plain(model: torch.nn.Module) -> TransformerFn:
    """The uncached callable: one forward of ``model`` per call."""

    def fn(hidden_states, timestep, encoder_hidden_states, ctx):
        return model(
            hidden_states=hidden_states,
            timestep=timestep,
            encoder_hidden_states=encoder_hidden_states,
            return_dict=False,
        )[0]

    return fn


def make_scheduler(name: str, shift: float = 3.0):
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            solver_order=2,
            final_sigmas_type="zero",
        )
    if name == "dpm":
        return DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
            algorithm_type="dpmsolver++",
            solver_order=2,
            final_sigmas_type="zero",
        )
    raise ValueError(f"unknown scheduler {name!r}; choose from {SCHEDULERS}")


def initial_noise(info: dict, seed: int, batch: int = 1) -> torch.Tensor:
    """The starting latent ``(B, C, F, H, W)`` for a seed (float32, CPU generator)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((batch, *info["latent_shape"]), generator=g)


@torch.no_grad()
def sample(
    fn: TransformerFn,
    info: dict,
    label: int,
    seed: int,
    scheduler: str = "euler",
    steps: int = 30,
    guidance: float = 5.0,
    dtype: torch.dtype = torch.float32,
    batched_cfg: bool = False,
    shift: float = 3.0,
) -> torch.Tensor:
    """Generate one video for class ``label``; returns the final latent ``(1, C, F, H, W)``.

    ``batched_cfg=True`` makes one call per step on the batch ``[uncond, cond]`` (branch name
    ``"batched"``) instead of two calls; only for methods that assume batched guidance.
    ``shift`` is the schedulers' timestep shift (3 everywhere in the benchmark's default setting).
    """
    sched = make_scheduler(scheduler, shift)
    sched.set_timesteps(steps)
    layout = info["layout"]
    latents = models.to_layout(initial_noise(info, seed), layout).to(dtype)
    cond = models.encoder_hidden_states(info, [label]).to(dtype)
    uncond = models.encoder_hidden_states(info, None).to(dtype)
    # The model takes float timesteps. UniPC and DPM-Solver++ keep integer ones: the schedule is
    # cast once, so that each step's timestep is a view of it, as WanPipeline's ``t.expand``
    # passes (a per-step cast would hand the model a copy, and hide the schedule from rules
    # that read it: design measurement 24).
    timesteps = sched.timesteps.to(torch.float32)
    for i, t in enumerate(sched.timesteps):
        timestep = timesteps[i].expand(latents.shape[0])
        sigma = float(sched.sigmas[i])
        if batched_cfg:
            both = fn(
                torch.cat([latents, latents]),
                timestep.repeat(2),
                torch.cat([uncond, cond]),
                CallContext("batched", i, steps, sigma),
            )
            pu, pc = both.chunk(2)
        else:
            pc = fn(latents, timestep, cond, CallContext("cond", i, steps, sigma))
            pu = fn(latents, timestep, uncond, CallContext("uncond", i, steps, sigma))
        pred = pu + guidance * (pc - pu)
        latents = sched.step(pred, t, latents, return_dict=False)[0]
    return models.from_layout(latents.float(), layout)
