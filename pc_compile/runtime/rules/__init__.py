"""Caching rules behind typed protocols, registered by name.

Step rules decide whether a whole step reuses the cache (``lfcache``, ``sencache``); block
rules decide which blocks of a computed step run (``blockcache``, ``bwcache``). Each lives in
its own file with its options dataclass and its state, and registers itself on import; a rule
from outside the package registers the same way (``register_step_rule``). The interfaces are
in ``base.py``, the engine that calls them in ``runtime/engine.py``.
"""

from __future__ import annotations

from pc_compile.runtime.rules import (  # noqa: F401
    blockcache,
    bwcache,
    lfcache,
    sencache,
    trajectory,
)
from pc_compile.runtime.rules.base import (
    BlockPlan,
    BlockRule,
    RuleSetup,
    RuleUnsupported,
    StepContext,
    StepRule,
    Verdict,
)
from pc_compile.runtime.rules.registry import (
    lookup,
    register_block_rule,
    register_step_rule,
    rule_names,
)

__all__ = [
    "BlockPlan", "BlockRule", "RuleSetup", "RuleUnsupported", "StepContext", "StepRule",
    "Verdict", "lookup", "register_block_rule", "register_step_rule", "rule_names",
]
