"""Configuration: one frozen dataclass of documented fields, and the presets.

``torch.compile(model, backend="precisecache", options={...})`` takes any field name below, plus
``preset`` (the starting point, default ``"turbo"``). An unknown name or a value out of range is
an error that lists what is valid: a misspelled option must never be ignored silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

STEP_RULES = ("none", "lfcache", "sencache")
BLOCK_RULES = ("none", "blockcache", "bwcache")
BW_SCOPES = ("block", "mean")
LFD_REFERENCES = ("cache", "previous")
STEP_REUSE = ("extrapolate", "output", "residual")
PIECE_COMPILERS = ("inductor", "eager")
ON_UNSUPPORTED = ("warn", "error")


@dataclass(frozen=True)
class PreciseCacheConfig:
    """What the backend does with each step of a denoiser.

    Attributes:
        step_rule: how a step decides to reuse the cache. ``"none"`` computes every step;
            ``"lfcache"`` is PreciseCache's step guard (probe + accumulated LFD);
            ``"sencache"`` reuses while the output's sensitivity predicts a small change.
        alpha: LFCache's relative threshold: reuse while the accumulated measure stays under
            ``alpha x`` the largest single-step measure of the generation (paper: 0.5 base,
            0.7 turbo; here 1.0 for base, turbo and flash). Larger reuses more; with
            ``max_reuse=1`` and the paper's LFD, alpha >= 1 never vetoes a reuse.
        warmup_steps: the first steps of a generation always compute (2; presets base 7,
            turbo 5).
        probe_downsample: (time, height, width) factors of the probe (paper: 2, 4, 4).
        probe_min_tokens: the probe keeps at least this many tokens per frame (the spatial
            factor is lowered for small latents).
        lowpass_radius: radius of the LFD's circular low-pass, as a fraction of the smaller
            spatial size of the probe (paper: 1/5).
        lfd_reference: what LFCache compares each step's probe with, accumulating the distance
            over the reused steps: ``"previous"``, the probe output of the step before (the
            paper's LFD; the presets); ``"cache"``, what a reuse would return, seen
            by the probe (its outputs at the last two computed steps, extrapolated to this
            timestep; preset turbo until design measurement 13). The threshold is ``alpha x``
            the largest step-to-step LFD of the generation either way.
        step_reuse: what a reused step returns: ``"extrapolate"`` (default), the linear
            extrapolation in the timestep of the last two computed outputs; ``"output"``, the
            last computed output (the paper); ``"residual"``, the last computed chain residual
            put through this step's prologue and epilogue. With ``lfd_reference="previous"``
            LFCache's probe chooses, per step, between extrapolation and the last output; with
            ``"cache"``, and with SenCache, a reused step always extrapolates.
        end_span: the steps whose timestep lies within ``end_span`` step sizes of zero (the
            step size is the last one, so no step count is needed) always compute: 1.5 keeps
            the last step (and Euler's one before it); the presets' 4.5 keeps the last three
            steps of UniPC and the last four of Euler at shift 3, 20-50 steps.
        max_reuse: at most this many reused steps in a row (0: no limit; SenCache's ``K``;
            presets base and turbo: 1).
        sen_epsilon: SenCache's threshold: reuse while the predicted relative change of the
            output since the last computed step stays under it.
        block_rule: how a computed step decides which blocks to bypass. ``"none"`` computes
            every block; ``"blockcache"`` runs the pivotal blocks only; ``"bwcache"`` bypasses
            each block whose output barely changed since it last ran.
        pivotal_fraction: BlockCache's fraction of blocks computed (paper flash: 0.4).
        pivotal_steps: computed steps that reuse one ranking before every block runs again
            (paper flash: L = 3).
        bw_threshold: BWCache's threshold on the relative L1 change of a block's output
            (paper: 0.15 / 0.20 / 0.25 for slow / mid / fast).
        bw_reuse_steps: computed steps a BWCache block stays bypassed once it is found calm.
        bw_scope: ``"block"``, each block decides by its own change; ``"mean"``, the mean change
            over the blocks decides for all of them (the paper's indicator).
        piece_compiler: how each piece of the partitioned graph is compiled: ``"inductor"``
            (default), or ``"eager"`` to run the pieces uncompiled (debugging, fast tests).
        on_unsupported: what to do when the model cannot do what is asked: ``"warn"`` (the
            default) steps down, warning once, to the partitioned graph without caching or to
            plain Inductor (``pc_compile/fallback.py``); ``"error"`` raises
            ``PreciseCacheUnsupported``.
        max_streams: guidance streams kept per compiled graph; the least recently used past
            this number lose their cache (their counters stay in ``stats``).
    """

    step_rule: str = "none"
    alpha: float = 0.7
    warmup_steps: int = 2
    probe_downsample: tuple[int, int, int] = (2, 4, 4)
    probe_min_tokens: int = 4
    lowpass_radius: float = 0.2
    lfd_reference: str = "previous"
    step_reuse: str = "extrapolate"
    max_reuse: int = 0
    end_span: float = 1.5
    block_rule: str = "none"
    pivotal_fraction: float = 0.4
    pivotal_steps: int = 3
    sen_epsilon: float = 0.05
    bw_threshold: float = 0.15
    bw_reuse_steps: int = 2
    bw_scope: str = "block"
    piece_compiler: str = "inductor"
    on_unsupported: str = "warn"
    max_streams: int = 8

    def __post_init__(self):
        _choice("step_rule", self.step_rule, STEP_RULES)
        _choice("block_rule", self.block_rule, BLOCK_RULES)
        _choice("step_reuse", self.step_reuse, STEP_REUSE)
        _choice("lfd_reference", self.lfd_reference, LFD_REFERENCES)
        _number("alpha", self.alpha, low=0.0, high=100.0, low_open=True)
        _number("lowpass_radius", self.lowpass_radius, low=0.0, high=1.0, low_open=True)
        _number("pivotal_fraction", self.pivotal_fraction, low=0.0, high=1.0, low_open=True)
        _integer("warmup_steps", self.warmup_steps, low=0)
        _integer("probe_min_tokens", self.probe_min_tokens, low=1)
        _integer("pivotal_steps", self.pivotal_steps, low=1)
        _integer("max_reuse", self.max_reuse, low=0)
        _number("end_span", self.end_span, low=0.0, high=1000.0)
        _number("sen_epsilon", self.sen_epsilon, low=0.0, high=10.0, low_open=True)
        _number("bw_threshold", self.bw_threshold, low=0.0, high=10.0, low_open=True)
        _integer("bw_reuse_steps", self.bw_reuse_steps, low=1)
        _choice("bw_scope", self.bw_scope, BW_SCOPES)
        factors = self.probe_downsample
        if (
            not isinstance(factors, (tuple, list))
            or len(factors) != 3
            or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in factors)
        ):
            raise ValueError(
                "probe_downsample must be three integers >= 1 (time, height, width), "
                f"got {factors!r}"
            )
        object.__setattr__(self, "probe_downsample", tuple(factors))
        _choice("piece_compiler", self.piece_compiler, PIECE_COMPILERS)
        _choice("on_unsupported", self.on_unsupported, ON_UNSUPPORTED)
        if not isinstance(self.max_streams, int) or self.max_streams < 1:
            raise ValueError(f"max_streams must be an integer >= 1, got {self.max_streams!r}")

    @property
    def caches(self) -> bool:
        return self.step_rule != "none" or self.block_rule != "none"


def _number(name, value, low, high, low_open=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")


def _integer(name, value, low) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _choice(name: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")


PRESETS: dict[str, PreciseCacheConfig] = {
    # The partitioned graph with every step and block computed: equals plain torch.compile.
    "off": PreciseCacheConfig(),
    # base and turbo (the default): a schedule prior, seven or five warm-up steps, at most one
    # reused step in a row, and the steps within 4.5 step sizes of the end computed, so every
    # other step is reused in between (about 68% and 65% compute with the probe at 30 steps).
    # Under that cap alpha 1.0 never vetoes (one step's LFD cannot exceed the largest seen);
    # the probe chooses per reused step between the last output and the extrapolation of the
    # last two, keeping the accumulated low-frequency error smallest. Measured on the reference
    # models this beat the paper's adaptive rule at alpha 0.5 / 0.7, the other reuse forms and
    # the other phases (BENCHMARKS.md, design measurements 13 and 15); a lower alpha lets the
    # guard compute steps where the probe moves most.
    # flash: LFCache at alpha 1.0 with the paper's LFD, adaptive (no cap, the last step and
    # Euler's one before it computed): 39-55% compute on the reference models, where alpha 1.5
    # (flash until design measurement 15) lost to SeaCache on wan-tiny. It is not the paper's
    # flash (LFCache at alpha 0.7 + BlockCache, 40% of blocks, L = 3): that lost to uniform skipping
    # on every reference model, because a block bypass costs more fidelity per compute saved
    # than reusing a whole step (design measurement 9); it stays available as
    # block_rule="blockcache".
    "base": PreciseCacheConfig(step_rule="lfcache", alpha=1.0, warmup_steps=7, max_reuse=1,
                               end_span=4.5),
    "turbo": PreciseCacheConfig(step_rule="lfcache", alpha=1.0, warmup_steps=5, max_reuse=1,
                                end_span=4.5),
    "flash": PreciseCacheConfig(step_rule="lfcache", alpha=1.0),
    # SenCache (arXiv 2602.24208) and BWCache (arXiv 2509.13789) on the same machinery.
    "sencache": PreciseCacheConfig(step_rule="sencache", sen_epsilon=0.05, max_reuse=3),
    "bwcache": PreciseCacheConfig(block_rule="bwcache", bw_threshold=0.15),
}
DEFAULT_PRESET = "turbo"


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(PreciseCacheConfig)]


def config_from_options(options: dict | None) -> PreciseCacheConfig:
    """Build a config from ``torch.compile``'s ``options``: ``preset`` plus field overrides."""
    options = dict(options or {})
    preset = options.pop("preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    valid = field_names()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown precisecache option(s) {', '.join(map(repr, unknown))}; "
            f"valid options are preset, {', '.join(valid)}"
        )
    return dataclasses.replace(PRESETS[preset], **options)
