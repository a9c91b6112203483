"""Caching policies: decision rules over tensors, one per file; ``make_policy`` picks one.

``PolicyUnsupported`` (from ``pc_compile.errors``) says why a policy cannot work on a model.
"""

from __future__ import annotations

from pc_compile.errors import OptionUnsupported, PolicyUnsupported
from pc_compile.runtime.policies.base import Policy
from pc_compile.runtime.policies.blockcache import BlockCache
from pc_compile.runtime.policies.bwcache import BWCache
from pc_compile.runtime.policies.lfcache import LFCache
from pc_compile.runtime.policies.precisecache import PreciseCachePolicy
from pc_compile.runtime.policies.sencache import SenCache


def make_policy(config, spec, chain_pairs, roles=None) -> Policy:
    """The policy ``config`` asks for, or ``PolicyUnsupported`` saying why it cannot work on the
    partitioned model ``spec`` (``roles``: which inputs are the latent and the timestep)."""
    if not config.caches:
        return Policy()
    step_rule = block_rule = None
    extrapolates = config.step_reuse in ("extrapolate", "residual")
    if config.step_rule == "lfcache":
        step_rule = LFCache(config.alpha, config.warmup_steps, config.lowpass_radius,
                            extrapolate=extrapolates, max_reuse=config.max_reuse,
                            reference=config.lfd_reference, end_span=config.end_span)
    elif config.step_rule == "sencache":
        if roles is not None and roles.hidden is None:
            raise PolicyUnsupported(
                "step_rule='sencache' measures how far the latent moved since the last "
                "computed step, but no input of this graph was recognised as the latent "
                "(hidden_states, x, latents, latent, sample, img)"
            )
        step_rule = SenCache(config.sen_epsilon, config.warmup_steps, config.max_reuse,
                             extrapolate=extrapolates, end_span=config.end_span)
    if step_rule is not None and config.step_reuse == "residual" and chain_pairs is None:
        raise OptionUnsupported(
            "step_reuse='residual' needs one list of identical blocks whose last block "
            "feeds the epilogue; this model's blocks do not form such a chain "
            "(use step_reuse='output')"
        )
    if config.block_rule != "none":
        bypassable = [bool(spec.pieces[i].state_slots) for i in spec.blocks]
        if not any(bypassable):
            raise PolicyUnsupported(
                f"block_rule={config.block_rule!r} cannot work on this model: no block's "
                "outputs can be paired with its inputs, so no block can be bypassed"
            )
        if config.block_rule == "blockcache":
            block_rule = BlockCache(config.pivotal_fraction, config.pivotal_steps, bypassable)
        else:
            block_rule = BWCache(config.bw_threshold, config.bw_reuse_steps, config.bw_scope,
                                 bypassable, config.warmup_steps, config.end_span)
    return PreciseCachePolicy(step_rule, block_rule, config.step_reuse, probe_cost=0.0)
