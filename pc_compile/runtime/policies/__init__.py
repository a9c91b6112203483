"""Caching policies: decision rules over tensors, one per file; ``make_policy`` picks one."""

from __future__ import annotations

from pc_compile.runtime.policies.base import Policy
from pc_compile.runtime.policies.blockcache import BlockCache
from pc_compile.runtime.policies.lfcache import LFCache
from pc_compile.runtime.policies.precisecache import PreciseCachePolicy


class PolicyUnsupported(ValueError):
    """The configured policy cannot work on this model; the message says why."""


def make_policy(config, spec, chain_pairs) -> Policy:
    if not config.caches:
        return Policy()
    step_rule = block_rule = None
    if config.step_rule == "lfcache":
        step_rule = LFCache(config.alpha, config.warmup_steps, config.lowpass_radius,
                            extrapolate=config.step_reuse in ("extrapolate", "residual"))
        if config.step_reuse == "residual" and chain_pairs is None:
            raise PolicyUnsupported(
                "step_reuse='residual' needs one list of identical blocks whose last block "
                "feeds the epilogue; this model's blocks do not form such a chain "
                "(use step_reuse='output')"
            )
    if config.block_rule == "blockcache":
        bypassable = [bool(spec.pieces[i].state_slots) for i in spec.blocks]
        if not any(bypassable):
            raise PolicyUnsupported(
                "block_rule='blockcache' cannot work on this model: no block's outputs can be "
                "paired with its inputs, so no block can be bypassed"
            )
        block_rule = BlockCache(config.pivotal_fraction, config.pivotal_steps, bypassable)
    return PreciseCachePolicy(step_rule, block_rule, config.step_reuse, probe_cost=0.0)
