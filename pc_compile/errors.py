"""Why the backend gives up part of what it was asked, as exceptions and warnings.

Every reason derives from ``PreciseCacheUnsupported``. The front catches it in one place
(``pc_compile/fallback.py``) and steps down a tier (the requested caching, then the partitioned
graph without caching, then plain Inductor), warning once per model and reason, or raises it
under ``on_unsupported="error"``. ``OptionUnsupported`` is the exception to the tiers: an option
the user set that this model cannot honour is raised whatever ``on_unsupported`` says, because
falling back would drop the very thing that was asked for.

This module imports nothing, so that the passes, the capture and the runtime can all raise
these without depending on each other.
"""

from __future__ import annotations


class PreciseCacheUnsupported(Exception):
    """The backend cannot do, on this model, what the configuration asks; the message says why."""


class UnsupportedGraph(PreciseCacheUnsupported):
    """The passes cannot partition this graph into prologue, repeated blocks and epilogue."""


class ProbeUnsupported(PreciseCacheUnsupported, ValueError):
    """The low-resolution probe cannot be built for this model."""


class PolicyUnsupported(PreciseCacheUnsupported, ValueError):
    """The configured caching rules cannot work on this model."""


class OptionUnsupported(PolicyUnsupported):
    """An option the user chose cannot work on this model: raised, never a fallback."""


class UnsupportedGraphWarning(UserWarning):
    """The model runs a lower tier than asked (without caching, or as plain Inductor)."""


class LayoutGuessWarning(UserWarning):
    """The latent's layout was guessed from argument names: no layout is registered for the
    model's class (``pc_compile.capture.register_layout``)."""


class OffloadWarning(UserWarning):
    """The model is compiled in a way that accelerate's offload hooks undo after the first
    generation (``torch.compile(module)`` assigned after ``pipe.enable_model_cpu_offload()``)."""
