"""precisecache: a torch.compile backend that skips the redundant work of diffusion transformers.

    compiled = torch.compile(transformer, backend="precisecache", options={"preset": "turbo"})
    ... run the pipeline ...
    pc_compile.stats(compiled)   # what was computed and what was reused
    pc_compile.reset(compiled)   # start a new generation by hand
"""

from pc_compile.backend import backend
from pc_compile.capture import register_layout
from pc_compile.config import PRESETS, PreciseCacheConfig
from pc_compile.errors import PreciseCacheUnsupported
from pc_compile.stats import reset, stats

__all__ = ["backend", "PreciseCacheConfig", "PRESETS", "stats", "reset", "register_layout",
           "PreciseCacheUnsupported"]
