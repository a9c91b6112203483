"""The project's own methods in the benchmark: the precisecache backend at several settings.

Each setting compiles the model afresh (``torch._dynamo.reset()`` first, so that Dynamo's cache
of earlier settings can neither serve nor crowd out the new one). The pieces run uncompiled
(``piece_compiler="eager"``) so that the CPU benchmark spends its time sampling, not in
Inductor; fidelity is the same as with Inductor (preset off matches plain torch.compile to
1e-5), and wall time on a CPU is no speed evidence either way.
"""

from __future__ import annotations

import torch

import pc_compile

from . import sampling
from .methods import Method, MethodRun, register

EAGER_PIECES = {"piece_compiler": "eager"}
# Preset turbo before design measurement 24 made it a compute budget: LFCache's threshold with
# five warm-up steps, at most one reuse in a row, the steps within 4.5 step sizes of the end.
THRESHOLD_TURBO = dict(preset="off", step_rule="lfcache", alpha=1.0, warmup_steps=5, max_reuse=1,
                       end_span=4.5)
# Preset flash before it became a compute budget: LFCache's adaptive threshold rule, alpha 1.0.
THRESHOLD_FLASH = dict(preset="flash", compute_budget=None)


def _trace(stats: dict) -> list[dict]:
    """Our per-stream trace in the bench's per-call format (first stream = cond)."""
    calls = []
    branches = ("cond", "uncond")
    for i, (name, stream) in enumerate(stats["per_stream"].items()):
        branch = branches[i] if i < len(branches) else name
        for entry in stream.get("trace", []):
            calls.append({
                "branch": branch,
                "step": entry["step"],
                "metric": entry.get("metric"),
                "threshold": entry.get("threshold"),
                "skip": not entry["computed"],
                "reuse": entry.get("reuse"),
                "blocks": entry.get("blocks"),
                "block_metric": entry.get("block_metric"),
            })
    return calls


def _make(setting: str = "alpha", **fixed):
    """A method factory: the backend with ``fixed`` options and the swept ``setting``."""

    def make(model, value, env):
        torch._dynamo.reset()
        options = {setting: value, **fixed, **EAGER_PIECES}
        compiled = torch.compile(model, backend=pc_compile.backend(**options))

        def stats():
            s = pc_compile.stats(compiled, detail=True)
            return {**{k: v for k, v in s.items() if k != "per_stream"}, "trace": _trace(s)}

        def reset():
            try:
                pc_compile.reset(compiled)
            except ValueError:  # not compiled yet: nothing to reset
                pass

        return MethodRun(fn=sampling.plain(compiled), stats=stats, reset=reset)

    return make


register(Method(
    "precisecache", _make(**THRESHOLD_FLASH), sweep=[0.5, 0.7, 1.0, 1.5],
    full_sweep=[0.3, 0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 3.0], mode="compiled", self_counted=True,
    setting_name="alpha",
    notes="LFCache's threshold rule (probe 2x4x4, the paper's accumulated LFD), extrapolated "
          "reuse chosen by the probe against the accumulated error; alpha 1.0 = flash until "
          "design measurement 24 made flash a compute budget",
))


def _preset(name: str, preset: str) -> None:
    """The presets as they are: ``compute_budget`` 0.63, 0.465, 0.38 (base, turbo, flash),
    LFCache's alpha 1.0 the one setting (under a budget alpha does not decide)."""
    config = pc_compile.PRESETS[preset]
    register(Method(
        name, _make(preset=preset), sweep=[1.0], full_sweep=[1.0],
        mode="compiled", self_counted=True, setting_name="alpha",
        notes=f"preset {preset} as it is: LFCache under compute_budget {config.compute_budget}, "
              f"placement {config.budget_placement!r}, {config.warmup_steps} warm-up steps and "
              f"end_span {config.end_span} where the budget affords them; the probe chooses "
              "each reuse's form",
    ))


for _name in ("base", "turbo", "flash"):
    _preset(f"precisecache-{_name}", _name)

