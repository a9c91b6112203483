"""The benchmark's method registry.

A method is a name, a factory and the settings it is swept over::

    register(Method(
        name="first-block-cache",
        make=lambda model, setting, env: ...,   # -> MethodRun
        sweep=[0.05, 0.1, 0.2],                 # default (coarse) sweep
        full_sweep=[...],                       # with --full
    ))

``make(model, setting, env)`` receives a private copy of the reference model (it may register
hooks on it or compile it) and returns a ``MethodRun``:

- ``fn``: the transformer callable used by ``sampling.sample`` (see ``sampling.TransformerFn``),
- ``stats()``: a dict; if it holds ``compute_fraction`` (set ``self_counted=True`` on the method)
  the runner takes that number, otherwise the runner counts executed blocks itself with
  ``counting.BlockCounter``; an optional ``trace``, a list of per-call dicts with ``branch``,
  ``step``, ``metric``, ``threshold`` and ``skip``, feeds the schedule plot,
- ``reset()``: called before every generation; each generation starts from fresh cache state.

``env`` gives ``info`` (the model's info dict), ``scheduler``, ``steps``, ``guidance``, ``shift``
and ``calibration(key, fn)``: ``fn(env)`` computed once per (model, scheduler, steps, guidance,
shift, key) and cached (MagCache ratios, the TeaCache-style polynomial).

Only registered methods produce rows: a method that is not available (e.g. the project's own
backend before it lands) is simply not registered. A project method is a few lines, e.g.::

    register(compiled_method("precisecache-turbo", backend_for=lambda a: pc_compile.backend(
        Config(preset="turbo", alpha=a)), stats=pc_compile.stats, reset=pc_compile.reset,
        sweep=[0.5, 0.7, 0.9]))
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import sampling
from .peers.teacache import TeaCache, fit
from .peers.uniform import UniformSkip


@dataclass
class MethodRun:
    fn: sampling.TransformerFn
    stats: Callable[[], dict] = dict
    reset: Callable[[], None] = lambda: None


@dataclass
class Method:
    name: str
    make: Callable[[torch.nn.Module, Any, "Env"], MethodRun]
    sweep: list
    full_sweep: list | None = None
    mode: str = "eager"  # "eager" or "compiled"
    self_counted: bool = False  # stats() gives compute_fraction
    batched_cfg: bool = False  # one call per step on the [uncond, cond] batch
    setting_name: str = "threshold"
    notes: str = ""
    supports: Callable[[dict], bool] = lambda info: True

    def settings(self, full: bool) -> list:
        return list(self.full_sweep if (full and self.full_sweep) else self.sweep)


@dataclass
class Env:
    info: dict
    scheduler: str
    steps: int
    base_model: torch.nn.Module
    cache: dict = field(default_factory=dict)
    calib_labels: tuple[int, ...] = (2, 5)
    calib_seed: int = 1000
    guidance: float = 5.0
    shift: float = 3.0

    def calibration(self, key: str, fn: Callable[["Env"], Any]) -> Any:
        k = (self.info["name"], self.scheduler, self.steps, self.guidance, self.shift, key)
        if k not in self.cache:
            self.cache[k] = fn(self)
        return self.cache[k]

    def fresh_model(self) -> torch.nn.Module:
        return copy.deepcopy(self.base_model)


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} registered twice")
    REGISTRY[method.name] = method
    return method


def compiled_method(
    name: str,
    backend_for: Callable[[Any], Callable],
    stats: Callable[[torch.nn.Module], dict],
    reset: Callable[[torch.nn.Module], None],
    sweep: list,
    full_sweep: list | None = None,
    setting_name: str = "setting",
    notes: str = "",
) -> Method:
    """A method given by a torch.compile backend whose stats report ``compute_fraction``."""

    def make(model, setting, env):
        compiled = torch.compile(model, backend=backend_for(setting))
        return MethodRun(
            fn=sampling.plain(compiled),
            stats=lambda: dict(stats(compiled)),
            reset=lambda: reset(compiled),
        )

    return Method(name, make, sweep, full_sweep, mode="compiled", self_counted=True,
                  setting_name=setting_name, notes=notes)


# ---------------------------------------------------------------------------------------------
# diffusers cache hooks (diffusers.hooks, 0.42.1), run eagerly.


def _hooked(model: torch.nn.Module, config, timestep_box: list | None = None) -> MethodRun:
    """Enable a diffusers cache config on ``model`` and wrap calls in ``cache_context``."""
    from diffusers.hooks import HookRegistry

    model.enable_cache(config)
    forward = sampling.plain(model)

    def fn(hidden_states, timestep, encoder_hidden_states, ctx):
        if timestep_box is not None:
            timestep_box[0] = float(timestep.flatten()[0])
        with model.cache_context(
            ctx.name,
            step_index=ctx.step_index,
            num_inference_steps=ctx.num_inference_steps,
            sigma=ctx.sigma,
        ):
            return forward(hidden_states, timestep, encoder_hidden_states, ctx)

    def reset():
        HookRegistry.check_if_exists_or_initialize(model).reset_stateful_hooks(recurse=True)

    return MethodRun(fn=fn, reset=reset)


def _first_block_cache(model, threshold, env):
    from diffusers.hooks import FirstBlockCacheConfig

    return _hooked(model, FirstBlockCacheConfig(threshold=threshold))


_MAG_PRINT = re.compile(r"\[MagCache\] Calibration Complete.*?\n(\[.*?\])", re.S)


def calibrate_magcache(env: Env) -> list[float]:
    """Run diffusers' MagCache calibration mode; average the cond/uncond ratio lists."""
    from diffusers.hooks import MagCacheConfig

    model = env.fresh_model()
    run = _hooked(model, MagCacheConfig(calibrate=True, num_inference_steps=env.steps))
    lists = []
    for label in env.calib_labels:
        run.reset()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            sampling.sample(run.fn, env.info, label, env.calib_seed + label, env.scheduler,
                            env.steps, env.guidance, shift=env.shift)
        found = [ast.literal_eval(m) for m in _MAG_PRINT.findall(buf.getvalue())]
        if len(found) != 2:
            raise RuntimeError(f"expected 2 MagCache calibration prints, got {len(found)}")
        lists.extend(found)
    n = len(lists)
    return [sum(v[i] for v in lists) / n for i in range(env.steps)]


