"""The ``precisecache`` torch.compile backend: the entry points.

``precisecache(gm, example_inputs, options=None, mode=None)`` is what ``torch.compile(model,
backend="precisecache", options={...})`` calls (through the ``torch_dynamo_backends`` entry
point, so no import of ``pc_compile`` is needed); ``backend(config)`` returns such a callable
for a config built in Python. Both read the options into a config and hand the graph to
``fallback.compile_in_tiers``, which runs the best tier the model supports: the requested
caching, the partitioned graph without caching, or plain Inductor with the user's ``mode``.
"""

from __future__ import annotations

import torch

from pc_compile.config import PreciseCacheConfig, config_from_options
from pc_compile.errors import UnsupportedGraphWarning
from pc_compile.fallback import compile_in_tiers

__all__ = ["precisecache", "backend", "compile_denoiser", "UnsupportedGraphWarning"]


def precisecache(gm: torch.fx.GraphModule, example_inputs, options=None, mode=None):
    """The backend registered as ``"precisecache"``."""
    return compile_denoiser(gm, example_inputs, config_from_options(options), mode)


def backend(config: PreciseCacheConfig | None = None, **options):
    """A backend callable for ``torch.compile(model, backend=...)``.

    ``backend(PreciseCacheConfig(...))`` or ``backend(preset="turbo", alpha=0.6)``.
    """
    if config is not None and options:
        raise ValueError("pass either a PreciseCacheConfig or options, not both")
    if config is None:
        config = config_from_options(options)
    elif not isinstance(config, PreciseCacheConfig):
        raise TypeError(f"config must be a PreciseCacheConfig, got {type(config).__name__}")

    def precisecache_backend(gm, example_inputs, options=None, mode=None):
        if options:
            raise ValueError(
                "options were given both to pc_compile.backend() and to torch.compile(); "
                "give them in one place"
            )
        return compile_denoiser(gm, example_inputs, config, mode)

    return precisecache_backend


def compile_denoiser(gm, example_inputs, config: PreciseCacheConfig, mode=None,
                     register: bool = True):
    """The callable that runs ``gm`` under ``config`` (``register``: list it for ``stats``)."""
    return compile_in_tiers(gm, example_inputs, config, mode, register)
