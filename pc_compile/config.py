"""Configuration: one frozen dataclass of the shared fields, each rule's options, and presets.

``torch.compile(model, backend="precisecache", options={...})`` takes any field name below, any
registered rule's option by its own name (``alpha``, ``sen_epsilon``, ...), plus ``preset``
(the starting point, default ``"turbo"``). An unknown name or a value out of range is an error
that lists what is valid: a misspelled option must never be ignored silently.

The fields here are those every rule shares. A rule's own options live in its options
dataclass next to the rule (``runtime/rules/*.py``); a flat option name goes to the rule that
declares it, the selected one where several do (so a preset or an override may set the options
of a rule it does not select, and they apply once that rule is selected).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pc_compile.runtime import checks
from pc_compile.runtime.reuse import STEP_REUSE
from pc_compile.runtime.rules import registry

PIECE_COMPILERS = ("inductor", "eager")
ON_UNSUPPORTED = ("warn", "error")
BUDGET_PLACEMENTS = ("score", "even")


@dataclass(frozen=True, init=False)
class PreciseCacheConfig:
    """What the backend does with each step of a denoiser.

    ``PreciseCacheConfig(step_rule="lfcache", alpha=0.6)``: the fields below and any registered
    rule's options by name (LFCache: ``alpha``, ``lowpass_radius``, ``lfd_reference``,
    ``probe_downsample``, ``probe_min_tokens``; SenCache: ``sen_epsilon``; Trajectory:
    ``traj_epsilon``; BlockCache:
    ``pivotal_fraction``, ``pivotal_steps``; BWCache: ``bw_threshold``, ``bw_reuse_steps``,
    ``bw_scope``; each documented in its rule's options dataclass). ``config.alpha`` reads an
    option back; ``config.options_for("lfcache")`` returns a rule's whole options.

    Attributes:
        step_rule: how a step decides to reuse the cache. ``"none"`` computes every step;
            ``"lfcache"`` is PreciseCache's step guard (probe + accumulated LFD);
            ``"sencache"`` reuses while the output's sensitivity predicts a small change;
            ``"trajectory"`` while the extrapolation's second-order error, estimated from the
            last three computed outputs, stays small; or any other registered step rule.
        block_rule: how a computed step decides which blocks to bypass. ``"none"`` computes
            every block; ``"blockcache"`` runs the pivotal blocks only; ``"bwcache"`` bypasses
            each block whose output barely changed since it last ran; or any other registered
            block rule.
        warmup_steps: the first steps of a generation always compute (2; presets base and
            turbo 5, as far as their budget affords).
        step_reuse: what a reused step returns: ``"extrapolate"`` (default), the linear
            extrapolation in the timestep of the last two computed outputs; ``"output"``, the
            last computed output (the paper); ``"residual"``, the last computed chain residual
            put through this step's prologue and epilogue. Where a step rule says so (LFCache's
            probe with ``lfd_reference="previous"``), the first reused step of a run takes the
            last output or residual instead of its extrapolation.
        max_reuse: at most this many reused steps in a row (0: no limit; SenCache's ``K``).
        end_span: the steps whose timestep lies within ``end_span`` step sizes of zero (the
            step size is the last one, so no step count is needed) always compute: 1.5 keeps
            the last step (and Euler's one before it); base's and turbo's 4.5 keeps the last three
            steps of UniPC and the last four of Euler at shift 3, 20-50 steps, where the
            budget affords them.
        piece_compiler: how each piece of the partitioned graph is compiled: ``"inductor"``
            (default), or ``"eager"`` to run the pieces uncompiled (debugging, fast tests);
            also the parts of a model's first call under context parallelism, which Dynamo
            hands over one by one before it compiles the forward whole.
        cuda_graphs: under ``mode="reduce-overhead"`` (or ``"max-autotune"``), compile the
            pieces with Inductor's CUDA graphs (default False: without them, warned once). The
            runtime copies what it keeps out of the pieces' outputs, so a replay cannot change
            a cache; not yet measured on a GPU.
        on_unsupported: what to do when the model cannot do what is asked: ``"warn"`` (the
            default) steps down, warning once, to the partitioned graph without caching or to
            plain Inductor (``pc_compile/fallback.py``); ``"error"`` raises
            ``PreciseCacheUnsupported``.
        compute_budget: the fraction of the uncached work (block evaluations, the probe's
            included, over steps x blocks: ``stats()["compute_fraction"]``) each generation
            may spend, in (0, 1]; None (default) lets the rules decide alone. An online
            controller (``runtime/budget.py``) then places the computed steps where the step
            rule's score predicts the most damage from reusing, the steps left estimated from
            the timesteps; with ``step_rule="none"`` it spaces them evenly. The warm-up, the
            end of the schedule and ``max_reuse`` still compute; of the steps it forces,
            only the computed ones before a free step are probed (LFCache's choice of form).
            Not with a block rule (bypassed blocks would make the spend unknowable).
        budget_placement: under ``compute_budget``, where the free computed steps go:
            ``"score"`` (default) where the step rule's score predicts the most damage from
            reusing; ``"even"`` evenly spaced whatever the score, the rule (LFCache's probe)
            then choosing only each reuse's form (design measurement 22).
        max_streams: guidance streams kept per compiled graph; the least recently used past
            this number lose their cache (their counters stay in ``stats``).
        max_cache_bytes: the most bytes the streams of one compiled graph may keep across
            steps (reuse history, the rules' states: ``stats()["kept_bytes"]``); None (default)
            sets no cap. The streams that started first keep their caches; a stream whose
            cache would take the total past the cap computes every step from then on (until
            ``pc_compile.reset``), with a warning. A guidance pair split by the cap loses
            fidelity (one branch reused, the other computed): allow both branches' caches.
        rule_options: the rules' options that differ from their defaults, as sorted
            ``(rule name, options)`` pairs (set them by their flat names instead).
    """

    step_rule: str = "none"
    block_rule: str = "none"
    warmup_steps: int = 2
    step_reuse: str = "extrapolate"
    max_reuse: int = 0
    end_span: float = 1.5
    piece_compiler: str = "inductor"
    cuda_graphs: bool = False
    on_unsupported: str = "warn"
    compute_budget: float | None = None
    budget_placement: str = "score"
    max_streams: int = 8
    max_cache_bytes: int | None = None
    rule_options: tuple = ()

    def __init__(self, **options):
        shared = {f.name: f.default for f in dataclasses.fields(self)}
        unknown = sorted(set(options) - set(shared) - set(registry.option_names()))
        if unknown:
            raise TypeError(
                f"PreciseCacheConfig got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"valid options are {', '.join(valid_options())}"
            )
        for name in shared:
            object.__setattr__(self, name, options.pop(name, shared[name]))
        self._validate()
        object.__setattr__(self, "rule_options", _route(self, options))

    def _validate(self) -> None:
        checks.choice("step_rule", self.step_rule, ("none", *registry.rule_names("step")))
        checks.choice("block_rule", self.block_rule, ("none", *registry.rule_names("block")))
        checks.choice("step_reuse", self.step_reuse, STEP_REUSE)
        checks.integer("warmup_steps", self.warmup_steps, low=0)
        checks.integer("max_reuse", self.max_reuse, low=0)
        checks.number("end_span", self.end_span, low=0.0, high=1000.0)
        checks.choice("piece_compiler", self.piece_compiler, PIECE_COMPILERS)
        checks.choice("on_unsupported", self.on_unsupported, ON_UNSUPPORTED)
        if not isinstance(self.cuda_graphs, bool):
            raise TypeError(f"cuda_graphs must be True or False, got {self.cuda_graphs!r}")
        if self.compute_budget is not None:
            checks.number("compute_budget", self.compute_budget, low=0.0, high=1.0,
                          low_open=True)
            if self.block_rule != "none":
                raise ValueError(
                    f"compute_budget cannot be combined with block_rule={self.block_rule!r}: "
                    "the controller places whole computed steps, and a block rule's bypasses "
                    "would change what they cost; use a step rule (lfcache, sencache) or none"
                )
        checks.choice("budget_placement", self.budget_placement, BUDGET_PLACEMENTS)
        checks.integer("max_streams", self.max_streams, low=1)
        if self.max_cache_bytes is not None:
            checks.integer("max_cache_bytes", self.max_cache_bytes, low=0)

    @property
    def caches(self) -> bool:
        return (self.step_rule != "none" or self.block_rule != "none"
                or self.compute_budget is not None)

    def options_for(self, rule: str):
        """The options of the registered rule named ``rule`` (its defaults unless set)."""
        for name, options in self.rule_options:
            if name == rule:
                return options
        entry = _entry(rule)
        return entry.options()

    def __getattr__(self, name: str):
        # Only reached when ``name`` is not a field: a rule's option, by its flat name.
        if name.startswith("_") or name == "rule_options":
            raise AttributeError(name)
        owners = _owners(self, name)
        if not owners:
            raise AttributeError(f"PreciseCacheConfig has no field or rule option {name!r}")
        return getattr(self.options_for(owners[0].name), name)


def _entry(rule: str) -> registry.RuleEntry:
    for kind in registry.KINDS:
        if rule in registry.rule_names(kind):
            return registry.lookup(kind, rule)
    raise KeyError(f"no rule named {rule!r} is registered")


def _owners(config: PreciseCacheConfig, option: str) -> list[registry.RuleEntry]:
    """The rules ``option`` is routed to: the selected rules that declare it, or else every
    registered rule that does."""
    owners = registry.owners(option)
    selected = [e for e in owners if (e.kind, e.name) in (("step", config.step_rule),
                                                          ("block", config.block_rule))]
    return selected or owners


def _route(config: PreciseCacheConfig, options: dict) -> tuple:
    """``config.rule_options`` with the flat ``options`` applied to their rules' options
    (each validated by its dataclass); rules left at their defaults are not listed."""
    changes: dict[str, dict] = {}
    for name, value in options.items():
        for entry in _owners(config, name):
            changes.setdefault(entry.name, {})[name] = value
    merged = dict(config.rule_options)
    for rule, values in changes.items():
        merged[rule] = dataclasses.replace(config.options_for(rule), **values)
    return tuple(sorted((rule, opts) for rule, opts in merged.items()
                        if opts != _entry(rule).options()))


def field_names() -> list[str]:
    """The shared fields a user sets (``rule_options`` is set through the rules' names)."""
    return [f.name for f in dataclasses.fields(PreciseCacheConfig) if f.name != "rule_options"]


def valid_options() -> list[str]:
    return field_names() + [n for n in registry.option_names() if n not in field_names()]


registry.reserve(field_names() + ["preset", "rule_options"])

PRESETS: dict[str, PreciseCacheConfig] = {
    # The partitioned graph with every step and block computed: equals plain torch.compile.
    "off": PreciseCacheConfig(),
    # base, turbo (the default) and flash spend a set fraction of the uncached work, probe included,
    # at any step count and scheduler (``compute_budget``): 0.63, 0.465 and 0.38, the paper's
    # speed-ups (about 1.6x, 2.15x, 2.6x). LFCache's probe measures every free step and its spectra
    # choose the form of each run's first reuse, the last output or the extrapolation of the last
    # two (a run's later reuses extrapolate). Base places its computed steps by the probe's score
    # (which runs of reuses are the longer between the most even ones the budget allows); turbo and
    # flash space them evenly, the score then unused: on the tuning models (wan-tiny,
    # cogvideox-tiny; Euler 20 and 50, UniPC 30 steps) the even placement was ahead of the score's
    # at 0.465 and 0.38 (43.0 against 40.1 dB on average), the score's at 0.63 (design measurement
    # 24). The warm-up and the end of the schedule compute as far as the budget affords them without
    # lengthening any run of reuses (five warm-up steps and ``end_span=4.5`` for base and turbo
    # where there is room; at 0.465 and 0.38 there is none below 100 steps).
    "base": PreciseCacheConfig(step_rule="lfcache", alpha=1.0, compute_budget=0.63,
                               warmup_steps=5, end_span=4.5),
    "turbo": PreciseCacheConfig(step_rule="lfcache", alpha=1.0, compute_budget=0.465,
                                budget_placement="even", warmup_steps=5, end_span=4.5),
    "flash": PreciseCacheConfig(step_rule="lfcache", alpha=1.0, compute_budget=0.38,
                                budget_placement="even"),
    # SenCache (arXiv 2602.24208) and BWCache (arXiv 2509.13789) on the same machinery.
    "sencache": PreciseCacheConfig(step_rule="sencache", sen_epsilon=0.05, max_reuse=3),
    "bwcache": PreciseCacheConfig(block_rule="bwcache", bw_threshold=0.15),
}
DEFAULT_PRESET = "turbo"


def config_from_options(options: dict | None) -> PreciseCacheConfig:
    """Build a config from ``torch.compile``'s ``options``: ``preset`` plus overrides, each a
    shared field or a registered rule's option."""
    if options is not None and not isinstance(options, dict):
        hint = (f"; for a preset write options={{'preset': {options!r}}}"
                if isinstance(options, str) else "")
        raise TypeError(f"precisecache options must be a dict, got {type(options).__name__} "
                        f"{options!r}{hint}")
    options = dict(options or {})
    preset = options.pop("preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    valid = valid_options()
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown precisecache option(s) {', '.join(map(repr, unknown))}; "
            f"valid options are preset, {', '.join(valid)}"
        )
    base = PRESETS[preset]
    if (base.compute_budget is not None and "compute_budget" not in options
            and options.get("block_rule", "none") != "none"):
        raise ValueError(
            f"preset {preset!r} spends compute_budget={base.compute_budget}, which cannot be "
            f"combined with block_rule={options['block_rule']!r}; add compute_budget=None to "
            "let the rules decide alone (the step rule's threshold, then the block rule)"
        )
    return dataclasses.replace(base, **options)