def _magcache(model, threshold, env):
    from diffusers.hooks import MagCacheConfig

    ratios = env.calibration("magcache", calibrate_magcache)
    cfg = MagCacheConfig(threshold=threshold, num_inference_steps=env.steps, mag_ratios=ratios)
    return _hooked(model, cfg)


def _taylorseer(model, interval, env):
    from diffusers.hooks import TaylorSeerCacheConfig

    attr = env.info["blocks_attr"]
    cfg = TaylorSeerCacheConfig(
        cache_interval=interval,
        disable_cache_before_step=3,
        max_order=1,
        taylor_factors_dtype=torch.float32,
        cache_identifiers=[rf"{attr}\.\d+"],
    )
    return _hooked(model, cfg)


def _pab(model, skip_range, env):
    from diffusers.hooks import PyramidAttentionBroadcastConfig

    box = [1000.0]
    cfg = PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=skip_range,
        spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=lambda: box[0],
    )
    return _hooked(model, cfg, timestep_box=box)


def _seacache(model, threshold, env):
    from diffusers.hooks import SeaCacheConfig

    kwargs = {}
    if env.info["arch"] == "cogvideox":
        # Latents are (B, F, C, H, W); SeaCache wants each sample's video as (C, T, H, W).
        kwargs["raw_vision_callback"] = _cog_raw_vision
    return _hooked(model, SeaCacheConfig(threshold=threshold, **kwargs))


def _fastercache(model, skip_range, env):
    from diffusers.hooks import FasterCacheConfig

    box = [1000.0]
    cfg = FasterCacheConfig(
        spatial_attention_block_skip_range=skip_range,
        current_timestep_callback=lambda: box[0],
        tensor_format=env.info["layout"],
        is_guidance_distilled=False,
    )
    return _hooked(model, cfg, timestep_box=box)


def _cog_raw_vision(module, args, kwargs):
    hs = kwargs.get("hidden_states", args[0] if args else None)
    if not isinstance(hs, torch.Tensor) or hs.ndim != 5:
        return None
    return list(hs.transpose(1, 2).unbind(0))


