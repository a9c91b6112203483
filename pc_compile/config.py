"""Configuration: one frozen dataclass of documented fields, and the presets.

``torch.compile(model, backend="precisecache", options={...})`` takes any field name below, plus
``preset`` (the starting point, default ``"off"``). An unknown name or a value out of range is
an error that lists what is valid: a misspelled option must never be ignored silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

STEP_RULES = ("none",)
BLOCK_RULES = ("none",)
PIECE_COMPILERS = ("inductor", "eager")
ON_UNSUPPORTED = ("warn", "error")


@dataclass(frozen=True)
class PreciseCacheConfig:
    """What the backend does with each step of a denoiser.

    Attributes:
        step_rule: how a step decides to reuse the cache. ``"none"`` computes every step.
        block_rule: how a computed step decides which blocks to bypass. ``"none"`` computes
            every block.
        piece_compiler: how each piece of the partitioned graph is compiled: ``"inductor"``
            (default), or ``"eager"`` to run the pieces uncompiled (debugging, fast tests).
        on_unsupported: what to do with a graph the passes cannot partition: ``"warn"`` once
            and compile it as plain Inductor (default), or ``"error"`` to raise.
        max_streams: guidance streams kept per compiled graph; the least recently used past
            this number lose their cache (their counters stay in ``stats``).
    """

    step_rule: str = "none"
    block_rule: str = "none"
    piece_compiler: str = "inductor"
    on_unsupported: str = "warn"
    max_streams: int = 8

    def __post_init__(self):
        _choice("step_rule", self.step_rule, STEP_RULES)
        _choice("block_rule", self.block_rule, BLOCK_RULES)
        _choice("piece_compiler", self.piece_compiler, PIECE_COMPILERS)
        _choice("on_unsupported", self.on_unsupported, ON_UNSUPPORTED)
        if not isinstance(self.max_streams, int) or self.max_streams < 1:
            raise ValueError(f"max_streams must be an integer >= 1, got {self.max_streams!r}")

    @property
    def caches(self) -> bool:
        return self.step_rule != "none" or self.block_rule != "none"


def _choice(name: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")


PRESETS: dict[str, PreciseCacheConfig] = {
    # The partitioned graph with every step and block computed: equals plain torch.compile.
    "off": PreciseCacheConfig(),
}


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(PreciseCacheConfig)]


def config_from_options(options: dict | None) -> PreciseCacheConfig:
    """Build a config from ``torch.compile``'s ``options``: ``preset`` plus field overrides."""
    options = dict(options or {})
    preset = options.pop("preset", "off")
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
