"""A TeaCache-style step cache (Liu et al., "Timestep Embedding Tells", 2024), for the benchmark.

Rule, per guidance branch: at each call take the timestep-modulated input of the first block
(``m_t``: the first block's normalised hidden states after its adaptive shift/scale) and its
relative L1 change since the previous call, ``r_t = mean|m_t - m_(t-1)| / mean|m_(t-1)|``. A
polynomial ``p`` fitted on the reference model maps ``r_t`` to the relative L1 change of the
model's output; ``acc += p(r_t)``. While ``acc < threshold`` the blocks are skipped and the last
computed blocks' residual (last block output minus first block input) is added to the input; when
``acc`` reaches the threshold the blocks run, the residual is refreshed and ``acc`` restarts from 0.
The first and the last step always compute.

The hooks are registered through diffusers' public hook registry (``diffusers.hooks.HookRegistry``,
``ModelHook``) on the model's blocks; the rule itself is written here.

``methods.calibrate_teacache`` runs full generations with the hooks in recording mode and
``fit`` fits ``p`` (least squares, degree 2) on the pairs ``(r_t, output change)``. The last
step's pair is left out of the fit: that step always computes, and its output change (towards
sigma 0) is an outlier an order of magnitude above the others that would dominate the fit. A
negative ``p(r)`` is counted as 0.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch

_HEAD = "pc_bench_teacache_head"
_BODY = "pc_bench_teacache_body"


def modulated_input(arch: str, block: torch.nn.Module, bound: dict) -> torch.Tensor:
    """The first block's timestep-modulated input for the supported architectures."""
    h = bound["hidden_states"]
    if arch == "wan":
        temb = bound["temb"]
        if temb.ndim != 3:
            raise NotImplementedError("per-token timesteps (Wan 2.2 TI2V) are not supported")
        mod = block.scale_shift_table + temb.float()
        shift, scale = mod[:, 0:1], mod[:, 1:2]
        return block.norm1(h.float()) * (1 + scale) + shift
    if arch == "cogvideox":
        return block.norm1(h, bound["encoder_hidden_states"], bound["temb"])[0]
    raise NotImplementedError(arch)


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().mean() / b.abs().mean().clamp_min(1e-12)).item()


@dataclass
class _Branch:
    prev_mod: torch.Tensor | None = None
    acc: float = 0.0
    skip: bool = False
    res_h: torch.Tensor | None = None
    res_e: torch.Tensor | None = None
    in_h: torch.Tensor | None = None
    in_e: torch.Tensor | None = None
    prev_out: torch.Tensor | None = None


@dataclass
class TeaCacheState:
    threshold: float
    coeffs: list[float] | None  # polynomial, highest power first (numpy.polyval order)
    calibrating: bool = False
    branch: str = "cond"
    step: int = 0
    num_steps: int = 1
    branches: dict[str, _Branch] = field(default_factory=dict)
    trace: list[dict] = field(default_factory=list)
    pairs: list[tuple[float, float]] = field(default_factory=list)  # calibration samples
    pairs_pending: float | None = None

    def current(self) -> _Branch:
        return self.branches.setdefault(self.branch, _Branch())

    def reset(self) -> None:
        self.branches = {}
        self.trace = []


def _bind(module: torch.nn.Module, args, kwargs) -> dict:
    sig = inspect.signature(type(module).forward)
    return dict(sig.bind(module, *args, **kwargs).arguments)


def _returns_tuple(arch: str) -> bool:
    return arch == "cogvideox"  # CogVideoXBlock returns (hidden_states, encoder_hidden_states)


def _make_hooks(arch: str, state: TeaCacheState):
    from diffusers.hooks import ModelHook

    class Head(ModelHook):
        def new_forward(self, module, *args, **kwargs):
            b = _bind(module, args, kwargs)
            br = state.current()
            with torch.no_grad():
                mod = modulated_input(arch, module, b)
            first = br.prev_mod is None or state.step == 0
            last = state.step >= state.num_steps - 1
            r = None if br.prev_mod is None else rel_l1(mod, br.prev_mod)
            skip = False
            if state.calibrating:
                state.pairs_pending = r
            elif not (first or last or br.res_h is None):
                br.acc += max(0.0, float(np.polyval(state.coeffs, r)))
                skip = br.acc < state.threshold
            state.trace.append(
                {"branch": state.branch, "step": state.step, "rel_l1": r,
                 "metric": br.acc, "threshold": state.threshold, "skip": skip}
            )
            if not skip:
                br.acc = 0.0
            br.prev_mod = mod
            br.skip = skip
            h, e = b["hidden_states"], b.get("encoder_hidden_states")
            if skip:
                if _returns_tuple(arch):
                    return h + br.res_h, e + br.res_e
                return h + br.res_h
            br.in_h, br.in_e = h, e
            return self.fn_ref.original_forward(*args, **kwargs)

    class Body(ModelHook):
        def __init__(self, tail: bool):
            super().__init__()
            self.tail = tail

        def new_forward(self, module, *args, **kwargs):
            br = state.current()
            if br.skip:
                b = _bind(module, args, kwargs)
                if _returns_tuple(arch):
                    return b["hidden_states"], b["encoder_hidden_states"]
                return b["hidden_states"]
            out = self.fn_ref.original_forward(*args, **kwargs)
            if self.tail:
                if _returns_tuple(arch):
                    br.res_h = out[0] - br.in_h
                    br.res_e = out[1] - br.in_e
                else:
                    br.res_h = out - br.in_h
                br.in_h = br.in_e = None
            return out

    return Head, Body


class TeaCache:
    """Attach the rule to ``model``'s blocks; ``fn`` is the transformer callable for sampling."""

    def __init__(
        self,
        model: torch.nn.Module,
        info: dict,
        threshold: float,
        coeffs: list[float] | None,
        calibrating: bool = False,
    ):
        from diffusers.hooks import HookRegistry

        if coeffs is None and not calibrating:
            raise ValueError("TeaCache needs fitted coefficients (run calibrate first)")
        self.model = model
        self.state = TeaCacheState(threshold=threshold, coeffs=coeffs, calibrating=calibrating)
        blocks = getattr(model, info["blocks_attr"])
        Head, Body = _make_hooks(info["arch"], self.state)
        HookRegistry.check_if_exists_or_initialize(blocks[0]).register_hook(Head(), _HEAD)
        for j in range(1, len(blocks)):
            HookRegistry.check_if_exists_or_initialize(blocks[j]).register_hook(
                Body(tail=j == len(blocks) - 1), _BODY
            )
        if len(blocks) == 1:
            raise ValueError("TeaCache needs at least two blocks")

    def fn(self, hidden_states, timestep, encoder_hidden_states, ctx):
        st = self.state
        st.branch, st.step, st.num_steps = ctx.name, ctx.step_index, ctx.num_inference_steps
        out = self.model(
            hidden_states=hidden_states,
            timestep=timestep,
            encoder_hidden_states=encoder_hidden_states,
            return_dict=False,
        )[0]
        if st.calibrating:
            br = st.current()
            last = st.step >= st.num_steps - 1
            if br.prev_out is not None and st.pairs_pending is not None and not last:
                st.pairs.append((st.pairs_pending, rel_l1(out, br.prev_out)))
            br.prev_out = out
        return out

    def reset(self) -> None:
        self.state.reset()

    def stats(self) -> dict:
        return {"trace": list(self.state.trace)}


def fit(pairs: list[tuple[float, float]], degree: int = 2) -> list[float]:
    """Least-squares polynomial from input change to output change (numpy.polyval order)."""
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    return [float(c) for c in np.polyfit(x, y, degree)]
