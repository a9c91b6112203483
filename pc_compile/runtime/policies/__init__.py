"""Caching policies: decision rules over tensors, one per file; ``make_policy`` picks one."""

from __future__ import annotations

from pc_compile.runtime.policies.base import Policy


def make_policy(config, spec) -> Policy:
    if not config.caches:
        return Policy()
    raise ValueError(f"no policy for step_rule={config.step_rule!r}, block_rule={config.block_rule!r}")