register(Method(
    "precisecache-cache", _make(**THRESHOLD_FLASH, lfd_reference="cache"),
    sweep=[0.5, 0.7, 1.0, 1.5],
    full_sweep=[0.3, 0.5, 0.7, 1.0, 1.25, 1.5, 2.0, 3.0], mode="compiled", self_counted=True,
    setting_name="alpha",
    notes="LFCache accumulating the probe's distance to the extrapolated cache, extrapolated "
          "reuse (preset turbo until design measurement 13, at alpha 0.7)",
))
register(Method(
    "precisecache-paper", _make(**THRESHOLD_FLASH, step_reuse="output"),
    sweep=[0.7], full_sweep=[0.3, 0.5, 0.7, 1.0, 1.5, 2.0], mode="compiled", self_counted=True,
    setting_name="alpha",
    notes="LFCache as in the paper: its LFD and plain output reuse (ablation)",
))
register(Method(
    "precisecache+blockcache",
    _make(**THRESHOLD_FLASH, block_rule="blockcache"), sweep=[0.7],
    full_sweep=[0.5, 0.7, 1.0, 1.5], mode="compiled", self_counted=True, setting_name="alpha",
    notes="the paper's flash: LFCache at alpha 0.7 + BlockCache (40% of blocks, L = 3)",
))
register(Method(
    "sencache", _make("sen_epsilon", preset="sencache"), sweep=[0.02, 0.03, 0.05, 0.08],
    full_sweep=[0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.2], mode="compiled", self_counted=True,
    setting_name="sen_epsilon",
    notes="SenCache: sensitivity from the last two computed steps, max 3 reuses in a row, "
          "extrapolated reuse",
))
register(Method(
    "bwcache", _make("bw_threshold", preset="bwcache"), sweep=[0.02, 0.05, 0.1],
    full_sweep=[0.02, 0.05, 0.1, 0.15, 0.2, 0.25], mode="compiled", self_counted=True,
    setting_name="bw_threshold",
    notes="BWCache: per-block relative L1 of the block output, bypassed 2 computed steps",
))
register(Method(
    "bwcache-mean", _make("bw_threshold", preset="bwcache", bw_scope="mean"),
    sweep=[0.05, 0.1], full_sweep=[0.02, 0.05, 0.1, 0.15, 0.2, 0.25], mode="compiled",
    self_counted=True, setting_name="bw_threshold",
    notes="BWCache with the paper's indicator: the mean over blocks decides for all",
))
register(Method(
    "precisecache+bwcache", _make("alpha", **THRESHOLD_TURBO, block_rule="bwcache",
                                  bw_threshold=0.05),
    sweep=[0.7], full_sweep=[0.5, 0.7, 1.0, 1.5], mode="compiled", self_counted=True,
    setting_name="alpha",
    notes="the LFCache step guard with BWCache blocks (threshold 0.05)",
))
register(Method(
    "sencache+bwcache", _make("sen_epsilon", preset="sencache", block_rule="bwcache",
                              bw_threshold=0.05),
    sweep=[0.03], full_sweep=[0.02, 0.03, 0.05, 0.1], mode="compiled", self_counted=True,
    setting_name="sen_epsilon",
    notes="the SenCache step rule with BWCache blocks (threshold 0.05)",
))


# Candidates for presets driven by ``compute_budget`` (design measurement 22): the probe's
# preset configurations at the budgets, the computed steps placed by LFCache's score
# or spaced evenly (the probe then only choosing each reuse's form). ``benchmarks.report``
# compares them like the presets (``CANDIDATE_ROWS``).
BUDGET_CANDIDATES = {
    "base": (0.63, dict(warmup_steps=5, end_span=4.5)),
    "turbo": (0.465, dict(warmup_steps=5, end_span=4.5)),
    "flash": (0.38, dict(warmup_steps=2, end_span=1.5)),
}
for _preset, (_budget, _guards) in BUDGET_CANDIDATES.items():
    for _placement in ("score", "even"):
        register(Method(
            f"precisecache-{_preset}-{_placement}",
            _make("compute_budget", preset="off", step_rule="lfcache", alpha=1.0,
                  budget_placement=_placement, **_guards),
            sweep=[_budget], full_sweep=[_budget], mode="compiled", self_counted=True,
            setting_name="compute_budget",
            notes=f"LFCache under compute_budget {_budget}, {_guards['warmup_steps']} warm-up "
                  f"steps, end_span {_guards['end_span']}, placement {_placement!r}: a "
                  f"candidate for preset {_preset}",
        ))
register(Method(
    "precisecache-blind", _make("compute_budget", preset="off"), sweep=[0.63, 0.465, 0.38],
    full_sweep=[0.63, 0.465, 0.38], mode="compiled", self_counted=True,
    setting_name="compute_budget",
    notes="compute_budget with no step rule: evenly spaced computed steps after two warm-up "
          "steps, the last two (Euler) or last one computed, the others extrapolated",
))