# ---------------------------------------------------------------------------------------------
# peers written for the benchmark (benchmarks/peers)


def calibrate_teacache(env: Env) -> list[float]:
    model = env.fresh_model()
    tc = TeaCache(model, env.info, threshold=0.0, coeffs=None, calibrating=True)
    for label in env.calib_labels:
        tc.reset()
        sampling.sample(tc.fn, env.info, label, env.calib_seed + label, env.scheduler, env.steps,
                        env.guidance, shift=env.shift)
    return fit(tc.state.pairs)


def _teacache(model, threshold, env):
    coeffs = env.calibration("teacache", calibrate_teacache)
    tc = TeaCache(model, env.info, threshold=threshold, coeffs=coeffs)
    return MethodRun(fn=tc.fn, stats=tc.stats, reset=tc.reset)


def _uniform(order: int):
    def make(model, fraction, env):
        u = UniformSkip(model, fraction, order=order)
        return MethodRun(fn=u.fn, stats=lambda: {"full_calls": u.stats()["full_calls"]},
                         reset=u.reset)

    return make


# The presets' compute budgets (base 0.63, turbo 0.465, flash 0.38) and a few around them.
UNIFORM_SWEEP = [0.75, 0.63, 0.55, 0.465, 0.38, 0.3]
UNIFORM_FULL_SWEEP = [0.9, 0.75, 0.7, 0.63, 0.55, 0.5, 0.465, 0.43, 0.38, 0.3, 0.25, 0.2]

register(Method("uniform", _uniform(0), sweep=[0.75, 0.5, 0.37],
                full_sweep=[0.9, 0.75, 0.6, 0.5, 0.43, 0.37, 0.3, 0.25, 0.2],
                setting_name="full-step fraction",
                notes="evenly spaced full steps, last output reused (bench peer)"))
register(Method("uniform+linear", _uniform(1), sweep=UNIFORM_SWEEP,
                full_sweep=UNIFORM_FULL_SWEEP, setting_name="full-step fraction",
                notes="evenly spaced full steps (first and last computed), skipped steps "
                "extrapolated linearly in the timestep from the branch's last two computed "
                "outputs (bench baseline)"))
register(Method("uniform+quadratic", _uniform(2), sweep=UNIFORM_SWEEP,
                full_sweep=UNIFORM_FULL_SWEEP, setting_name="full-step fraction",
                notes="evenly spaced full steps (first and last computed), skipped steps "
                "extrapolated by the parabola in the timestep through the branch's last three "
                "computed outputs (bench baseline)"))
register(Method("teacache-style", _teacache, sweep=[0.02, 0.04, 0.08],
                full_sweep=[0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2],
                notes="rel-L1 of modulated first-block input, fitted polynomial (bench peer)"))
register(Method("first-block-cache", _first_block_cache, sweep=[0.05, 0.1, 0.2],
                full_sweep=[0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4],
                notes="diffusers FirstBlockCacheConfig"))
register(Method("magcache", _magcache, sweep=[0.02, 0.06, 0.24],
                full_sweep=[0.01, 0.02, 0.04, 0.06, 0.09, 0.12, 0.18, 0.24, 0.4],
                notes="diffusers MagCacheConfig, ratios from its calibration mode"))
register(Method("taylorseer", _taylorseer, sweep=[2, 3], full_sweep=[2, 3, 4, 5, 6, 8],
                setting_name="cache_interval",
                notes="diffusers TaylorSeerCacheConfig on whole blocks, order 1, fp32 factors"))
register(Method("pab", _pab, sweep=[2], full_sweep=[2, 3, 4, 6],
                setting_name="spatial skip range",
                notes="diffusers PyramidAttentionBroadcastConfig, timesteps (100, 800)"))
register(Method("fastercache", _fastercache, sweep=[2], full_sweep=[2, 3, 4, 6],
                setting_name="spatial skip range", batched_cfg=True,
                notes="diffusers FasterCacheConfig (defaults otherwise); needs batched guidance, "
                "so it runs with one [uncond, cond] call per step"))
register(Method("seacache", _seacache, sweep=[0.1, 0.15, 0.25, 0.5],
                full_sweep=[0.05, 0.1, 0.25, 0.5, 1.0, 2.0], notes="diffusers SeaCacheConfig"))
